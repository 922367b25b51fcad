"""A warm, pre-imported process that rule scripts hand their job to, so that a job does not
spend two seconds importing torch before a second of work.

Every rule script (workflow/scripts/*.py) imports only this module (the standard library, nothing
else) and calls `call(snakemake, "diffroar.<stage>:<function>", *args, **kwargs)` with JSON-able
arguments. `call` runs `runtime.setup_job(log, threads)` and the function, either

- through the worker: the script connects to a server on a Linux abstract Unix socket, sends the
  request (function, arguments, working directory, environment, log, threads, its own start time)
  with its stdin, stdout and stderr (SCM_RIGHTS), and the server forks a child that has torch,
  Captum, zarr, pandas and matplotlib imported already. The child takes the script's descriptors,
  directory and environment, runs the job and exits; its exit status becomes the script's. The
  script that finds no server starts one (`python -m diffroar.worker serve <key>`, detached, its
  log in <tempdir>/diffroar-worker-<uid>/<key>.log) and waits for it a few seconds; or
- in the script's own process, as before the worker existed: with `DIFFROAR_WORKER=0`, under
  Slurm (`SLURM_JOB_ID` set: every cluster job is its own allocation, and a server left behind
  would hold the node), for jobs that ask for a GPU (`resources.<rule>.gpu`: their work dwarfs
  the start-up), off Linux, and whenever no server can be reached (the pipeline never depends on
  the worker).

Promises kept:
- The code that runs is the code that was fingerprinted: the server's socket is named from a key
  over the package directory, the interpreter, the user, and (name, size, mtime_ns) of every .py
  file of the package; editing the code or running another copy of the workflow gives another
  server. The server checks, after its imports, that the files still give its key.
- User code (the modules of user methods and architectures) is imported only in a job's child
  (diffroar.plugins.load_callable), never in the server: an edited module is what the next job
  runs.
- Nothing initialises CUDA before the fork: the server imports torch without touching the device,
  so a child still picks CUDA when there is a GPU (runtime.device).
- Same results: the arguments go through JSON in both paths; the child caps torch at the job's
  threads (setup_job) and BLAS at the thread count its environment asks for, as a fresh process
  would; jobs seed themselves.
- A job dies with its script: when the script's socket closes (kill -9, Snakemake cancelling), the
  server SIGKILLs the child's process group; the child dies with the server too. Atomic outputs
  (runtime.atomic_output) then never appear, as for a killed process.
- The server starts no thread pool (no OpenMP, no BLAS threads: only pyarrow's jemalloc keeps
  its fork-safe background thread), so forking it is safe; it exits after
  `DIFFROAR_WORKER_IDLE` seconds (default 30) without a connection or a running child, and on
  SIGTERM after killing its children.

Caveat: Snakemake's `benchmark:` files measure the script's process tree, so through the worker
they record the script's small CPU and memory, not the job's (set DIFFROAR_WORKER=0 to benchmark).
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from diffroar.runtime import process_start_time

PACKAGE_DIR = Path(__file__).resolve().parent
# what the server imports before serving; every stage a rule script calls
STAGES = (
    "diffroar.data",
    "diffroar.train",
    "diffroar.import_checkpoint",
    "diffroar.retrain",
    "diffroar.saliency",
    "diffroar.mask",
    "diffroar.noretrain",
    "diffroar.metrics",
    "diffroar.compare",
    "diffroar.robust",
    "diffroar.localization",
    "diffroar.sanity",
    "diffroar.figures",
    "diffroar.verify",
)
SWITCH = "DIFFROAR_WORKER"
IDLE = "DIFFROAR_WORKER_IDLE"
DEFAULT_IDLE = 30.0
CONNECT_WAIT = 10.0  # seconds a script waits for a server it started to listen
ACCEPT_WAIT = 300.0  # seconds a script waits in the queue (the server may still be importing)
HEADER = struct.Struct("!I")  # length of the JSON request that follows
STARTED = struct.Struct("!i")  # the child's pid, sent when the job starts
FINISHED = struct.Struct("!i")  # its exit code (negative: killed by that signal)


# --- the key: which code the server runs --------------------------------------------------------


def code_key(package_dir: Path = PACKAGE_DIR) -> str:
    """16 hex digits naming the server for this package copy, interpreter and user: sha256 over
    the package directory's absolute path, sys.executable, the uid and (name, size, mtime_ns) of
    every .py file of the package."""
    digest = hashlib.sha256()
    digest.update(f"{package_dir}\0{sys.executable}\0{os.getuid()}\0".encode())
    for path in sorted(package_dir.glob("*.py")):
        status = path.stat()
        digest.update(f"{path.name}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def socket_name(key: str) -> bytes:
    """The abstract socket address (a leading NUL: no file, gone with the server)."""
    return f"\0diffroar-worker-{key}".encode()


def server_log(key: str) -> Path:
    return Path(tempfile.gettempdir()) / f"diffroar-worker-{os.getuid()}" / f"{key}.log"


# --- the client: what a rule script calls --------------------------------------------------------


def call(snakemake: Any, function: str, *args: Any, **kwargs: Any) -> None:
    """Run `function` ("module:name", a diffroar stage) with `args` and `kwargs` (JSON-able: paths,
    numbers, config dicts) as the job of `snakemake` (its log[0] and threads), through the worker
    or in this process (module docstring). Returns when the job succeeded; exits the script with
    the job's exit status when it failed in the worker; raises as the function does in-process."""
    log_path = str(snakemake.log[0])
    threads = int(snakemake.threads)
    # the same JSON round trip on both paths: a job sees the same arguments either way
    args, kwargs = json.loads(json.dumps([list(args), kwargs]))
    reason = in_process_reason(os.environ, getattr(snakemake.resources, "gpu", 0))
    if reason is None:
        status = through_worker(function, args, kwargs, log_path, threads)
        if status is not None:
            if status != 0:
                sys.exit(status if status > 0 else 128 - status)
            return
    run_in_process(function, args, kwargs, log_path, threads)


