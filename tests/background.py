"""The two longest runs of the suite, started in the background as soon as pytest has collected
a selected test whose fixtures read them, so that they use the cores the rest of the suite leaves
idle (Snakemake planning on one core, Slurm polling, start-up) instead of running alone at the
end.

- `default`: the embedded default experiment (`snakemake --cores 2 --max-threads 1` on
  config.yaml alone) in a copy of the workflow, for tests/test_default_pipeline.py. One thread
  per job: a job of two threads beside the foreground's waits for its second thread at every
  operation (measured: two 2-thread trainings on the 2 cores ran at a tenth of their speed
  alone, 1-thread ones at their full speed), so the run would burn the cores the foreground
  leaves idle instead of using them. Its numbers may differ from a 2-thread run's in the last
  bits; its tests check the science with margins;
- `bench`: `python -m bench --quick` with one torch thread, for tests/test_bench.py.

Each runs at the lowest priority (niceness 19, for its session's autogroup too), so the tests in
the foreground keep their speed; the tests that read a run come last in the session
(tests/conftest.py) and wait for it. A test that reads a run that failed fails with its output;
runs still going when the session ends, or when SIGTERM or SIGHUP ends it, are killed with their
process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffroar.worker import keep_niceness
from workflow_helpers import REPO, SNAKEMAKE, copy_workflow

NICENESS = 19  # the lowest priority: the runs take what the foreground leaves
TIMEOUT = 3600  # seconds a test waits for a run


def _lower_priority() -> None:
    """In the run's new session: niceness NICENESS for the process and for the session's
    autogroup, without which Linux shares the CPU between sessions equally, whatever the niceness
    (measured: the foreground tests ran 2.4x slower beside the two runs niced per process only).
    The runs' jobs hand their work to a worker server, which gives its own session the niceness it
    inherits (diffroar.worker.keep_niceness)."""
    os.nice(NICENESS)
    keep_niceness()


@dataclass
class BackgroundRun:
    """A command running in its own process group; output to `log`."""

    name: str
    folder: Path  # the run's private folder, removed at the end of the session
    workdir: Path
    command: list[str]
    environ: dict[str, str] = field(default_factory=dict)  # set for the run, over os.environ
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
                env={**os.environ, **self.environ},
                start_new_session=True,
                preexec_fn=_lower_priority,
            )

    def wait(self) -> str:
        """Block until the run ends; its output. Raises AssertionError when it failed."""
        returncode = self.process.wait(timeout=TIMEOUT)
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
    command = [*SNAKEMAKE, "--cores", "2", "--max-threads", "1", "--verbose"]
    return BackgroundRun("default", folder, workdir, command)


def _bench(folder: Path) -> BackgroundRun:
    command = [sys.executable, "-m", "bench", "--quick", "--output", str(folder / "summary.json")]
    # one torch thread, for the reason the default run takes one per job
    return BackgroundRun("bench", folder, REPO, command, {"OMP_NUM_THREADS": "1"})


# fixture that reads a run -> how to start the run
STARTERS = {
    "default_run": _default,
    "quick_bench": _bench,
}
_runs: dict[str, BackgroundRun] = {}


def start(fixture: str) -> None:
    """Start the run that `fixture` reads (once per session)."""
    if fixture not in _runs:
        stop_on_termination()
        folder = Path(tempfile.mkdtemp(prefix=f"diffroar-{fixture}-"))
        _runs[fixture] = STARTERS[fixture](folder)


def stop_on_termination() -> None:
    """A session ended by SIGTERM or SIGHUP (`timeout`, a closed terminal, a cancelled CI job)
    stops its runs too, then ends as the signal would have ended it: each run is a session of its
    own, which the signal does not reach. A handler that someone else set is left in place."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _terminated)


def _terminated(signum: int, frame: object) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def run_of(fixture: str) -> BackgroundRun:
    """The run that `fixture` reads, started now if collection did not start it."""
    start(fixture)
    return _runs[fixture]


def stop_all() -> None:
    for run in _runs.values():
        run.stop()
    _runs.clear()
