"""Stage `compare`: attribution methods compared with each other, not only curve by curve.

Inputs are a run table (metrics.parquet) and the configured k grid. Within one family (dataset x
model x imputation, the mask_only control being an imputation like the others), every pair of
methods (A, B) is compared (with `random` as B when it is one of the two; otherwise A < B by
name): the paired difference DiffROAR_A - DiffROAR_B over matching seed pairs (same base seed and
retrain seed), at each k (`statistic` "diffroar_at_k") and for the area over k ("area_over_k",
`keep_fraction` NaN). The area of one seed pair's DiffROAR curve is the trapezoid integral over
the k grid divided by (k_max - k_min) (the value itself with one k); a seed pair without a run at
every k of the grid has no area.

Identical runs are counted once and the interval is over base seeds when there are two or more
independent units, as in the DiffROAR table (diffroar.metrics): `n_units` and `interval_over`
say which. Each row has the mean difference, its 95% Student-t interval, the two-sided p-value
of the paired t-test (scipy.stats.ttest_rel on the units' values of A and B) and `p_holm`,
Holm's step-down correction over all comparisons of the family (every pair of methods, every k
and the area). A comparison with fewer than two units has no interval and no p-value (NaN) and
is not counted in Holm's correction, nor is one whose differences are all the same (no spread,
t undefined).
"""

from __future__ import annotations

import sys
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from .checks import read_table
from .metrics import (
    GROUP,
    SEEDS,
    distinct,
    interval95,
    paired_difference,
    seed_pairs,
    unit_sample,
)
from .runtime import log, write_parquet

CONTROL = "random"
FAMILY = [
    "dataset",
    "model",
    "architecture",
    "training_mode",
    "imputation",
    "ranking",
    "retrain_architecture",
]
COLUMNS = [
    *FAMILY,
    "method_a",
    "method_b",
    "statistic",
    "keep_fraction",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "n_units",
    "n_runs",
    "interval_over",
]


def area_over_k(values: np.ndarray, keep_fractions: list[float]) -> np.ndarray:
    """Normalised trapezoid area of curves `values` (n_curves x len(keep_fractions), k sorted
    ascending): the integral over k divided by (k_max - k_min); with one k, the value itself."""
    values = np.asarray(values, dtype=float)
    if len(keep_fractions) == 1:
        return values[:, 0]
    widths = np.diff(np.asarray(keep_fractions, dtype=float))
    integral = ((values[:, 1:] + values[:, :-1]) / 2 * widths).sum(axis=1)
    return integral / (keep_fractions[-1] - keep_fractions[0])


