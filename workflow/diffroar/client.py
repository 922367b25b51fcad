"""The command every rule runs: `python -S -m diffroar.client SCRIPT SHA256 THREADS GPUS LOG <<<
JOB`: the rule's script (a file of workflow/scripts), its sha256 when Snakemake planned the job
(16 hex digits), the job's threads, GPUs and log, and on stdin the job's JSON (rules/common.smk
`JobRequest`: input, output, params, wildcards and the settings that change no result; on stdin
because a job of many inputs exceeds the 128 KiB of one command-line argument).

A rule used to be a Snakemake `script:`, whose preamble imports Snakemake (about 60 ms) in a
Python with its site-packages (about 25 ms) before the script could hand the job to the warm
worker: 0.11 s of start-up in every job, as much as a retrain job's work. This module is that
hand-over with nothing else: the standard library only, no site-packages (`-S`), imports kept to
what the hand-over needs (about 15 ms in all). The rule script itself
(workflow/scripts/<rule>.py, unchanged) runs in the worker's forked child, or in-process, with a
`snakemake` object that has the attributes a Snakemake script sees (diffroar.worker.run_script).

The job runs in its own process (`python -m diffroar.worker job FD`, this process replaced by
exec, so Snakemake still waits on the same pid; the JSON in an unnamed file, descriptor FD)
with DIFFROAR_WORKER=0, under Slurm, for jobs that ask for a GPU, off Linux and whenever no
worker can be reached: see diffroar.worker.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
SWITCH = "DIFFROAR_WORKER"
CONNECT_WAIT = 10.0  # seconds a client waits for a server it started to listen
ACCEPT_WAIT = 300.0  # seconds a client waits in the queue (the server may still be importing)
HEADER = struct.Struct("!I")  # length of the JSON request that follows
STARTED = struct.Struct("!i")  # the child's pid, sent when the job starts
FINISHED = struct.Struct("!i")  # its exit code (negative: killed by that signal)


def code_key(package_dir: str | os.PathLike = PACKAGE_DIR) -> str:
    """16 hex digits naming the server for this package copy, interpreter and user: sha256 over
    the package directory's absolute path, sys.executable, the uid and (name, size, mtime_ns) of
    every .py file of the package."""
    package_dir = os.fspath(package_dir)
    digest = _sha256()
    digest.update(f"{package_dir}\0{sys.executable}\0{os.getuid()}\0".encode())
    for entry in sorted(os.scandir(package_dir), key=lambda entry: entry.name):
        if entry.name.endswith(".py"):
            status = entry.stat()
            digest.update(f"{entry.name}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _sha256():
    """A sha256 hash object from CPython's own C module where there is one: hashlib would import
    OpenSSL's bindings first (3 ms of every job's start)."""
    try:
        from _sha2 import sha256  # Python 3.12 and later
    except ImportError:
        try:
            from _sha256 import sha256
        except ImportError:
            from hashlib import sha256
    return sha256()


def socket_name(key: str) -> bytes:
    """The abstract socket address (a leading NUL: no file, gone with the server)."""
    return f"\0diffroar-worker-{key}".encode()


def server_log(key: str) -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"diffroar-worker-{os.getuid()}", f"{key}.log")


def process_start_time() -> float:
    """When this process was created (seconds since the epoch): now less the process's age, the
    seconds since boot (/proc/uptime) less its start in clock ticks since boot (/proc/self/stat).
    Not btime + start as psutil computes it: /proc/stat's btime is whole seconds and drifts
    from the wall clock, which made a process look up to a second older (0.8 s measured here);
    now if /proc cannot tell."""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as uptime:
            seconds = float(uptime.read().split()[0])
        return time.time() - max(0.0, seconds - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


def in_process_reason(environ, gpus=0) -> str | None:
    """Why a job runs in its own process (None: hand it to the worker). ValueError naming the
    value when DIFFROAR_WORKER is neither 0 nor 1."""
    switch = environ.get(SWITCH, "1")
    if switch not in ("0", "1", ""):
        raise ValueError(
            f"environment error: {SWITCH} = {switch!r}: must be 1 (default: hand jobs to a "
            "warm pre-imported worker) or 0 (run every job in its own process)"
        )
    if switch == "0":
        return f"{SWITCH}=0"
    if environ.get("SLURM_JOB_ID"):
        return "a Slurm job"
    if gpus:
        return "a GPU job"
    if not sys.platform.startswith("linux"):
        return "not Linux (no abstract sockets)"
    return None


def through_worker(request: dict) -> int | None:
    """Hand `request` (the job's JSON plus this process's directory, environment, argv and
    start) with this process's stdin, stdout and stderr to the server, starting one if none
    listens: the job's exit code, or None when no server took the job (the caller then runs it
    in-process)."""
    key = code_key()
    payload = json.dumps(request).encode()
    for _attempt in range(2):  # a server that exits idle as we connect: start another once
        connection = connect(key)
        if connection is None:
            return None
        try:
            connection.settimeout(ACCEPT_WAIT)
            socket.send_fds(connection, [HEADER.pack(len(payload))], [0, 1, 2])
            connection.sendall(payload)
            started = receive(connection, STARTED.size)
            if started is None:
                continue  # closed before it took the job: nothing ran
            connection.settimeout(None)  # the job runs as long as it runs
            finished = receive(connection, FINISHED.size)
        except OSError as error:
            note(f"the worker did not take the job ({error})")
            return None
        finally:
            connection.close()
        if finished is None:
            print(
                f"diffroar.worker: the worker ended while it ran the job (see {server_log(key)})",
                file=sys.stderr,
            )
            return 1
        return FINISHED.unpack(finished)[0]
    return None


def connect(key: str) -> socket.socket | None:
    """A connection to the server of `key`, starting the server when none listens; None when
    none listens after CONNECT_WAIT seconds."""
    connection = try_connect(key)
    if connection is not None:
        return connection
    try:
        start_server(key)
    except OSError as error:
        note(f"cannot start the worker ({error})")
        return None
    deadline = time.monotonic() + CONNECT_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.02)
        connection = try_connect(key)
        if connection is not None:
            return connection
    note(f"no worker listens after {CONNECT_WAIT:.0f} s (see {server_log(key)})")
    return None


def try_connect(key: str) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_name(key))
    except OSError:
        connection.close()
        return None
    return connection


def start_server(key: str) -> None:
    """Start `python -m diffroar.worker serve key` detached: its own session (Snakemake's signals
    to the job's group miss it), no stdin, output to its log, the package first on its path."""
    import subprocess

    log_path = server_log(key)
    os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(PACKAGE_DIR), *filter(None, [environ.get("PYTHONPATH")])]
    )
    environ["OPENBLAS_NUM_THREADS"] = "1"  # no BLAS thread pool in the server; children set theirs
    with open(log_path, "ab") as output:
        subprocess.Popen(
            [sys.executable, "-m", "diffroar.worker", "serve", key],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            cwd="/",
            env=environ,
            start_new_session=True,
            close_fds=True,
        )


