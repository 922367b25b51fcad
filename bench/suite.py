"""7. The test suite: the README's test command (`pytest`, with CI=true as CI runs it) in a fresh
clone of this repository's HEAD, timed. Not in `--quick` (the suite runs the quick benchmarks
itself). The clone's own package is the one imported (PYTHONPATH), so the installed one is left
alone; the Slurm tests run where a local Slurm can be started, as in CI. CI's whole `.ci/run`
adds Debian's packages and the pip install to this time (docs/testing.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import REPO, Row

TARGET_SECONDS = 900.0


def run(quick: bool) -> list[Row]:
    if quick:
        return []
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as folder:
        clone = Path(folder) / "diffroar"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        environment = {**os.environ, "CI": "true", "PYTHONPATH": str(clone / "workflow")}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=clone,
            env=environment,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
    lines = (result.stdout + result.stderr).strip().splitlines()
    summary = next((line for line in reversed(lines) if re.search(r"passed|failed", line)), "")
    failed = [line.split()[1] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    passed = result.returncode == 0
    return [
        Row(
            "test suite",
            "README's test command from a fresh clone",
            wall,
            "s",
            target=f"<= {TARGET_SECONDS:g} s, all passing",
            met=passed and wall <= TARGET_SECONDS,
            note=f"pytest at {head} (committed state): {summary.strip('= ')}"
            + (f"; failed: {', '.join(failed)}" if failed else ""),
        )
    ]
