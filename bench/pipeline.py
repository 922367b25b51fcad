"""4. Pipeline overhead: how much of a run's wall time its jobs spend on their own work.

The default experiment (config.yaml, as configured) runs from an empty results tree in a copy of
the workflow with `snakemake --cores <this machine's CPUs>`; its wall time is the second target
here (at most 10 minutes). Every
job logs at exit its start-up (from the creation of its command's process, diffroar.client, until
diffroar.runtime.setup_job: the client's interpreter and the hand-over to the warm worker of
diffroar.worker, or the imports of a job in its own process) and its work (from there to exit)
and its threads. The worker's own
imports, once per run, are no job's: the first jobs wait for them in their start-up. Run with
DIFFROAR_WORKER=0 to measure jobs that each import in their own process.

Over the run's capacity, cores x wall seconds: the work share is the sum of threads x work
seconds; start-up is the same sum of start-up seconds; the rest is Snakemake's own time
(parsing, DAG, scheduling, launching processes) and cores left idle by the DAG's dependencies.
Overhead = 1 - work share.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from .common import Row, copy_workflow, planned_jobs, snakemake

TARGET = 0.30
TARGET_WALL = 600.0  # seconds: the default run's hard limit
JOB_TIMES = re.compile(r"job times: ([\d.]+) s start-up, ([\d.]+) s work, (\d+) threads")
# quick: one dataset, one model, one method, one k, one epoch, and only the tables (no figures)
# as targets
QUICK = {
    "experiment": {
        "datasets": ["blockdigits"],
        "models": ["mlp_standard"],
        "methods": ["gradient"],
        "imputations": ["mean"],
        "keep_fractions": [0.2],
        "base_seeds": [0],
        "retrain_seeds": [0],
    },
    "training": {"epochs": 1},
    "retraining": {"epochs": 1},
}
QUICK_TARGETS = [
    "results/metrics.parquet",
    "results/diffroar.parquet",
    "results/noretrain.parquet",
    "results/localization.parquet",
]


def job_times(results: Path) -> list[tuple[str, float, float, int]]:
    """(rule, start-up s, work s, threads) of every job that logged them under `results`/logs
    (logs/<rule>/...)."""
    found = []
    for log in (results / "logs").rglob("*.log"):
        rule = log.relative_to(results / "logs").parts[0]
        for start, work, threads in JOB_TIMES.findall(log.read_text()):
            found.append((rule, float(start), float(work), int(threads)))
    return found


def measure(quick: bool) -> dict[str, float]:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        workdir = copy_workflow(Path(folder))
        (workdir / "bench.yaml").write_text(yaml.safe_dump(QUICK if quick else {}))
        targets = QUICK_TARGETS if quick else []
        started = time.perf_counter()
        # targets before --configfile, which takes every name after it
        result = snakemake(workdir, "--cores", str(cores), *targets, "--configfile", "bench.yaml")
        wall = time.perf_counter() - started
        jobs = planned_jobs(result.stdout + result.stderr)
        if not targets:
            jobs -= 1  # less the target rule `all`
        times = job_times(workdir / "results")
    if len(times) != jobs:
        raise RuntimeError(f"{jobs} jobs ran but {len(times)} logged their times")
    capacity = cores * wall
    retrains = [(start, work) for rule, start, work, _ in times if rule == "retrain"]
    return {
        "wall": wall,
        "jobs": jobs,
        "cores": cores,
        "work": sum(work * threads for _, _, work, threads in times) / capacity,
        "startup": sum(start * threads for _, start, _, threads in times) / capacity,
        "retrain_startup": statistics.median(start for start, _ in retrains),
        "retrain_work": statistics.median(work for _, work in retrains),
    }


def run(quick: bool) -> list[Row]:
    figures = measure(quick)
    name = "tiny cut of config.yaml (tables only)" if quick else "config.yaml"
    overhead = 1 - figures["work"]
    return [
        Row(
            "pipeline overhead",
            f"{name}: overhead share of wall",
            overhead,
            "share",
            target=f"< {TARGET:.0%}",
            met=overhead < TARGET,
            note=f"{figures['jobs']} jobs, {figures['wall']:.0f} s wall on "
            f"{figures['cores']} cores; of cores x wall: work {figures['work']:.0%}, "
            f"job start-up {figures['startup']:.0%}, Snakemake and idle cores "
            f"{1 - figures['work'] - figures['startup']:.0%}; median retrain job "
            f"{figures['retrain_startup']:.1f} s start-up, {figures['retrain_work']:.1f} s work",
        ),
        Row(
            "pipeline overhead",
            f"{name}: wall time from an empty tree",
            figures["wall"],
            "s",
            # the limit is the full default run's; the quick cut only shows the row works
            target=None if quick else f"<= {TARGET_WALL:g} s",
            met=None if quick else figures["wall"] <= TARGET_WALL,
            note=f"{figures['jobs']} jobs on {figures['cores']} cores",
        ),
    ]