def in_process_reason(environ: dict[str, str] | Any, gpus: Any = 0) -> str | None:
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


def run_in_process(
    function: str, args: list, kwargs: dict, log_path: str, threads: int, started=None
) -> None:
    """Import the stage, set up the job's log and threads, run the function (as the scripts did
    before the worker: an exception reaches the excepthook that setup_job installed)."""
    target = resolve(function)
    from diffroar.runtime import setup_job

    setup_job(log_path, threads, started=started)
    target(*args, **kwargs)


def resolve(function: str):
    """The function named "diffroar.<module>:<name>"; ValueError for anything else."""
    module, _, name = function.partition(":")
    if not (module == "diffroar" or module.startswith("diffroar.")) or not name:
        raise ValueError(
            f"worker request: function {function!r}: must be 'diffroar.<module>:<name>'"
        )
    return getattr(importlib.import_module(module), name)


def through_worker(
    function: str, args: list, kwargs: dict, log_path: str, threads: int
) -> int | None:
    """Hand the job to the server (starting one if none listens): the job's exit code, or None
    when no server took the job (the caller then runs it in-process)."""
    key = code_key()
    request = {
        "function": function,
        "args": args,
        "kwargs": kwargs,
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "argv": sys.argv,
        "log": log_path,
        "threads": threads,
        "started": process_start_time(),  # diffroar.runtime: standard library only
    }
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
    log_path = server_log(key)
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_DIR.parent), *filter(None, [environ.get("PYTHONPATH")])]
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


# --- the server ----------------------------------------------------------------------------------


def preimport() -> dict[str, float]:
    """Import every stage (torch, Captum, zarr, pandas, matplotlib with Agg) without initialising
    CUDA or starting a thread; seconds each took."""
    import matplotlib

    matplotlib.use("Agg")
    seconds = {}
    for module in STAGES:
        begun = time.perf_counter()
        importlib.import_module(module)
        seconds[module] = time.perf_counter() - begun
    import matplotlib.pyplot  # noqa: F401  (figures imports it; here for clarity)

    # torch.optim imports torch._dynamo at the first optimizer a process builds: about 1 s that
    # every training and retraining job paid in its first epoch (1.0 s of 1.2 s work for a retrain
    # job of the default experiment). It starts no thread and leaves CUDA alone.
    begun = time.perf_counter()
    importlib.import_module("torch._dynamo")
    seconds["torch._dynamo"] = time.perf_counter() - begun
    return seconds


def idle_seconds(environ) -> float:
    text = environ.get(IDLE, "")
    if text == "":
        return DEFAULT_IDLE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"environment error: {IDLE} = {text!r}: must be a number of seconds > 0")
    return value


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {message}", flush=True)


