"""A small cut of the tiny workflow (tests/data/tiny.yaml) for the fault and trust tests: one
model, one method, one imputation, one k, so a complete run is 14 jobs (about 25 s on two cores).

`clean_run` is computed once per test session and shared by tests/test_faults.py,
tests/test_trust.py, tests/test_group_seeds.py and tests/test_slurm.py (a module-level cache:
pytest would run a fixture imported into two modules twice). Tests that change something work on
`copy_run` of it. `killed_run` is a second, independent run of the same cut whose training job is
killed once and rerun, shared by tests/test_faults.py (the rerun completes it) and
tests/test_trust.py (two runs give bit-identical results).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from workflow_helpers import SNAKEMAKE, copy_workflow, set_config, snakemake

SMALL = {
    "models": ["tiny_standard"],
    "methods": ["gradient"],
    "imputations": ["mean"],
    "keep_fractions": [0.1],
}
TABLES = [
    "results/metrics.parquet",
    "results/diffroar.parquet",
    "results/noretrain.parquet",
    "results/localization.parquet",
]
MODEL_DIR = Path("results/models/blockdigits/tiny_standard/seed0")
CHECKPOINT = MODEL_DIR / "model.safetensors"
SALIENCY = Path("results/saliency/blockdigits/tiny_standard/seed0/gradient.zarr")
TRAIN_LOG = Path("results/logs/train/blockdigits/tiny_standard/seed0.log")
SALIENCY_LOG = Path("results/logs/saliency/blockdigits/tiny_standard/seed0/gradient.log")
# columns that measure time, not results
TIMING_COLUMNS = ["wall_seconds"]

_cache: dict[str, Path] = {}


def small_workflow(destination: Path, **sections) -> Path:
    """A copy of the workflow whose tiny.yaml runs the small cut (and `sections` over it)."""
    workdir = copy_workflow(destination)
    set_config(workdir, experiment=SMALL)
    if sections:
        set_config(workdir, **sections)
    return workdir


def run_tables(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """snakemake --cores 2 ARGS for the four tables of the small cut."""
    return snakemake(workdir, "--cores", "2", *args, *TABLES, check=check)


def clean_run(tmp_path_factory) -> Path:
    """The small cut run to completion once in this session (do not modify: copy it)."""
    if "clean" not in _cache:
        workdir = small_workflow(tmp_path_factory.mktemp("clean_run"))
        result = run_tables(workdir)
        (workdir / "run.log").write_text(result.stdout + result.stderr)
        _cache["clean"] = workdir
    return _cache["clean"]


@dataclass
class KilledRun:
    workdir: Path
    first: subprocess.CompletedProcess  # the run whose train job was killed (stdout: output)
    checkpoint_after_kill: bool  # whether the base model's checkpoint existed after the kill
    rerun: subprocess.CompletedProcess  # `--rerun-incomplete` of it, to completion


def killed_run(tmp_path_factory) -> KilledRun:
    """The small cut run from an empty tree in a second copy of the workflow, its train job
    killed with SIGKILL once it trains (past start-up and data loading), then rerun with
    `--rerun-incomplete` to completion; computed once in this session (do not modify)."""
    if "killed" not in _cache:
        workdir = small_workflow(tmp_path_factory.mktemp("killed_run"))
        first = start_snakemake(workdir, "--cores", "2", *TABLES)
        try:
            pid = wait_for(
                lambda: (
                    (workdir / TRAIN_LOG).exists()
                    and "training tiny_standard" in (workdir / TRAIN_LOG).read_text()
                    and job_processes(workdir, "train.py")
                ),
                timeout=180,
                what="the train job to start training",
            )[0]
            os.kill(pid, signal.SIGKILL)
            output, _ = first.communicate(timeout=120)
        finally:
            if first.poll() is None:
                stop_group(first)
        killed = subprocess.CompletedProcess(first.args, first.returncode, output, "")
        checkpoint_after_kill = (workdir / CHECKPOINT).exists()
        rerun = run_tables(workdir, "--rerun-incomplete", check=False)
        _cache["killed"] = KilledRun(workdir, killed, checkpoint_after_kill, rerun)
    return _cache["killed"]


def copy_run(source: Path, destination: Path) -> Path:
    """A private copy of a finished tree, mtimes and Snakemake's metadata included."""
    return Path(shutil.copytree(source, destination, symlinks=True))


def read_tables(workdir: Path) -> dict[str, pd.DataFrame]:
    """Every parquet table of a run (combined and per dataset or model), timing columns dropped."""
    tables = {}
    for path in sorted((workdir / "results").rglob("*.parquet")):
        table = pd.read_parquet(path)
        tables[str(path.relative_to(workdir))] = table.drop(
            columns=[c for c in TIMING_COLUMNS if c in table.columns]
        )
    return tables


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """snakemake ARGS in the background, in its own process group (so it and its jobs can be
    stopped together with `stop_group`), output captured as text."""
    return subprocess.Popen(
        [*SNAKEMAKE, "--configfile", "tiny.yaml", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop_group(process: subprocess.Popen) -> str:
    """SIGKILL the process group started by `start_snakemake`; its output."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    output, _ = process.communicate(timeout=60)
    return output


def job_processes(workdir: Path, script: str) -> list[int]:
    """Pids of the running clients of jobs of the rule script `script` (e.g. "train.py": the
    command `python -S -m diffroar.client train.py ...`) started in `workdir`, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if "diffroar.client" not in arguments or script not in arguments:
                continue
            if Path(os.readlink(entry / "cwd")) != Path(workdir).resolve():
                continue
        except OSError:  # the process ended meanwhile
            continue
        pids.append(int(entry.name))
    return pids


def wait_for(condition, timeout: float, what: str, interval: float = 0.02):
    """Poll `condition()` until it returns something true; its value. AssertionError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def leftovers(root: Path) -> list[str]:
    """Temporary outputs (`*.tmp-<pid>`) anywhere under `root`."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*.tmp-*"))


def assert_same_checkpoints(expected_run: Path, run: Path) -> None:
    """Every checkpoint of `run` holds exactly the tensors and metadata of the same checkpoint of
    `expected_run` (tests/test_trust.py also compares their bytes)."""
    expected_paths = sorted((expected_run / "results").rglob("*.safetensors"))
    assert [p.relative_to(expected_run) for p in expected_paths] == [
        p.relative_to(run) for p in sorted((run / "results").rglob("*.safetensors"))
    ]
    for expected_path in expected_paths:
        path = run / expected_path.relative_to(expected_run)
        with safe_open(str(expected_path), "pt") as old, safe_open(str(path), "pt") as new:
            assert new.metadata() == old.metadata(), path
            assert sorted(new.keys()) == sorted(old.keys()), path
            for name in old.keys():
                assert torch.equal(new.get_tensor(name), old.get_tensor(name)), (path, name)
