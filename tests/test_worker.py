"""The warm worker (diffroar.worker) and the command every rule runs (diffroar.client): jobs
handed to a pre-imported server run as they would in their own process (arguments, directory,
environment, descriptors, log, exit status), die with their client, and give the same results;
the off switches run them in the client's process. A job is a rule script of workflow/scripts
with the `snakemake` object a Snakemake script would see.

The server tests run a private copy of the package with a probe module added: its own key, so its
own server, which the module fixture stops at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from diffroar import client, worker
from small_runs import (
    assert_same_checkpoints,
    clean_run,
    read_tables,
    run_tables,
    small_workflow,
    wait_for,
)
from workflow_helpers import REPO

PROBE = '''
"""Jobs for tests/test_worker.py."""
import json, os, subprocess, sys, time
from pathlib import Path

import torch

from .runtime import log

AUTOGROUP = os.path.exists("/proc/self/autogroup")


def report(path):
    log.info("probe running")
    print("probe says hello on stdout")
    print("probe says hello on stderr", file=sys.stderr)
    facts = {
        "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "cwd": os.getcwd(),
        "probe": os.environ.get("PROBE"), "torch_threads": torch.get_num_threads(),
        "cuda_initialised": torch.cuda.is_initialized(), "argv": sys.argv,
        "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        "autogroup": Path("/proc/self/autogroup").read_text() if AUTOGROUP else None,
    }
    Path(path).write_text(json.dumps(facts))


def fail(message):
    raise RuntimeError(message)


def leave(code):
    sys.exit(code)


def hang(path):
    grandchild = subprocess.Popen(["sleep", "600"])
    Path(path).write_text(json.dumps({"pid": os.getpid(), "ppid": os.getppid(),
                                      "grandchild": grandchild.pid}))
    time.sleep(600)
'''

# the rule script of the probe jobs: the function and arguments come as params
SCRIPT = """from diffroar.worker import call

call(snakemake, snakemake.params.function, *snakemake.params.args)
"""
SCRIPT_SHA = hashlib.sha256(SCRIPT.encode()).hexdigest()[:16]


def _job(function: str, args) -> str:
    """The JSON of a probe job, as rules/common.smk's JobRequest writes it."""
    params = {"function": function, "args": list(args)}
    return json.dumps(
        {
            "input": {"items": [], "names": {}},
            "output": {"items": [], "names": {}},
            "params": {"items": list(params.values()), "names": params},
            "wildcards": {"items": [], "names": {}},
            "runtime_settings": {},
        }
    )


def _command(cwd: Path, threads: int = 1) -> list[str]:
    """The rule's command (the job's JSON goes to its stdin): python -S -m diffroar.client SCRIPT
    SHA256 THREADS GPUS LOG."""
    return [
        "-m",
        "diffroar.client",
        "probe.py",
        SCRIPT_SHA,
        str(threads),
        "0",
        str(cwd / "job.log"),
    ]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A copy of the package with the probe module; the server it starts is stopped at the end."""
    root = tmp_path_factory.mktemp("worker")
    shutil.copytree(
        REPO / "workflow" / "diffroar",
        root / "diffroar",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (root / "diffroar" / "probe.py").write_text(PROBE)
    (root / "scripts").mkdir()
    (root / "scripts" / "probe.py").write_text(SCRIPT)
    yield root
    key = worker.code_key(root / "diffroar")
    log = Path(client.server_log(key))
    if log.exists():
        for line in log.read_text().splitlines():
            if f"listening as {key}" in line:
                pid = int(line.split("[", 1)[1].split("]", 1)[0])
                if _alive(pid):
                    os.kill(pid, signal.SIGTERM)


def _client(
    package: Path, cwd: Path, function: str, *args, threads: int = 1, niceness: int = 0, **environ
):
    """Start the client of `package` (as a rule does: no site-packages) on a probe job running
    `function`, at `niceness` above this process's; its Popen."""
    env = {**os.environ, "PYTHONPATH": str(package), "DIFFROAR_WORKER_IDLE": "60", **environ}
    process = subprocess.Popen(
        [sys.executable, "-S", *_command(cwd, threads)],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.nice(niceness)) if niceness else None,
    )
    process.stdin.write(_job(function, args))
    process.stdin.close()
    process.stdin = None  # written: communicate() has nothing more to send
    return process


