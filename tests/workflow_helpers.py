"""Run the workflow from a private copy of the repository and read what Snakemake planned."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "data" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def copy_workflow(destination: Path) -> Path:
    """The files the workflow runs from (Snakefile, rules, package, config, the example user
    methods of examples/) and the tiny test configs of tests/data copied to `destination`, so a
    test can edit code without touching the checkout."""
    destination.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, destination / name)
    for name in ("rules", "workflow", "envs", "profiles", "examples"):
        shutil.copytree(REPO / name, destination / name, ignore=ignore)
    for config in TINY_CONFIG.parent.glob("*.yaml"):
        shutil.copy2(config, destination / config.name)
    return destination


def snakemake(
    workdir: Path, *args: str, check: bool = True, config: str | None = "tiny.yaml"
) -> subprocess.CompletedProcess:
    """`snakemake ARGS` in `workdir` with the tiny config (or `config`, None for the default
    config.yaml alone); output captured as text."""
    command = [*SNAKEMAKE, *(["--configfile", config] if config else []), *args]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=1800)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def planned_jobs(workdir: Path, *args: str, config: str | None = "tiny.yaml") -> dict[str, int]:
    """Rule -> number of jobs that `snakemake -n ARGS` would run ({} when nothing to do)."""
    result = snakemake(workdir, "--dry-run", *args, config=config)
    return job_counts(result.stdout + result.stderr)


def job_counts(text: str) -> dict[str, int]:
    """Rule -> number of jobs in the "Job stats" table of Snakemake's output `text`."""
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def set_config(workdir: Path, **sections) -> None:
    """Update top-level sections of the tiny config in `workdir` (dicts are merged one level)."""
    path = workdir / "tiny.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in sections.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root`."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def tree_state(root: Path) -> dict[str, tuple[str, int] | str]:
    """Relative path -> (sha256, size) of every file under `root`, 'dir' for every folder: what
    a refused run must leave exactly as it was."""
    return {
        str(path.relative_to(root)): (
            (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)
            if path.is_file()
            else "dir"
        )
        for path in sorted(root.rglob("*"))
    }


# Lines Snakemake prints when it starts or finishes a job.
JOB_LINES = re.compile(
    r"^\s*(local)?(rule|checkpoint) \w+:|^\s*jobid: |Finished job|Execute \d+ jobs", re.M
)


def touch_module(workdir: Path, module: str) -> None:
    """Edit a package module of the copy (a comment), as a developer would."""
    path = workdir / "workflow" / "diffroar" / f"{module}.py"
    path.write_text(path.read_text() + "\n# edited by a test\n")
