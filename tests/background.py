"""The three longest runs of the suite, started in the background as soon as pytest has collected
a selected test whose fixtures read them, so that they use the cores the rest of the suite leaves
idle (Snakemake planning on one core, Slurm polling, start-up) instead of running alone at the
end.

- `default`: the embedded default experiment (`snakemake --cores 2` on config.yaml alone) in a
  copy of the workflow, for tests/test_default_pipeline.py;
- `bench`: `python -m bench --quick`, for tests/test_bench.py;
- `slurm`: the small cut with a user method through profiles/slurm on the local Slurm (started
  first by profiles/slurm/local/start.sh where it is not running), for tests/test_slurm.py. Most
  of its wall time is the Slurm executor's waits between status checks.

Each runs at a lower priority (nice 10), so the tests in the foreground keep their speed; the
tests that read a run come last in the session (tests/conftest.py) and wait for it. A test that
reads a run that failed fails with its output; runs still going when the session ends are killed
with their process group.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from workflow_helpers import REPO, SNAKEMAKE, copy_workflow, set_config

NICENESS = 10
TIMEOUT = 3600  # seconds a test waits for a run


@dataclass
class BackgroundRun:
    """A command running in its own process group; output to `log`."""

    name: str
    folder: Path  # the run's private folder, removed at the end of the session
    workdir: Path
    command: list[str]
    log: Path = field(init=False)
    process: subprocess.Popen = field(init=False)
    started: float = field(init=False)
    seconds: float | None = None

    def __post_init__(self) -> None:
        self.log = self.folder / f"{self.name}.log"
        self.started = time.perf_counter()
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=lambda: os.nice(NICENESS),
            )

    def returncode(self) -> int:
        """Block until the run ends; its exit status."""
        return self.process.wait(timeout=TIMEOUT)

    def wait(self) -> str:
        """Block until the run ends; its output. Raises AssertionError when it failed."""
        returncode = self.returncode()
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started
        output = self.log.read_text()
        if returncode != 0:
            raise AssertionError(
                f"background run {self.name} ({' '.join(self.command)}) failed ({returncode}):\n"
                f"{output[-20000:]}"
            )
        return output

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _default(folder: Path) -> BackgroundRun:
    workdir = copy_workflow(folder / "workflow")
    # --verbose: the scheduler's rounds ("Ready jobs") are counted by test_default_pipeline
    return BackgroundRun("default", folder, workdir, [*SNAKEMAKE, "--cores", "2", "--verbose"])


def _bench(folder: Path) -> BackgroundRun:
    command = [sys.executable, "-m", "bench", "--quick", "--output", str(folder / "summary.json")]
    return BackgroundRun("bench", folder, REPO, command)


# The local Slurm: profiles/slurm/local/start.sh, one at a time (tests/test_slurm.py's fixture
# takes the same lock); the exit status of the Slurm run when Slurm cannot be started here.
START_SLURM = REPO / "profiles" / "slurm" / "local" / "start.sh"
START_LOCK = Path(tempfile.gettempdir()) / "diffroar-local-slurm.lock"
NO_SLURM = 77
# The Slurm executor's options for the local Slurm, which keeps no accounting: job states come
# from squeue, checked every few seconds.
SLURM_PROFILE = [
    "--profile",
    "profiles/slurm",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
]
# A user method (the config's `methods`) in a module of the run's working directory: on Slurm it
# runs as a built-in does. Input times the gradient of the target logit, by hand.
USER_METHOD = "by_hand"
USER_MODULE = """
import torch


def input_x_gradient(model, inputs, targets):
    inputs = inputs.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(inputs).gather(1, targets[:, None]).sum(), inputs)
    return inputs.detach() * gradient
"""


def start_slurm_command() -> list[str]:
    """start.sh under the lock, so that two starts never interleave."""
    return ["flock", str(START_LOCK), "bash", str(START_SLURM)]


def _slurm(folder: Path) -> BackgroundRun:
    from small_runs import SMALL, small_workflow  # pandas and torch: only when this run starts

    workdir = small_workflow(folder / "workflow")
    (workdir / "slurm_methods.py").write_text(USER_MODULE)
    set_config(
        workdir,
        methods={USER_METHOD: {"function": "slurm_methods:input_x_gradient"}},
        experiment={"methods": [*SMALL["methods"], USER_METHOD]},
    )
    snakemake = [*SNAKEMAKE, "--configfile", "tiny.yaml"]
    start = shlex.join(start_slurm_command())
    script = f"""
if ! sinfo >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
        echo "starting the local Slurm needs root or sudo"; exit {NO_SLURM}
    fi
    {start} || {{ echo "local Slurm did not start"; exit {NO_SLURM}; }}
fi
{shlex.join(snakemake)} --dry-run > planned.txt || exit 1
exec {shlex.join([*snakemake, *SLURM_PROFILE])}
"""
    return BackgroundRun("slurm", folder, workdir, ["bash", "-c", script])


# fixture that reads a run -> how to start the run
STARTERS = {
    "default_run": _default,
    "quick_bench": _bench,
    "through_slurm": _slurm,
}
_runs: dict[str, BackgroundRun] = {}


def start(fixture: str) -> None:
    """Start the run that `fixture` reads (once per session)."""
    if fixture not in _runs:
        folder = Path(tempfile.mkdtemp(prefix=f"diffroar-{fixture}-"))
        _runs[fixture] = STARTERS[fixture](folder)


def run_of(fixture: str) -> BackgroundRun:
    """The run that `fixture` reads, started now if collection did not start it."""
    start(fixture)
    return _runs[fixture]


def stop_all() -> None:
    for run in _runs.values():
        run.stop()
    _runs.clear()
