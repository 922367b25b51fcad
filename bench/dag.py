"""5. DAG scaling: `snakemake -n` on an up-to-date results tree of about 100, 1,000 and 10,000
jobs.

The configs are synthetic: the digits, one MLP, `gradient`, `mean`, and as many keep fractions
and retrain seeds as the size needs. The tree is made up to date without running anything: every
output that `snakemake --summary` lists is created empty (a folder for a zarr store) and given
one common modification time, so no input is newer than its outputs. Snakemake's metadata
(.snakemake/metadata) is not written this way; it would add reading one small file per output.
Each dry run is a fresh process, so Snakemake's own start-up (about 2 s) is included.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from .common import Row, copy_workflow, planned_jobs, seconds, snakemake

# (keep fractions, retrain seeds) per size: k * r retrain jobs (each masks and retrains both
# orders) + 19 others
SIZES = {100: (10, 9), 1000: (20, 50), 10000: (50, 200)}
TARGET_SECONDS = 20.0


def synthetic_config(keep_fractions: int, retrain_seeds: int) -> dict:
    return {
        "experiment": {
            "datasets": ["digits"],
            "models": ["mlp_standard"],
            "methods": ["gradient"],
            "imputations": ["mean"],
            "keep_fractions": np.round(np.linspace(0.02, 0.98, keep_fractions), 4).tolist(),
            "base_seeds": [0],
            "retrain_seeds": list(range(retrain_seeds)),
        },
        "retraining": {"group_seeds": False},  # one job per retrain seed, as SIZES counts
    }


def make_up_to_date(workdir: Path, configfile: str) -> None:
    """Create every output of the DAG with one modification time (see the module docstring)."""
    summary = snakemake(workdir, "--summary", "--configfile", configfile).stdout
    stamp = time.time() - 60
    rows = csv.DictReader(io.StringIO(summary[summary.index("output_file") :]), delimiter="\t")
    for row in rows:
        path = workdir / row["output_file"]
        if path.suffix == ".zarr":
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    for folder, names, files in os.walk(workdir / "results"):
        for name in [*names, *files]:
            os.utime(Path(folder) / name, (stamp, stamp))


def run(quick: bool, sizes: list[int] | None = None) -> list[Row]:
    sizes = sizes or ([100, 1000] if quick else list(SIZES))
    measured = {}
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            workdir = copy_workflow(Path(folder))
            (workdir / "synthetic.yaml").write_text(yaml.safe_dump(synthetic_config(*SIZES[size])))
            args = ("--dry-run", "--configfile", "synthetic.yaml")
            started = time.perf_counter()
            jobs = planned_jobs(snakemake(workdir, *args).stdout)
            plan_seconds = time.perf_counter() - started
            make_up_to_date(workdir, "synthetic.yaml")
            times = []
            for _ in range(1 if quick or size >= 10000 else 3):
                times.append(seconds(lambda: snakemake(workdir, *args)))  # noqa: B023
                # up to date: nothing planned
                assert planned_jobs(snakemake(workdir, *args).stdout) == 0
            up_to_date = statistics.median(times)
        measured[jobs] = up_to_date
        target = size >= 10000
        rows.append(
            Row(
                "DAG scaling",
                f"snakemake -n, {jobs} jobs up to date",
                up_to_date,
                "s",
                target=f"<= {TARGET_SECONDS:g} s" if target else None,
                met=up_to_date <= TARGET_SECONDS if target else None,
                note=f"{up_to_date / jobs * 1000:.2f} ms per job; planning all {jobs} jobs on "
                f"an empty tree took {plan_seconds:.1f} s",
            )
        )
    counts = sorted(measured)
    for smaller, larger in zip(counts, counts[1:], strict=False):
        growth = measured[larger] / measured[smaller]
        rows.append(
            Row(
                "DAG scaling",
                f"growth {smaller} -> {larger} jobs",
                growth,
                "x",
                note=f"jobs grew {larger / smaller:.1f}x (linear growth matches it)",
            )
        )
    return rows