def receive(connection: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None at end of stream before them."""
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def note(message: str) -> None:
    print(f"diffroar.worker: {message}; running the job in its own process", file=sys.stderr)


def exit_status(code: int) -> int:
    """A process exit status for the job's exit code (negative: killed by that signal)."""
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    if len(argv) != 5 or not argv[2].isdigit() or not argv[3].isdigit():
        print(
            "usage: python -S -m diffroar.client SCRIPT SHA256 THREADS GPUS LOG < JOB_JSON",
            file=sys.stderr,
        )
        return 2
    started = process_start_time()
    script, digest, threads, gpus, log = argv
    job = json.loads(sys.stdin.read())
    job.update(
        script=script,
        sha256=digest,
        threads=int(threads),
        resources={"items": [], "names": {"gpu": int(gpus)} if int(gpus) else {}},
        log={"items": [log], "names": {}},
    )
    try:
        reason = in_process_reason(os.environ, int(gpus))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    if reason is None:
        request = {
            "job": job,
            "cwd": os.getcwd(),
            "environ": dict(os.environ),
            "argv": sys.argv,
            "started": started,
        }
        code = through_worker(request)
        if code is not None:
            return exit_status(code)
    # in this process, replaced by a Python with its site-packages (same pid, same start); the
    # job's JSON in a file without a name (a job of many inputs exceeds an argument's 128 KiB)
    import tempfile

    with tempfile.TemporaryFile() as encoded:
        encoded.write(json.dumps(job).encode())
        encoded.seek(0)
        os.set_inheritable(encoded.fileno(), True)
        sys.stdout.flush()
        sys.stderr.flush()
        command = [sys.executable, "-m", "diffroar.worker", "job", str(encoded.fileno())]
        os.execv(sys.executable, command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
