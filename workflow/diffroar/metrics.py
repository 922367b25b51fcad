"""Stage `metrics`: the per-run table of retrained models and the DiffROAR table.

DiffROAR(k) = acc(top-k kept) - acc(bottom-k kept), computed per pair of runs that share base
seed and retrain seed (a seed pair).

Independent units. Runs are nested (retrain seeds within base seeds, sharing the base model and
its masks), and a model-independent control (`random`, `sobel`) makes the same masks for every
base seed. Every run carries `attribution_fingerprint`; runs with the same fingerprint had
identical masks, so runs with the same fingerprint, order and retrain seed are the same
retrained model. For one row of the table (and for one paired difference of rows, see
`paired_difference`):
- a seed pair's identity is its runs' fingerprints and its retrain seed; pairs with the same
  identity are one pair counted several times and count once (the lowest base seed's is kept);
- the unit of the interval is the pair's fingerprints (in effect the base seed of a method that
  depends on the model; a single unit for all base seeds of a control);
- with two or more units, the values are averaged over retrain seeds within each unit, and the
  mean, std (ddof 1) and 95% Student-t interval are over the units (`interval_over` =
  "base_seeds"); with one unit, over its retrain seeds (`interval_over` = "retrain_seeds").
`n_base_seeds` is the number of units, `n_runs` the number of distinct seed pairs.

Mask-only control. The pseudo-imputation `mask_only` retrains on the binary keep-mask alone, once
per mask (shared by every real imputation). Every row carries the mask-only runs of the same
dataset, model, method, ranking, retrain architecture and k (`mask_only_top_accuracy`,
`mask_only_bottom_accuracy`, `mask_only_diffroar`: the values of that mask_only row, NaN when the
control was not run) and `beyond_mask_only`: the DiffROAR that the imputed pixels add beyond the
mask, the paired difference diffroar - mask_only_diffroar over matching seed pairs, with its
interval (`beyond_mask_only_ci_low`, `beyond_mask_only_ci_high`) by the same unit rule. The
mask_only rows stay in the table (imputation "mask_only"; their own beyond_mask_only is 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .checks import read_run, read_table
from .imputation import MASK_ONLY
from .provenance import config_fingerprint
from .runtime import log, write_parquet

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
    "precision",
    "wall_seconds",
    "attribution_fingerprint",
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
SEEDS = ["base_seed", "retrain_seed"]
MASK_ONLY_COLUMNS = [
    "mask_only_top_accuracy",
    "mask_only_bottom_accuracy",
    "mask_only_diffroar",
    "beyond_mask_only",
    "beyond_mask_only_ci_low",
    "beyond_mask_only_ci_high",
]


def collect_runs(metrics_paths: Iterable[str | Path], expected: dict | None = None) -> pd.DataFrame:
    """One row per retrained model from the retrain stage's metrics JSON files (checksums and
    ranges checked; with `expected`, path -> identity, what each records: diffroar.verify)."""
    rows = [
        {column: read_run(path, expected)[column] for column in RUN_COLUMNS}
        for path in metrics_paths
    ]
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
    fingerprints), their `package_version`s and, where the runs record it, the `precision` they
    trained in (each comma-separated when they differ: precision `auto` resolves per device, so
    runs retrained on different machines may mix float32 and bfloat16)."""
    joined = ["package_version", *(["precision"] if "precision" in runs else [])]
    return {
        "config_fingerprint": config_fingerprint(*sorted(runs["config_fingerprint"])),
        **{column: ", ".join(sorted(set(runs[column]))) for column in joined},
    }


def seed_pairs(runs: pd.DataFrame) -> pd.DataFrame:
    """The seed pairs of a run table: one row per GROUP x base seed x retrain seed that has a
    top and a bottom run, with columns GROUP, base_seed, retrain_seed, `top` and `bottom` (test
    accuracies), `diffroar` (top - bottom) and `unit` (the two runs' attribution fingerprints,
    which identify the pair's masks). Unpaired runs are left out."""
    index = GROUP + SEEDS
    columns = ["test_accuracy", "attribution_fingerprint"]
    top = runs.loc[runs["order"] == "top", index + columns]
    bottom = runs.loc[runs["order"] == "bottom", index + columns]
    pairs = top.merge(bottom, on=index, suffixes=("_top", "_bottom"))
    pairs["top"] = pairs.pop("test_accuracy_top")
    pairs["bottom"] = pairs.pop("test_accuracy_bottom")
    pairs["diffroar"] = pairs["top"] - pairs["bottom"]
    pairs["unit"] = (
        pairs.pop("attribution_fingerprint_top")
        .astype(str)
        .str.cat(pairs.pop("attribution_fingerprint_bottom").astype(str), sep=" ")
    )
    return pairs.sort_values(index, ignore_index=True)


