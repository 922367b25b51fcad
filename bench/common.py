"""Timing, the reference data and the rows every benchmark reports."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Row:
    """One line of the summary: `value` (in `unit`) beside `baseline` where there is one."""

    benchmark: str
    case: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None  # value / baseline
    target: str | None = None  # e.g. ">= 3x", "<= 20 s"
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def seconds(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def alternate(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each function over `repeats` rounds; in each round every function runs
    once, one after another, so that load on a shared machine hits them alike. A first round,
    not counted, warms caches and lazily initialised kernels."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(seconds(function))
    return {name: statistics.median(values) for name, values in times.items()}


def fashion_or_digits(count: int) -> tuple[np.ndarray, np.ndarray, int, str]:
    """`count` real training images (N, 1, H, W) uint8 in [0, 255], their labels, the pixel
    maximum (255) and a name: Fashion-MNIST from Debian's dataset-fashion-mnist where installed,
    else scikit-learn's 8x8 digits (levels 0-16 stretched to 0-255, repeated up to `count`)."""
    from diffroar.data import load_digits, load_idx_collection
    from diffroar.datafiles import SOURCES

    try:
        dataset = load_idx_collection("fashion_mnist", SOURCES["fashion_mnist"].default_root)
        name = "Fashion-MNIST 1x28x28"
    except (FileNotFoundError, ValueError):
        dataset = load_digits()
        name = "digits 1x8x8 (Fashion-MNIST not installed)"
    index = np.arange(count) % len(dataset.labels)
    images = dataset.images[index].astype(np.float64) * (255 / dataset.pixel_max)
    return images.round().astype(np.uint8), dataset.labels[index], 255, name


REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def copy_workflow(destination: Path) -> Path:
    """The files the workflow runs from (Snakefile, default config, rules, package sources,
    environments) copied to `destination`, so a benchmark never touches the checkout's results/."""
    destination.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, destination / name)
    for name in ("rules", "workflow", "envs"):
        shutil.copytree(REPO / name, destination / name, ignore=ignore)
    return destination


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """`snakemake ARGS` in `workdir`, output captured; fails with Snakemake's output."""
    result = subprocess.run([*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def planned_jobs(text: str) -> int:
    """The total of the "Job stats" table in Snakemake's output `text` (0: nothing to do)."""
    match = re.search(r"^total\s+(\d+)\s*$", text, flags=re.MULTILINE)
    return int(match.group(1)) if match else 0