def _run(
    package: Path, cwd: Path, function: str, *args, threads: int = 1, niceness: int = 0, **environ
):
    process = _client(package, cwd, function, *args, threads=threads, niceness=niceness, **environ)
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr, process.pid


# --- the switches ------------------------------------------------------------------------------


def test_jobs_go_to_the_worker_unless_switched_off_on_slurm_or_on_a_gpu():
    assert client.in_process_reason({}) is None
    assert client.in_process_reason({"DIFFROAR_WORKER": "1"}) is None
    assert client.in_process_reason({"DIFFROAR_WORKER": "0"}) == "DIFFROAR_WORKER=0"
    assert client.in_process_reason({"SLURM_JOB_ID": "123"}) == "a Slurm job"
    assert client.in_process_reason({}, gpus=1) == "a GPU job"


def test_a_bad_switch_value_names_it_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"DIFFROAR_WORKER = 'yes': must be 1 .* or 0"):
        client.in_process_reason({"DIFFROAR_WORKER": "yes"})
    with pytest.raises(ValueError, match=r"DIFFROAR_WORKER_IDLE = '-3': must be a number"):
        worker.idle_seconds({"DIFFROAR_WORKER_IDLE": "-3"})
    assert worker.idle_seconds({}) == worker.DEFAULT_IDLE
    assert worker.idle_seconds({"DIFFROAR_WORKER_IDLE": "2.5"}) == 2.5


def test_a_script_sees_named_lists_as_under_snakemake():
    job = worker.Job(
        {
            "input": {"items": ["d.zarr", "s1", "s2"], "names": {"dataset": "d.zarr",
                                                                "saliency": ["s1", "s2"]}},
            "output": {"items": ["out"], "names": {}},
            "log": {"items": ["job.log"], "names": {}},
            "params": {"items": [{"a": 1}], "names": {"settings": {"a": 1}}},
            "wildcards": {"items": ["0.1"], "names": {"k": "0.1"}},
            "threads": 3,
            "resources": {"items": [], "names": {"gpu": 1}},
            "runtime_settings": {"batch_size": 8},
            "script": "mask.py",
        }
    )  # fmt: skip
    assert job.input.dataset == job.input["dataset"] == job.input[0] == "d.zarr"
    assert job.input.saliency == ["s1", "s2"] and list(job.input) == ["d.zarr", "s1", "s2"]
    assert job.output[0] == "out" and job.log[0] == "job.log" and job.threads == 3
    assert job.params.settings == {"a": 1} and job.wildcards.k == "0.1"
    assert job.resources.gpu == 1 and getattr(job.resources, "mem_mb", 0) == 0
    assert job.runtime_settings == {"batch_size": 8}
    with pytest.raises(AttributeError, match="checkpoint"):
        _ = job.input.checkpoint


def test_a_job_runs_only_a_rule_script_and_only_the_one_snakemake_planned(tmp_path):
    job = json.loads(_job("diffroar.runtime:write_json", [str(tmp_path / "x.json"), {}]))
    for bad in ("../diffroar/worker.py", "no_such_rule.py", "/etc/passwd", None):
        with pytest.raises(ValueError, match="must be a file of .*scripts"):
            worker.run_script({**job, "script": bad})
    mask = REPO / "workflow" / "scripts" / "mask.py"
    planned = hashlib.sha256(mask.read_bytes()).hexdigest()[:16]
    with pytest.raises(RuntimeError, match="mask.py changed after Snakemake planned this job"):
        worker.run_script({**job, "script": "mask.py", "sha256": "0" * 16})
    assert planned != "0" * 16


def test_only_diffroar_functions_can_be_requested():
    assert worker.resolve("diffroar.runtime:read_json").__name__ == "read_json"
    for bad in ("os:system", "diffroar.runtime", "diffroarx.evil:run"):
        with pytest.raises(ValueError, match="must be 'diffroar.<module>:<name>'"):
            worker.resolve(bad)


def test_the_key_follows_the_code_the_copy_and_the_interpreter(tmp_path):
    package = tmp_path / "diffroar"
    shutil.copytree(REPO / "workflow" / "diffroar", package)
    other = tmp_path / "other" / "diffroar"
    shutil.copytree(package, other)
    key = worker.code_key(package)
    assert worker.code_key(package) == key
    assert worker.code_key(other) != key  # another copy of the workflow
    (package / "mask.py").write_text((package / "mask.py").read_text() + "\n# edited\n")
    edited = worker.code_key(package)
    assert edited != key
    os.utime(package / "mask.py", ns=(0, 0))  # same size, another modification time
    assert worker.code_key(package) != edited