def area_pairs(pairs: pd.DataFrame, keep_fractions: list[float]) -> pd.DataFrame:
    """Per seed pair of `pairs` (diffroar.metrics.seed_pairs) with a run at every k of
    `keep_fractions`: columns GROUP without keep_fraction, base_seed, retrain_seed, `value` (the
    area of its DiffROAR curve) and `unit` (its units at every k, which identify its masks)."""
    grid = sorted(keep_fractions)
    keys = [column for column in GROUP if column != "keep_fraction"] + SEEDS
    on_grid = pairs[pairs["keep_fraction"].isin(grid)]
    curves = on_grid.pivot(index=keys, columns="keep_fraction", values="diffroar")
    curves = curves.reindex(columns=grid).dropna()
    units = on_grid.pivot(index=keys, columns="keep_fraction", values="unit").loc[curves.index]
    areas = pd.DataFrame(
        {
            "value": area_over_k(curves.to_numpy(), grid),
            "unit": [" ".join(dict.fromkeys(row)) for row in units.to_numpy()],
        },
        index=curves.index,
    )
    return areas.reset_index()


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (monotone in the sorted order, capped at 1); NaN stays
    NaN and is not counted among the tests."""
    p_values = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p_values, np.nan)
    tested = np.flatnonzero(~np.isnan(p_values))
    order = tested[np.argsort(p_values[tested], kind="stable")]
    m = len(order)
    scaled = (m - np.arange(m)) * p_values[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def method_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """Every unordered pair of `methods` as (A, B): B is the `random` control when it is one of
    the two, else A < B by name."""
    pairs = []
    for first, second in combinations(sorted(methods), 2):
        pairs.append((second, first) if first == CONTROL else (first, second))
    return pairs


def _paired_p_value(sample: pd.DataFrame) -> float:
    """Two-sided p-value of the paired t-test of `sample`'s value_a against value_b; NaN with
    fewer than two values or when every difference is the same (no spread: t is undefined)."""
    differences = sample["difference"].to_numpy()
    scale = max(1.0, float(np.abs(differences).max(initial=0.0)))
    if len(differences) < 2 or np.ptp(differences) <= 1e-12 * scale:
        return float("nan")
    return float(stats.ttest_rel(sample["value_a"], sample["value_b"]).pvalue)


def _compare(values: pd.DataFrame, keys: list[str], statistic: str) -> list[dict]:
    """Comparison rows (without p_holm) of every method pair within `keys` (FAMILY, with
    keep_fraction for the values at each k) of per-seed-pair `values` (column `value`)."""
    rows = []
    for family, members in values.groupby(keys, sort=True):
        for method_a, method_b in method_pairs(list(members["method"].unique())):
            a = members[members["method"] == method_a]
            b = members[members["method"] == method_b]
            matched = distinct(paired_difference(a, b, keys), keys)
            if matched.empty:
                continue
            sample, n_units, interval_over = unit_sample(
                matched, ["value_a", "value_b", "difference"]
            )
            low, high = interval95(sample["difference"])
            p_value = _paired_p_value(sample)
            rows.append(
                dict(zip(keys, family, strict=True))
                | {
                    "method_a": method_a,
                    "method_b": method_b,
                    "statistic": statistic,
                    "difference": sample["difference"].mean(),
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": p_value,
                    "n_units": n_units,
                    "n_runs": len(matched),
                    "interval_over": interval_over,
                }
            )
    return rows


def comparisons_table(runs: pd.DataFrame, keep_fractions: list[float]) -> pd.DataFrame:
    """The comparisons of the module docstring for a run table `runs` (columns of
    diffroar.metrics.RUN_COLUMNS) on the k grid `keep_fractions`: one row per family x method
    pair x (k or area), columns COLUMNS."""
    pairs = seed_pairs(runs).rename(columns={"diffroar": "value"})
    areas = area_pairs(pairs.rename(columns={"value": "diffroar"}), keep_fractions)
    rows = _compare(pairs, FAMILY + ["keep_fraction"], "diffroar_at_k")
    rows += _compare(areas, FAMILY, "area_over_k")
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["keep_fraction"] = table["keep_fraction"].astype(float)
    table["p_holm"] = table.groupby(FAMILY, sort=False)["p_value"].transform(holm)
    # per family: the rows at each k in ascending k, then the area rows (keep_fraction NaN)
    order = ["keep_fraction", "method_a", "method_b"]
    return table.sort_values(FAMILY + order, ignore_index=True, na_position="last")


def ranking_table(runs: pd.DataFrame, keep_fractions: list[float]) -> pd.DataFrame:
    """Per dataset x model x imputation (FAMILY) and method: the area over k of DiffROAR (as in
    the module docstring) with its 95% interval, `n_units`, `n_runs`, `interval_over`, and `rank`
    (1 = largest area within the family); sorted by family, then rank."""
    areas = area_pairs(seed_pairs(runs), keep_fractions)
    rows = []
    for key, group in distinct(areas, FAMILY + ["method"]).groupby(FAMILY + ["method"]):
        sample, n_units, interval_over = unit_sample(group, ["value"])
        low, high = interval95(sample["value"])
        rows.append(
            dict(zip(FAMILY + ["method"], key, strict=True))
            | {
                "area": sample["value"].mean(),
                "ci_low": low,
                "ci_high": high,
                "n_units": n_units,
                "n_runs": len(group),
                "interval_over": interval_over,
            }
        )
    columns = [*FAMILY, "method", "area", "ci_low", "ci_high", "n_units", "n_runs"]
    table = pd.DataFrame(rows, columns=[*columns, "interval_over"])
    table["rank"] = (
        table.groupby(FAMILY)["area"].rank(ascending=False, method="min").astype("Int64")
    )
    return table.sort_values(FAMILY + ["rank", "method"], ignore_index=True)


def run_comparisons(runs_path: str, keep_fractions: list[float], out_path: str) -> None:
    """Write one dataset's comparisons table from its run table."""
    table = comparisons_table(read_table(runs_path), keep_fractions)
    write_parquet(table, out_path)
    log.info("%d comparisons", len(table))


def main(argv: list[str]) -> None:
    """`python -m diffroar.compare RUNS.parquet`: print the ranking of a run table, over the k
    grid of its runs, as a Markdown table."""
    if len(argv) != 1:
        sys.exit("usage: python -m diffroar.compare results/metrics.parquet")
    runs = read_table(argv[0])
    table = ranking_table(runs, sorted(runs["keep_fraction"].unique()))
    columns = ["dataset", "model", "imputation", "rank", "method", "area", "ci_low", "ci_high"]
    print(table[columns + ["interval_over"]].to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main(sys.argv[1:])
