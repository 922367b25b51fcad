"""What each job asks the scheduler for: the config's `resources.<rule>`, defaults from the
environment, memory and time limit growing with the attempt (Snakemake's `retries`).

Light (no numpy, no torch): the Snakefile evaluates it for every job. Locally only `threads`
bounds parallelism (the rest counts against `--resources` only); a cluster executor such as
Snakemake's Slurm executor (profiles/slurm) requests it all for every job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# Environment variables that set the defaults of every job; the config's per-rule values win.
ENVIRONMENT = {
    "DIFFROAR_MEM_MB": "memory of a job in MB at its first attempt (default 2000)",
    "DIFFROAR_RUNTIME": "time limit of a job in minutes at its first attempt (default 60)",
    "DIFFROAR_SLURM_PARTITION": "Slurm partition of every job (default: the cluster's default)",
    "DIFFROAR_SLURM_GPU_PARTITION": "Slurm partition of the jobs that ask for a GPU "
    "(default: DIFFROAR_SLURM_PARTITION)",
    "DIFFROAR_SLURM_ACCOUNT": "Slurm account the jobs are charged to (default: none given)",
}
DEFAULT_MEM_MB = 2000
DEFAULT_RUNTIME = 60


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"environment error: {name} = {text!r}: must be a whole number >= 1 "
            f"({ENVIRONMENT[name]})"
        )
    return value


def base_resources(rule_config: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The first attempt's resources of one rule's jobs: `mem_mb` and `runtime` (minutes) from the
    config or the environment's defaults, `gpu` when the config asks for GPUs, and the Slurm
    partition and account where the environment names them."""
    resources = {
        "mem_mb": rule_config.get("mem_mb")
        or _positive_int(environ, "DIFFROAR_MEM_MB", DEFAULT_MEM_MB),
        "runtime": rule_config.get("runtime")
        or _positive_int(environ, "DIFFROAR_RUNTIME", DEFAULT_RUNTIME),
    }
    gpus = rule_config.get("gpu", 0)
    if gpus:
        resources["gpu"] = gpus
    partition = environ.get("DIFFROAR_SLURM_PARTITION")
    if gpus:
        partition = environ.get("DIFFROAR_SLURM_GPU_PARTITION") or partition
    if partition:
        resources["slurm_partition"] = partition
    if environ.get("DIFFROAR_SLURM_ACCOUNT"):
        resources["slurm_account"] = environ["DIFFROAR_SLURM_ACCOUNT"]
    return resources


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise ValueError naming the variable when a DIFFROAR_* default is not a valid number."""
    base_resources({}, environ)


# Resources that grow with the attempt: a job killed for memory or time gets more of both.
SCALED = ("mem_mb", "runtime")


def for_attempt(resources: Mapping[str, Any], attempt: int) -> dict[str, Any]:
    """`resources` for the given attempt (1, 2, ...): memory and runtime times the attempt."""
    return {name: value * attempt if name in SCALED else value for name, value in resources.items()}


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cores_note(cores: int | None, cpus: int) -> str | None:
    """A warning when a local run's `--cores` exceeds the CPUs it can use, else None: Snakemake
    then runs jobs whose threads add up to more than the CPUs, and jobs of several threads
    (train, saliency, sanity: 2 by default) stall each other, since each waits for its own
    threads at every operation (OpenMP) while they share cores."""
    if cores is None or cores <= cpus:
        return None
    return (
        f"note: --cores {cores} is more than the {cpus} CPUs this machine gives the run: jobs "
        f"with more than one thread will share CPUs and slow each other down; use --cores all "
        f"(= {cpus}) or fewer"
    )