def test_the_process_start_time_is_this_process_creation():
    """A fresh interpreter reports its own creation within the 10 ms of /proc's clocks (plus its
    start), not a second early as btime-based clocks can."""
    probe = "import time; from diffroar.runtime import process_start_time; "
    probe += "print(process_start_time(), time.time())"
    before = time.time()
    output = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(REPO / "workflow")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    started, printed = map(float, output.split())
    assert before - 0.05 <= started <= printed


PREIMPORT = """
import json, os
from diffroar.worker import preimport
preimport()
import sys, torch
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(json.dumps({"cuda": torch.cuda.is_initialized(), "threads": threads,
                  "loaded": sorted({m.split(".")[0] for m in sys.modules}),
                  "dynamo": "torch._dynamo" in sys.modules}))
"""


def test_the_server_imports_the_stages_without_initialising_cuda_or_thread_pools():
    """What the server holds when it forks: no CUDA context (a child can still pick the GPU), no
    OpenMP or BLAS threads (only pyarrow's allocator thread)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "OPENBLAS_NUM_THREADS": "1"}
    facts = json.loads(
        subprocess.run(
            [sys.executable, "-c", PREIMPORT], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert facts["cuda"] is False
    for library in ("torch", "captum", "zarr", "pandas", "matplotlib"):
        assert library in facts["loaded"]
    assert set(facts["threads"][1:]) <= {"jemalloc_bg_thd"}, facts["threads"]
    # what torch.optim would import in every job's first optimizer (about 1 s)
    assert facts["dynamo"] is True


EXIT_HOOKS = """
import gc, json, tempfile, weakref
from diffroar.worker import drop_import_exit_hooks, preimport
preimport()
dropped = drop_import_exit_hooks()
left = [f for f in gc.get_objects() if isinstance(f, weakref.finalize) and f.alive and f.atexit]
registry = len(weakref.finalize._registry)  # what every exit scans
own = tempfile.TemporaryDirectory()  # a job's own exit work: still done
print(json.dumps({"dropped": dropped, "left": len(left), "registry": registry, "own": own.name}))
"""


def test_a_jobs_exit_skips_the_imports_exit_work_and_does_its_own():
    """torch's operator libraries leave finalizers that deregister them at exit (tens of ms at
    every job's exit): the server sets them aside; what a job registers still runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    facts = json.loads(
        subprocess.run(
            [sys.executable, "-c", EXIT_HOOKS], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert facts["dropped"] > 0 and facts["left"] == 0 and facts["registry"] == 0
    assert not Path(facts["own"]).exists()


# --- through the server ------------------------------------------------------------------------


def test_a_job_runs_in_a_forked_child_as_in_its_own_process(package, tmp_path):
    code, stdout, stderr, client = _run(
        package, tmp_path, "diffroar.probe:report", str(tmp_path / "facts.json"), threads=2,
        PROBE="from the client",
    )  # fmt: skip
    assert code == 0, stderr
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["pid"] != client and facts["ppid"] != client  # the server's child
    assert facts["pgid"] == facts["pid"]  # its own process group
    assert facts["cwd"] == str(tmp_path) and facts["probe"] == "from the client"
    assert facts["torch_threads"] == 2 and facts["cuda_initialised"] is False
    assert facts["niceness"] == os.getpriority(os.PRIO_PROCESS, 0)
    assert facts["argv"][0].endswith("client.py")  # the client's
    assert "probe says hello on stdout" in stdout  # the script's descriptors
    assert "probe says hello on stderr" in stderr
    log = (tmp_path / "job.log").read_text()
    assert "INFO probe running" in log
    startup = float(re.search(r"job times: ([\d.]+) s start-up, [\d.]+ s work, 2 threads", log)[1])
    assert 0 < startup < 60


def test_the_start_up_is_measured_from_the_client_start(package, tmp_path):
    """A client that starts, sleeps 1.5 s, then hands over: its job's start-up includes the sleep
    (measured from the client's creation, as bench/pipeline.py needs)."""
    slow = "import runpy, time; time.sleep(1.5); "
    slow += "runpy.run_module('diffroar.client', run_name='__main__', alter_sys=True)"
    job = _job("diffroar.probe:report", [str(tmp_path / "facts.json")])
    env = {**os.environ, "PYTHONPATH": str(package), "DIFFROAR_WORKER_IDLE": "60"}
    subprocess.run(
        [sys.executable, "-S", "-c", slow, *_command(tmp_path)[2:]], input=job, text=True,
        cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    line = next(
        line for line in (tmp_path / "job.log").read_text().splitlines() if "job times" in line
    )
    assert float(line.split("job times: ")[1].split(" s")[0]) >= 1.5
    assert json.loads((tmp_path / "facts.json").read_text())["ppid"] != os.getpid()


def test_a_failing_job_fails_its_script_and_logs_the_traceback(package, tmp_path):
    code, _, stderr, _ = _run(package, tmp_path, "diffroar.probe:fail", "boom in the job")
    assert code == 1
    log = (tmp_path / "job.log").read_text()
    assert "CRITICAL job failed: RuntimeError: boom in the job" in log
    assert "Traceback" in log and "in fail" in log
    assert "job failed: RuntimeError: boom in the job" in stderr
    assert "job times:" in log


def test_the_jobs_exit_status_is_the_scripts(package, tmp_path):
    assert _run(package, tmp_path, "diffroar.probe:leave", 3)[0] == 3
    assert _run(package, tmp_path, "diffroar.probe:leave", 0)[0] == 0


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_job_of_any_size_runs_through_the_worker_and_in_process(package, tmp_path, switch):
    """A job's JSON of 300 KB (a table job of thousands of inputs): more than one command-line
    argument may hold (128 KiB), on either path."""
    large = "x" * 300_000
    code, _, stderr, client_pid = _run(
        package, tmp_path, "diffroar.runtime:write_json", str(tmp_path / "out.json"),
        {"large": large}, DIFFROAR_WORKER=switch,
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads((tmp_path / "out.json").read_text())["large"] == large
    assert "job times:" in (tmp_path / "job.log").read_text()


def test_killing_the_script_kills_the_job_and_its_subprocesses(package, tmp_path):
    facts_path = tmp_path / "facts.json"
    client = _client(package, tmp_path, "diffroar.probe:hang", str(facts_path))
    try:
        wait_for(facts_path.exists, timeout=300, what="the job to start")
        facts = json.loads(facts_path.read_text())
        assert _alive(facts["pid"]) and _alive(facts["grandchild"])
    finally:
        client.kill()
        client.communicate()
    wait_for(lambda: not _alive(facts["pid"]), timeout=10, what="the job to die")
    wait_for(lambda: not _alive(facts["grandchild"]), timeout=10, what="its subprocess to die")
    assert _alive(facts["ppid"])  # the server serves on


def test_switched_off_the_job_runs_in_the_clients_process(package, tmp_path):
    code, stdout, _, client = _run(
        package, tmp_path, "diffroar.probe:report", str(tmp_path / "facts.json"),
        DIFFROAR_WORKER="0",
    )  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "facts.json").read_text())["pid"] == client
    assert "job times:" in (tmp_path / "job.log").read_text()


UNREACHABLE = """
import os, sys
from diffroar import client
client.code_key = lambda: "no-such-server-for-tests"
client.start_server = lambda key: None  # a server that never comes up
client.CONNECT_WAIT = 0.3
print(os.getpid(), flush=True)
sys.exit(client.main(sys.argv[1:]))
"""


def test_a_gpu_job_runs_in_the_clients_process_and_bad_arguments_are_refused(package, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(package)}
    job = _job("diffroar.probe:report", [str(tmp_path / "facts.json")])
    command = _command(tmp_path)
    command[5] = "1"  # GPUS: resources.<rule>.gpu asks for one
    result = subprocess.run(
        [sys.executable, "-S", *command], input=job, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["ppid"] == os.getpid()  # exec'd in the client's process, not a server's child
    for bad in (command[:-1], [*command[:4], "two", *command[5:]]):
        result = subprocess.run(
            [sys.executable, "-S", *bad], input=job, env=env, capture_output=True, text=True
        )
        assert result.returncode == 2 and "usage: python -S -m diffroar.client" in result.stderr


def test_without_a_reachable_server_the_job_runs_in_the_clients_process(package, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(package)}
    job = _job("diffroar.probe:report", [str(tmp_path / "facts.json")])
    result = subprocess.run(
        [sys.executable, "-S", "-c", UNREACHABLE, *_command(tmp_path)[2:]], input=job,
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no worker listens" in result.stderr and "in its own process" in result.stderr
    client_pid = int(result.stdout.split()[0])
    assert json.loads((tmp_path / "facts.json").read_text())["pid"] == client_pid  # exec'd
    assert "job times:" in (tmp_path / "job.log").read_text()


def test_a_second_server_of_the_same_key_exits_at_once(package):
    key = worker.code_key(package / "diffroar")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.bind(worker.socket_name(key + "-taken"))  # a name already bound, as by a first server
    try:
        env = {**os.environ, "PYTHONPATH": str(package)}
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "diffroar.worker", "serve", key + "-taken"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 0 and time.monotonic() - started < 30
        assert "listening" not in second.stdout  # it lost the race before importing anything
    finally:
        probe.close()


def test_a_niced_jobs_server_runs_niced_and_exits_when_idle(package, tmp_path):
    """A server of another copy, started by a job at niceness 7 with a 1 s idle period: its
    children run at niceness 7, in an autogroup (its session's) at niceness 7 where the kernel
    has autogroups, and it is gone soon after its job."""
    copy = tmp_path / "idle"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    niceness = os.getpriority(os.PRIO_PROCESS, 0) + 7
    code, *_ = _run(
        copy, tmp_path, "diffroar.probe:report", str(tmp_path / "facts.json"),
        niceness=7, DIFFROAR_WORKER_IDLE="1",
    )  # fmt: skip
    assert code == 0
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["niceness"] == niceness
    server_group = _autogroup(facts["autogroup"])
    own = Path("/proc/self/autogroup")
    own_group = _autogroup(own.read_text() if own.exists() else None)
    if server_group and own_group:  # a kernel with autogroups (a sandbox's /proc may show none)
        assert server_group[0] != own_group[0]  # the server's new session
        assert server_group[1] == niceness
    server = facts["ppid"]
    wait_for(lambda: not _alive(server), timeout=30, what="the idle server to exit")
    assert client.try_connect(client.code_key(copy / "diffroar")) is None


def _autogroup(text):
    """(group, niceness) from the text of /proc/<pid>/autogroup, or None where it shows none."""
    found = re.fullmatch(r"(/autogroup-\d+) nice (-?\d+)\s*", text or "")
    return (found[1], int(found[2])) if found else None


def test_keep_niceness_writes_a_niced_process_niceness_and_leaves_others(tmp_path):
    group = tmp_path / "autogroup"
    group.write_text("unchanged")
    if os.getpriority(os.PRIO_PROCESS, 0) == 0:
        assert worker.keep_niceness(str(group)) is None
        assert group.read_text() == "unchanged"
    code = (
        "import os, sys; from diffroar.worker import keep_niceness; "
        "print(*(keep_niceness(path) for path in sys.argv[1:]))"
    )
    paths = [group, tmp_path / "missing" / "autogroup", os.devnull, tmp_path]
    niced = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.nice(19),
    )
    # a missing file, one that takes the write and shows nothing (as in some sandboxes' /proc)
    # and one that cannot be written are no error and set nothing
    assert niced.stdout.split() == ["19", "None", "None", "None"]
    assert group.read_text() == "19"


def test_autogroup_parses_the_kernels_text_only():
    assert _autogroup("/autogroup-1227 nice 0\n") == ("/autogroup-1227", 0)
    assert _autogroup("/autogroup-3 nice -5") == ("/autogroup-3", -5)
    assert _autogroup("") is None and _autogroup(None) is None and _autogroup("19") is None


# --- the same results ---------------------------------------------------------------------------


@pytest.mark.workflow
def test_the_worker_and_own_processes_give_bit_identical_results(
    tmp_path_factory, tmp_path, monkeypatch
):
    """clean_run goes through the worker (the default); the same run with DIFFROAR_WORKER=0 gives
    the same tables and the same checkpoint tensors."""
    assert client.in_process_reason(os.environ) is None  # clean_run used the worker
    through_worker = clean_run(tmp_path_factory)
    monkeypatch.setenv("DIFFROAR_WORKER", "0")
    workdir = small_workflow(tmp_path / "run")
    run_tables(workdir)
    expected, found = read_tables(through_worker), read_tables(workdir)
    assert list(found) == list(expected)
    for name, table in expected.items():
        pd.testing.assert_frame_equal(found[name], table, check_exact=True, obj=name)
    assert_same_checkpoints(through_worker, workdir)