def distinct(pairs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`pairs` (columns `keys`, base_seed, retrain_seed, unit, ...) with each pair counted once
    per `keys`: of the pairs with the same unit and retrain seed, the lowest base seed's."""
    ordered = pairs.sort_values(keys + SEEDS, ignore_index=True)
    return ordered.drop_duplicates(keys + ["unit", "retrain_seed"], ignore_index=True)


def unit_sample(pairs: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, int, str]:
    """What one row's statistics are computed over, from its distinct `pairs` (column `unit`
    and `columns`): the per-unit means of `columns` when there are two or more units, else the
    pairs themselves; with the number of units and `interval_over` ("base_seeds" or
    "retrain_seeds")."""
    units = pairs.groupby("unit", sort=True)[columns].mean()
    if len(units) >= 2:
        return units, len(units), "base_seeds"
    return pairs[columns], len(units), "retrain_seeds"


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """Seed pairs of `a` matched with those of `b` on `on` + base seed + retrain seed (both with
    columns `value` and `unit`): columns `on`, the columns of `a` not in `b`, base_seed,
    retrain_seed, `value_a`, `value_b`, `difference` (value_a - value_b) and `unit` (both units,
    so a matched pair is counted once by `distinct` when both sides are the same runs)."""
    keep_b = on + SEEDS + ["value", "unit"]
    merged = a.merge(b[keep_b], on=on + SEEDS, suffixes=("_a", "_b"))
    merged["difference"] = merged["value_a"] - merged["value_b"]
    merged["unit"] = merged.pop("unit_a").str.cat(merged.pop("unit_b"), sep=" | ")
    return merged


def diffroar_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x model x method x imputation x k (GROUP): mean top-k and bottom-k accuracy,
    DiffROAR with its std and 95% interval by the unit rule of the module docstring
    (`interval_over`, `n_base_seeds`, `n_runs`), the mask-only columns, and the provenance of
    the runs of the distinct pairs."""
    pairs = seed_pairs(runs)
    members = runs.set_index(GROUP + SEEDS)
    traced = {"config_fingerprint", "package_version"} <= set(runs.columns)
    rows = []
    for key, group in distinct(pairs, GROUP).groupby(GROUP, sort=True):
        sample, n_units, interval_over = unit_sample(group, ["top", "bottom", "diffroar"])
        low, high = interval95(sample["diffroar"])
        pair_runs = members[members.index.isin(pd.MultiIndex.from_frame(group[GROUP + SEEDS]))]
        rows.append(
            dict(zip(GROUP, key, strict=True))
            | {
                "top_accuracy": sample["top"].mean(),
                "bottom_accuracy": sample["bottom"].mean(),
                "diffroar": sample["diffroar"].mean(),
                "diffroar_std": sample["diffroar"].std(ddof=1),
                "ci_low": low,
                "ci_high": high,
                "interval_over": interval_over,
                "n_base_seeds": n_units,
                "n_runs": len(group),
            }
            | (provenance(pair_runs) if traced else {})
        )
    return with_mask_only(pd.DataFrame(rows), pairs)


def with_mask_only(table: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """`table` (rows of `diffroar_table`) with the MASK_ONLY_COLUMNS of the module docstring,
    from the seed pairs `pairs` it was computed from."""
    if table.empty:
        return pd.DataFrame(columns=[*table.columns, *MASK_ONLY_COLUMNS])
    shared = [column for column in GROUP if column != "imputation"]
    control = table[table["imputation"] == MASK_ONLY].set_index(shared)
    control = control[["top_accuracy", "bottom_accuracy", "diffroar"]].add_prefix("mask_only_")
    table = table.join(control, on=shared)
    values = pairs.rename(columns={"diffroar": "value"})[GROUP + SEEDS + ["value", "unit"]]
    matched = paired_difference(values, values[values["imputation"] == MASK_ONLY], shared)
    rows = []
    for key, group in distinct(matched, GROUP).groupby(GROUP, sort=True):
        sample, _, _ = unit_sample(group, ["difference"])
        low, high = interval95(sample["difference"])
        rows.append(
            dict(zip(GROUP, key, strict=True))
            | {
                "beyond_mask_only": sample["difference"].mean(),
                "beyond_mask_only_ci_low": low,
                "beyond_mask_only_ci_high": high,
            }
        )
    beyond = pd.DataFrame(rows, columns=GROUP + MASK_ONLY_COLUMNS[3:])
    table = table.merge(beyond, on=GROUP, how="left")
    return table.astype(dict.fromkeys(MASK_ONLY_COLUMNS, float))


def noretrain_diffroar(table: pd.DataFrame) -> pd.DataFrame:
    """Per base model x method x imputation x k: LeRF - MoRF accuracy (retrain-free DiffROAR),
    averaged over base seeds, with the number of seeds."""
    keys = ["dataset", "model", "method", "imputation", "keep_fraction"]
    wide = table.pivot_table(index=keys + ["base_seed"], columns="curve", values="test_accuracy")
    wide["noretrain_diffroar"] = wide["LeRF"] - wide["MoRF"]
    summary = wide.groupby(level=keys)["noretrain_diffroar"].agg(["mean", "count"])
    return summary.rename(columns={"mean": "noretrain_diffroar", "count": "n_seeds"}).reset_index()


def run_metrics(
    metrics_paths: list[str], runs_path: str, diffroar_path: str, expected: dict | None = None
) -> None:
    """Write one dataset's run table and DiffROAR table."""
    runs = collect_runs(metrics_paths, expected)
    table = diffroar_table(runs)
    write_parquet(runs, runs_path)
    write_parquet(table, diffroar_path)
    log.info("%d runs, %d DiffROAR rows", len(runs), len(table))


def concatenate(paths: list[str], out_path: str) -> None:
    """Stack per-dataset tables into one parquet file."""
    table = pd.concat([read_table(path) for path in paths], ignore_index=True)
    write_parquet(table, out_path)
    log.info("%s: %d rows from %d tables", out_path, len(table), len(paths))
