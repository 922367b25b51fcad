"""A warm, pre-imported process that jobs are handed to, so that a job does not spend two
seconds importing torch before a second of work.

Every rule runs `python -S -m diffroar.client SCRIPT SHA256 THREADS GPUS LOG <<< JOB`
(rules/common.smk): its rule script (workflow/scripts/*.py) with the job's JSON. A rule script
imports only this module and calls `call(snakemake, "diffroar.<stage>:<function>", *args,
**kwargs)` with JSON-able arguments; `call` runs `runtime.setup_job(log, threads)` and the
function in the process the script runs in, which diffroar.client chose:

- the worker: the client connects to a server on a Linux abstract Unix socket, sends the request
  (the job, its working directory, environment, argv and its own start time) with its stdin,
  stdout and stderr (SCM_RIGHTS), and the server forks a child that has torch, Captum, zarr,
  pandas and matplotlib imported already. The child takes the client's descriptors, directory
  and environment, runs the rule script with its `snakemake` object (run_script) and exits; its
  exit status becomes the client's. A client that finds no server starts one (`python -m
  diffroar.worker serve <key>`, detached, its log in <tempdir>/diffroar-worker-<uid>/<key>.log)
  and waits for it a few seconds; or
- the job's own process (`python -m diffroar.worker job FD`, exec'd by the client), as before
  the worker existed: with `DIFFROAR_WORKER=0`, under Slurm (`SLURM_JOB_ID` set: every cluster
  job is its own allocation, and a server left behind would hold the node), for jobs that ask
  for a GPU (`resources.<rule>.gpu`: their work dwarfs the start-up), off Linux, and whenever no
  server can be reached (the pipeline never depends on the worker).

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
- The rule script that runs is the one Snakemake planned the job with (its sha256 is in the
  command, so editing a script reruns its jobs; run_script refuses a script changed since).
- Same results: the job and the arguments go through JSON in both paths; the child caps torch
  at the job's threads (setup_job) and BLAS at the thread count its environment asks for, as a
  fresh process would; jobs seed themselves.
- A job dies with its client: when the client's socket closes (kill -9, Snakemake cancelling),
  the server SIGKILLs the child's process group; the child dies with the server too. Atomic outputs
  (runtime.atomic_output) then never appear, as for a killed process.
- The server starts no thread pool (no OpenMP, no BLAS threads: only pyarrow's jemalloc keeps
  its fork-safe background thread), so forking it is safe; it exits after
  `DIFFROAR_WORKER_IDLE` seconds (default 30) without a connection or a running child, and on
  SIGTERM after killing its children.
- A niced run stays niced: the server runs in a session of its own, which Linux's autogroup
  scheduling would put in a new group at the default priority whatever the niceness of the job
  that started it (so `nice snakemake` would not lower the priority of its jobs' work); the server
  gives its group the niceness it inherited (keep_niceness).

Caveat: Snakemake's `benchmark:` files measure the client's process tree, so through the worker
they record the client's small CPU and memory, not the job's (set DIFFROAR_WORKER=0 to benchmark).
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
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from diffroar.client import (
    FINISHED,
    HEADER,
    STARTED,
    code_key,
    process_start_time,
    receive,
    socket_name,
)

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
IDLE = "DIFFROAR_WORKER_IDLE"
DEFAULT_IDLE = 30.0


# --- the job: a rule script with its `snakemake` object ---------------------------------------


SCRIPTS_DIR = PACKAGE_DIR.parent / "scripts"
_started: float | None = None  # when the running job's client process started (run_script)


class Named(list):
    """What a Snakemake script sees as snakemake.input, .output, .log, .params, .wildcards and
    .resources: a list whose named entries are also attributes and keys (a name of several
    items gives their list)."""

    def __init__(self, encoded: dict[str, Any] | None = None):
        encoded = encoded or {}
        super().__init__(encoded.get("items", []))
        self._names = dict(encoded.get("names", {}))

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._names[key]
        return super().__getitem__(key)

    def get(self, name: str, default: Any = None) -> Any:
        return self._names.get(name, default)

    def keys(self):
        return self._names.keys()

    def items(self):
        return self._names.items()


class Job:
    """The `snakemake` object of a rule script, from the job's JSON (rules/common.smk)."""

    def __init__(self, job: dict[str, Any]):
        for name in ("input", "output", "log", "params", "wildcards", "resources"):
            setattr(self, name, Named(job.get(name)))
        self.threads = int(job["threads"])
        self.runtime_settings = dict(job.get("runtime_settings", {}))


def script_path(job: dict[str, Any]) -> Path:
    """The rule script a job names (a file of workflow/scripts); ValueError for anything else."""
    name = job.get("script") if isinstance(job, dict) else None
    path = SCRIPTS_DIR / str(name)
    if not isinstance(name, str) or Path(name).name != name or not path.is_file():
        raise ValueError(f"job request: script {name!r}: must be a file of {SCRIPTS_DIR}")
    return path


def run_script(job: dict[str, Any], started: float | None = None) -> None:
    """Run the job's rule script in this process with its `snakemake` object; `started` is when
    the job's client process started (None: this process's creation). RuntimeError when the
    script is not the one Snakemake planned the job with (its sha256 in the job)."""
    global _started
    path = script_path(job)
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    if digest != job.get("sha256"):
        raise RuntimeError(
            f"{path} changed after Snakemake planned this job (sha256 {digest}, planned "
            f"{job.get('sha256')}): run snakemake again"
        )
    _started = process_start_time() if started is None else started
    snakemake = Job(job)
    namespace = {"__name__": "__main__", "__file__": str(path), "snakemake": snakemake}
    exec(compile(source, str(path), "exec"), namespace)


