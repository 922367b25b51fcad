"""Stage `metrics`: the per-run table of retrained models and the DiffROAR table.

DiffROAR(k) = acc(top-k kept) - acc(bottom-k kept), computed per pair of runs that share base
seed and retrain seed, then averaged; its std and 95% t-interval are over those pairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .provenance import config_fingerprint
from .runtime import log, read_json, write_parquet

RUN_COLUMNS = [
    "dataset",
    "model",
    "architecture",
    "training_mode",
    "base_seed",
    "method",
    "imputation",
    "ranking",
    "retrain_architecture",
    "order",
    "keep_fraction",
    "kept_coordinates",
    "retrain_seed",
    "test_accuracy",
    "test_accuracy_last_epoch",
    "selected_epoch",
    "epochs",
    "wall_seconds",
    "config_fingerprint",
    "package_version",
]
GROUP = [
    "dataset",
    "model",
    "architecture",
    "training_mode",
    "method",
    "imputation",
    "ranking",
    "retrain_architecture",
    "keep_fraction",
]


def collect_runs(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per retrained model from the retrain stage's metrics JSON files."""
    rows = [{column: read_json(path)[column] for column in RUN_COLUMNS} for path in metrics_paths]
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return runs.sort_values(GROUP + ["order", "base_seed", "retrain_seed"], ignore_index=True)


def interval95(values: pd.Series) -> tuple[float, float]:
    """Two-sided 95% Student-t interval of the mean (NaN for fewer than two values)."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def provenance(runs: pd.DataFrame) -> dict[str, str]:
    """The `config_fingerprint` of a row that aggregates `runs` (the fingerprint of their sorted
    fingerprints) and their `package_version`s (comma-separated when they differ)."""
    return {
        "config_fingerprint": config_fingerprint(*sorted(runs["config_fingerprint"])),
        "package_version": ", ".join(sorted(set(runs["package_version"]))),
    }


def diffroar_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x model x method x imputation x k: mean top-k and bottom-k accuracy, DiffROAR
    with its std and 95% interval over (base seed, retrain seed) pairs, the number of pairs, and
    the provenance of the runs of those pairs."""
    paired = runs.pivot_table(
        index=GROUP + ["base_seed", "retrain_seed"],
        columns="order",
        values="test_accuracy",
    ).dropna(subset=["top", "bottom"])
    paired["diffroar"] = paired["top"] - paired["bottom"]
    members = runs.set_index(GROUP + ["base_seed", "retrain_seed"])
    traced = {"config_fingerprint", "package_version"} <= set(runs.columns)
    rows = []
    for key, group in paired.groupby(level=GROUP, sort=True):
        low, high = interval95(group["diffroar"])
        pair_runs = members[members.index.isin(group.index)]
        rows.append(
            dict(zip(GROUP, key, strict=True))
            | {
                "top_accuracy": group["top"].mean(),
                "bottom_accuracy": group["bottom"].mean(),
                "diffroar": group["diffroar"].mean(),
                "diffroar_std": group["diffroar"].std(ddof=1),
                "ci_low": low,
                "ci_high": high,
                "n_runs": len(group),
            }
            | (provenance(pair_runs) if traced else {})
        )
    return pd.DataFrame(rows)


def noretrain_diffroar(table: pd.DataFrame) -> pd.DataFrame:
    """Per base model x method x imputation x k: LeRF - MoRF accuracy (retrain-free DiffROAR),
    averaged over base seeds, with the number of seeds."""
    keys = ["dataset", "model", "method", "imputation", "keep_fraction"]
    wide = table.pivot_table(index=keys + ["base_seed"], columns="curve", values="test_accuracy")
    wide["noretrain_diffroar"] = wide["LeRF"] - wide["MoRF"]
    summary = wide.groupby(level=keys)["noretrain_diffroar"].agg(["mean", "count"])
    return summary.rename(columns={"mean": "noretrain_diffroar", "count": "n_seeds"}).reset_index()


def run_metrics(metrics_paths: list[str], runs_path: str, diffroar_path: str) -> None:
    """Write one dataset's run table and DiffROAR table."""
    runs = collect_runs(metrics_paths)
    table = diffroar_table(runs)
    write_parquet(runs, runs_path)
    write_parquet(table, diffroar_path)
    log.info("%d runs, %d DiffROAR rows", len(runs), len(table))


def concatenate(paths: list[str], out_path: str) -> None:
    """Stack per-dataset tables into one parquet file."""
    table = pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)
    write_parquet(table, out_path)
    log.info("%s: %d rows from %d tables", out_path, len(table), len(paths))