class Server:
    """One listener, one connection per job, one forked child per connection; single-threaded."""

    def __init__(self, key: str, listener: socket.socket, idle: float):
        self.key = key
        self.listener = listener
        self.idle = idle
        self.children: dict[int, socket.socket] = {}  # child pid -> its script's connection
        self.abandoned: set[int] = set()  # children killed because their script went away
        self.last_active = time.monotonic()
        self.stopping = False
        self.wakeup_read, self.wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_read, False)
        os.set_blocking(self.wakeup_write, False)
        signal.set_wakeup_fd(self.wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.blas = _blas_controller()

    def _stop(self, *_):
        self.stopping = True

    def serve(self) -> None:
        while not self.stopping:
            waiting = [self.listener, self.wakeup_read]
            waiting += [c for pid, c in self.children.items() if pid not in self.abandoned]
            readable, _, _ = select.select(waiting, [], [], 1.0)
            if self.wakeup_read in readable:
                _drain(self.wakeup_read)
            self.reap()
            for pid, connection in list(self.children.items()):
                if connection in readable and pid not in self.abandoned:  # the script is gone
                    say(f"the script of child {pid} went away: killing its process group")
                    _kill_group(pid)
                    self.abandoned.add(pid)
            if self.listener in readable:
                self.accept()
            if self.children:
                self.last_active = time.monotonic()
            elif time.monotonic() - self.last_active > self.idle:
                say(f"idle for {self.idle:g} s: exiting")
                break
        self.listener.close()  # no more connections; scripts queued now start a new server
        for pid in self.children:
            _kill_group(pid)
        while self.children:
            self.reap(block=True)

    def reap(self, block: bool = False) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            connection = self.children.pop(pid, None)
            self.abandoned.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            say(f"child {pid} exited with {code}")
            if connection is not None:
                try:
                    connection.sendall(FINISHED.pack(code))
                except OSError:
                    pass
                connection.close()
            if block:
                break

    def accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        self.last_active = time.monotonic()
        try:
            request, fds = self.read_request(connection)
        except (OSError, ValueError) as error:
            say(f"refused a request: {error}")
            connection.close()
            return
        try:
            if _closed(connection):  # the script gave up waiting: run nothing
                connection.close()
                return
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                self.child(connection, request, fds)  # never returns
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass  # the child did it already
            self.children[pid] = connection
            say(f"child {pid}: {request['function']} in {request['cwd']}")
            try:
                connection.sendall(STARTED.pack(pid))
            except OSError:
                _kill_group(pid)
        finally:
            for fd in fds:
                os.close(fd)

    def read_request(self, connection: socket.socket) -> tuple[dict, list[int]]:
        """The request and the script's stdin, stdout and stderr; ValueError for a stranger or
        a malformed request."""
        credentials = connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
        _, uid, _ = struct.unpack("3i", credentials)
        if uid != os.getuid():
            raise ValueError(f"a process of uid {uid} is not this server's user")
        connection.settimeout(10.0)
        header, fds, _, _ = socket.recv_fds(connection, HEADER.size, 3)
        try:
            if len(header) != HEADER.size or len(fds) != 3:
                raise ValueError(f"{len(header)} header bytes and {len(fds)} descriptors")
            body = receive(connection, HEADER.unpack(header)[0])
            if body is None:
                raise ValueError("the request ended early")
            request = json.loads(body)
            resolve(request["function"])  # imported already; refuses anything else
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        connection.settimeout(None)
        return request, fds

    def child(self, connection: socket.socket, request: dict, fds: list[int]) -> None:
        """In the forked child: become the job (the script's descriptors, directory, environment
        and signals), run it like `run_in_process` does, exit with its status."""
        code = 1
        try:
            os.setpgid(0, 0)
            _die_with_parent()
            signal.set_wakeup_fd(-1)
            for number in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(number, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.listener.close()
            connection.close()
            for other in self.children.values():
                other.close()
            os.close(self.wakeup_read)
            os.close(self.wakeup_write)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["environ"])
            sys.argv = list(request["argv"])
            _limit_blas(self.blas, request["environ"])
            code = _run_job(request)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)


def _run_job(request: dict) -> int:
    """The job, as `run_in_process` runs it; exit hooks run (setup_job reports the job times
    there); its exit code."""
    import atexit

    code = 0
    try:
        run_in_process(
            request["function"],
            request["args"],
            request["kwargs"],
            request["log"],
            request["threads"],
            started=request["started"],
        )
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if exit.code is not None and not isinstance(exit.code, int):
            print(exit.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())  # setup_job's: "job failed: ..." in the job's log
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _blas_controller():
    """threadpoolctl's view of the BLAS libraries numpy loaded (None without threadpoolctl)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _limit_blas(controller, environ: dict[str, str]) -> None:
    """Give BLAS the threads a fresh process of this environment would have started with."""
    if controller is None:
        return
    text = environ.get("OPENBLAS_NUM_THREADS") or environ.get("OMP_NUM_THREADS") or ""
    threads = int(text) if text.isdigit() and int(text) > 0 else len(os.sched_getaffinity(0))
    controller.limit(limits=threads, user_api="blas")


def _die_with_parent() -> None:
    """SIGKILL this process when the server dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the server died before prctl
        os._exit(1)


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _closed(connection: socket.socket) -> bool:
    """Whether the script closed its end (readable with nothing to read)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def serve(key: str) -> int:
    """The server of `key`: bind first (a second server loses the race and exits 0), import,
    check that the code still gives `key`, serve until idle; its exit code."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(socket_name(key))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return 0  # another server of this key listens
        raise
    listener.listen(128)
    say(f"listening as {key} for {PACKAGE_DIR}")
    idle = idle_seconds(os.environ)
    begun = time.perf_counter()
    seconds = preimport()
    say(
        f"imported in {time.perf_counter() - begun:.1f} s ("
        + ", ".join(f"{name} {value:.1f}" for name, value in seconds.items())
        + ")"
    )
    if code_key() != key:
        say("the package changed while the server started: exiting")
        return 0
    Server(key, listener, idle).serve()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "serve":
        print("usage: python -m diffroar.worker serve <key>", file=sys.stderr)
        return 2
    return serve(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