def call(snakemake: Any, function: str, *args: Any, **kwargs: Any) -> None:
    """Run `function` ("module:name", a diffroar stage) with `args` and `kwargs` (JSON-able: paths,
    numbers, config dicts) as the job of `snakemake` (its log[0] and threads) in this process:
    the worker's child or the job's own process (diffroar.client chose). Raises as the function
    does (setup_job's excepthook logs it)."""
    # the same JSON round trip wherever the job runs: it sees the same arguments either way
    args, kwargs = json.loads(json.dumps([list(args), kwargs]))
    run_in_process(
        function, args, kwargs, str(snakemake.log[0]), int(snakemake.threads), started=_started
    )


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


def drop_import_exit_hooks() -> int:
    """Set aside the exit work the server's imports registered, which each job's child would
    otherwise repeat at its exit for a process that is ending anyway: torch's operator-library
    finalizers (187 of them, deregistering operators: 30-60 ms of every job's exit on the 2-core
    machine) and torch._dynamo's compile-time report (no job compiles). What a job registers
    itself (its job-times line, a temporary directory's cleanup) still runs at its exit. The
    number of finalizers set aside."""
    import atexit
    import gc
    import weakref

    count = 0
    for candidate in gc.get_objects():
        # type(), not isinstance(): no lazy module object is asked for its __class__
        if type(candidate) is weakref.finalize and candidate.alive and candidate.atexit:
            # out of the registry, which every exit scans (2-7 ms in a job's child): the objects
            # they watch live as long as the process
            candidate.detach()
            count += 1
    dynamo_utils = sys.modules.get("torch._dynamo.utils")
    if dynamo_utils is not None and hasattr(dynamo_utils, "dump_compile_times"):
        atexit.unregister(dynamo_utils.dump_compile_times)
    return count


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
        self.children: dict[int, socket.socket] = {}  # child pid -> its client's connection
        self.abandoned: set[int] = set()  # children killed because their client went away
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
                if connection in readable and pid not in self.abandoned:  # the client is gone
                    say(f"the client of child {pid} went away: killing its process group")
                    _kill_group(pid)
                    self.abandoned.add(pid)
            if self.listener in readable:
                self.accept()
            if self.children:
                self.last_active = time.monotonic()
            elif time.monotonic() - self.last_active > self.idle:
                say(f"idle for {self.idle:g} s: exiting")
                break
        self.listener.close()  # no more connections; clients queued now start a new server
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
            if _closed(connection):  # the client gave up waiting: run nothing
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
            say(f"child {pid}: {request['job']['script']} in {request['cwd']}")
            try:
                connection.sendall(STARTED.pack(pid))
            except OSError:
                _kill_group(pid)
        finally:
            for fd in fds:
                os.close(fd)

    def read_request(self, connection: socket.socket) -> tuple[dict, list[int]]:
        """The request and the client's stdin, stdout and stderr; ValueError for a stranger or
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
            script_path(request["job"])  # a rule script of this package, nothing else
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        connection.settimeout(None)
        return request, fds

    def child(self, connection: socket.socket, request: dict, fds: list[int]) -> None:
        """In the forked child: become the job (the client's descriptors, directory, environment
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
    """The job, as `run_script` runs it in-process; exit hooks run (setup_job reports the job
    times there); its exit code."""
    import atexit

    code = 0
    try:
        run_script(request["job"], started=request["started"])
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
    """Whether the client closed its end (readable with nothing to read)."""
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


AUTOGROUP = "/proc/self/autogroup"


def keep_niceness(autogroup: str = AUTOGROUP) -> int | None:
    """Give this process's autogroup (a new session starts one) the niceness the process has, when
    that is above 0; the niceness set, or None (not niced, or no autogroup scheduling here).
    Without it a niced job's server would compete with every other session at the default
    priority: autogroup scheduling shares the CPU between sessions first and applies a process's
    niceness only within its session. The file is read back ("/autogroup-N nice V" from the
    kernel): a sandbox's /proc may take the write and show nothing, which sets nothing."""
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness <= 0:
        return None
    try:
        with open(autogroup, "w") as group:
            group.write(str(niceness))
        with open(autogroup) as group:
            shown = group.read().split()
    except OSError:  # a kernel without CONFIG_SCHED_AUTOGROUP, or the file refused
        return None
    return niceness if shown[-1:] == [str(niceness)] else None


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
    niceness = keep_niceness()
    if niceness is not None:
        say(f"niced: the server's autogroup runs at niceness {niceness}")
    idle = idle_seconds(os.environ)
    begun = time.perf_counter()
    seconds = preimport()
    say(
        f"imported in {time.perf_counter() - begun:.1f} s ("
        + ", ".join(f"{name} {value:.1f}" for name, value in seconds.items())
        + ")"
    )
    say(f"set aside {drop_import_exit_hooks()} exit finalizers of the imports")
    if code_key() != key:
        say("the package changed while the server started: exiting")
        return 0
    Server(key, listener, idle).serve()
    return 0


def main(argv: list[str]) -> int:
    """`serve KEY`: the server; `job FD`: in this process, the job whose JSON descriptor FD
    holds (diffroar.client, replaced by this process)."""
    if len(argv) == 2 and argv[0] == "serve":
        return serve(argv[1])
    if len(argv) == 2 and argv[0] == "job" and argv[1].isdigit():
        with os.fdopen(int(argv[1]), "rb") as encoded:
            job = json.loads(encoded.read())
        run_script(job)  # an exception reaches setup_job's excepthook: exit 1
        return 0
    print("usage: python -m diffroar.worker serve KEY | job FD", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # run as diffroar.worker, the module rule scripts import (`call` reads the job's start
    # from it), not as a second copy of it named __main__
    from diffroar import worker

    sys.exit(worker.main(sys.argv[1:]))
