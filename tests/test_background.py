"""tests/background.py itself: a session ended by a signal takes its background runs with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import background
import pytest

TESTS = Path(__file__).parent

SESSION = """
import sys, time
sys.path.insert(0, {tests!r})
import background

def sleeper(folder):
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    return background.BackgroundRun("sleeper", folder, folder, command)

background.STARTERS["sleeper"] = sleeper
background.start("sleeper")
run = background.run_of("sleeper")
print(run.process.pid, run.folder, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_session_ended_by_a_signal_stops_its_background_runs(tmp_path, signum):
    """A run is a session of its own, which a signal to the pytest process does not reach: the
    session stops it (process group and folder) and then ends as the signal ends a process."""
    script = textwrap.dedent(SESSION.format(tests=str(TESTS)))
    session = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    pid, folder = session.stdout.readline().split()
    try:
        os.kill(session.pid, signum)
        assert session.wait(timeout=60) == -signum
        with pytest.raises(ProcessLookupError):
            os.killpg(int(pid), 0)  # no process left in the run's group
        assert not Path(folder).exists()
    finally:
        session.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGKILL)


def test_a_handler_set_by_someone_else_is_left_in_place():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}

    def theirs(signum, frame):
        pass

    try:
        signal.signal(signal.SIGTERM, theirs)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        background.stop_on_termination()
        assert signal.getsignal(signal.SIGTERM) is theirs
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
