"""Comparisons of methods (paired differences, t-test, Holm) and their ranking by area over k."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from diffroar.compare import (
    COLUMNS,
    area_over_k,
    comparisons_table,
    holm,
    method_pairs,
    ranking_table,
)
from scipy import stats

IDENTITY = {
    "dataset": "digits",
    "model": "mlp_standard",
    "architecture": "mlp",
    "training_mode": "standard",
    "ranking": "coordinate",
    "retrain_architecture": "mlp",
}
GRID = [0.1, 0.3, 0.5]


def _runs(diffroar, base_seeds=6, retrain_seeds=2, imputations=("mean",), controls=()):
    """A run table in which, for each method -> function of `diffroar`, top - bottom accuracy =
    function(base_seed, retrain_seed, k). Methods in `controls` have the same masks for every
    base seed (one fingerprint, and the values of base seed 0)."""
    rows = []
    for imputation in imputations:
        for method, curve in diffroar.items():
            for base_seed in range(base_seeds):
                for retrain_seed in range(retrain_seeds):
                    for k in GRID:
                        fingerprint = method if method in controls else f"{method}{base_seed}"
                        if method in controls:
                            value = curve(0, retrain_seed, k)
                        else:
                            value = curve(base_seed, retrain_seed, k)
                        for order, accuracy in [("top", 0.5 + value), ("bottom", 0.5)]:
                            rows.append(
                                IDENTITY
                                | {
                                    "method": method,
                                    "imputation": imputation,
                                    "keep_fraction": k,
                                    "order": order,
                                    "base_seed": base_seed,
                                    "retrain_seed": retrain_seed,
                                    "test_accuracy": accuracy,
                                    "attribution_fingerprint": fingerprint,
                                }
                            )
    return pd.DataFrame(rows)


def test_area_over_k_is_a_normalised_trapezoid():
    # (0.2 + 0.4) / 2 * 0.2 + (0.4 + 0.1) / 2 * 0.2 = 0.11 over a width of 0.4
    np.testing.assert_allclose(area_over_k([[0.2, 0.4, 0.1]], GRID), [0.275])
    np.testing.assert_allclose(area_over_k([[0.3, 0.3, 0.3], [0, 0, 1]], GRID), [0.3, 0.25])
    np.testing.assert_allclose(area_over_k([[0.7], [0.2]], [0.1]), [0.7, 0.2])


def test_holm_hand_worked():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # 0.5 x 2 = 1.0, 0.6 -> 1.0; capped at 1
    np.testing.assert_allclose(holm([0.6, 0.5]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.7, 0.01, 0.9]), [1.0, 0.03, 1.0])
    # NaN is no test: two tests here
    adjusted = holm([np.nan, 0.02, 0.04])
    assert math.isnan(adjusted[0])
    np.testing.assert_allclose(adjusted[1:], [0.04, 0.04])


def test_method_pairs_put_random_second():
    assert method_pairs(["sobel", "random", "gradient"]) == [
        ("gradient", "random"),
        ("gradient", "sobel"),
        ("sobel", "random"),
    ]


def _noise(method, base_seed, retrain_seed, k, scale=0.01):
    seed = [ord(c) for c in method] + [base_seed, retrain_seed, int(k * 100)]
    return np.random.default_rng(seed).normal(0, scale)


def test_a_known_difference_is_found():
    # A base-seed effect shared by the methods (paired out); gradient = sobel + 0.1 with small
    # noise; saliency = sobel with noise of the same size.
    def base(b, r, k):
        return 0.3 * b / 5 + 0.2 * k

    runs = _runs(
        {
            "gradient": lambda b, r, k: base(b, r, k) + 0.1 + _noise("gradient", b, r, k),
            "saliency": lambda b, r, k: base(b, r, k) + _noise("saliency", b, r, k),
            "sobel": lambda b, r, k: base(b, r, k) + _noise("sobel", b, r, k),
        }
    )
    table = comparisons_table(runs, GRID)
    assert list(table.columns) == COLUMNS
    # 3 pairs x (3 k + area)
    assert len(table) == 12
    assert set(table["statistic"]) == {"diffroar_at_k", "area_over_k"}
    assert table.loc[table["statistic"] == "area_over_k", "keep_fraction"].isna().all()
    assert (table["interval_over"] == "base_seeds").all() and (table["n_units"] == 6).all()
    assert (table["n_runs"] == 12).all()

    known = table[(table["method_a"] == "gradient") & (table["method_b"] == "sobel")]
    assert len(known) == 4
    for row in known.itertuples():
        assert row.difference == pytest.approx(0.1, abs=0.02)
        assert row.ci_low < 0.1 < row.ci_high
        assert row.p_value < 1e-4 and row.p_holm < 1e-3

    null = table[(table["method_a"] == "saliency") & (table["method_b"] == "sobel")]
    for row in null.itertuples():
        assert row.ci_low < 0 < row.ci_high
        assert row.p_value > 0.05

    # Holm over the 12 comparisons of the family
    np.testing.assert_allclose(table["p_holm"], holm(table["p_value"]))
    assert (table["p_holm"] >= table["p_value"]).all()


def test_comparison_matches_a_hand_computed_paired_t_test():
    # 3 base seeds, 1 retrain seed, one k: the difference per base seed is 0.1, 0.3, 0.2.
    offsets = {0: 0.1, 1: 0.3, 2: 0.2}
    runs = _runs(
        {"gradient": lambda b, r, k: 0.2 + offsets[b], "sobel": lambda b, r, k: 0.2},
        base_seeds=3,
        retrain_seeds=1,
    )
    runs = runs[runs["keep_fraction"] == 0.1]
    table = comparisons_table(runs, [0.1])
    at_k, area = table.iloc[0], table.iloc[1]
    assert at_k["statistic"] == "diffroar_at_k" and area["statistic"] == "area_over_k"
    expected = stats.ttest_1samp([0.1, 0.3, 0.2], 0)
    for row in (at_k, area):
        assert row["difference"] == pytest.approx(0.2)
        assert row["p_value"] == pytest.approx(expected.pvalue)
        half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.2 - half, 0.2 + half))
    # two tests in the family: p_holm = 2 p
    assert at_k["p_holm"] == pytest.approx(min(1.0, 2 * expected.pvalue))


def test_controls_are_not_double_counted_in_comparisons():
    # random and sobel make the same masks for every base seed: random vs sobel has one unit
    # (the interval is over the 3 retrain seeds); gradient vs random has one unit per base seed.
    runs = _runs(
        {
            "gradient": lambda b, r, k: 0.3 + _noise("gradient", b, r, k),
            "random": lambda b, r, k: _noise("random", b, r, k),
            "sobel": lambda b, r, k: 0.05 + _noise("sobel", b, r, k),
        },
        base_seeds=4,
        retrain_seeds=3,
        controls=("random", "sobel"),
    )
    table = comparisons_table(runs, GRID).set_index(["method_a", "method_b", "statistic"])
    controls = table.xs(("sobel", "random"), level=["method_a", "method_b"])
    assert (controls["n_units"] == 1).all() and (controls["n_runs"] == 3).all()
    assert (controls["interval_over"] == "retrain_seeds").all()
    against = table.xs(("gradient", "random"), level=["method_a", "method_b"])
    assert (against["n_units"] == 4).all() and (against["n_runs"] == 12).all()
    assert (against["interval_over"] == "base_seeds").all()


def test_families_are_per_imputation_with_mask_only_among_them():
    runs = _runs(
        {
            "gradient": lambda b, r, k: 0.3 + _noise("gradient", b, r, k),
            "random": lambda b, r, k: _noise("random", b, r, k),
        },
        base_seeds=3,
        imputations=("mean", "mask_only"),
    )
    table = comparisons_table(runs, GRID)
    assert set(table["imputation"]) == {"mean", "mask_only"}
    for _, family in table.groupby("imputation"):
        assert len(family) == 4  # one pair x (3 k + area)
        np.testing.assert_allclose(family["p_holm"], holm(family["p_value"]))


def test_a_pair_missing_a_k_has_no_area():
    runs = _runs({"gradient": lambda b, r, k: 0.3, "random": lambda b, r, k: 0.0}, base_seeds=2)
    runs = runs[~((runs["base_seed"] == 1) & (runs["keep_fraction"] == 0.5))]
    table = comparisons_table(runs, GRID)
    area = table[table["statistic"] == "area_over_k"].iloc[0]
    assert area["n_runs"] == 2  # base seed 0's two retrain seeds only
    assert area["interval_over"] == "retrain_seeds"
    # every difference is 0.3: no spread, no t-test
    assert area["difference"] == pytest.approx(0.3)
    assert math.isnan(area["p_value"]) and math.isnan(area["p_holm"])


def test_ranking_table():
    # areas: gradient 0.3 + 0.2 * 0.3 = 0.36 (the mean of 0.2 k over the grid is 0.06), random
    # 0.06, sobel 0.16; the base-seed effect makes a wide interval, the same for every method.
    runs = _runs(
        {
            "gradient": lambda b, r, k: 0.3 + 0.2 * k + 0.05 * b,
            "random": lambda b, r, k: 0.2 * k + 0.05 * b,
            "sobel": lambda b, r, k: 0.1 + 0.2 * k + 0.05 * b,
        },
        base_seeds=3,
        imputations=("mean", "noisy_linear"),
    )
    table = ranking_table(runs, GRID)
    assert len(table) == 6
    mean = table[table["imputation"] == "mean"]
    assert list(mean["method"]) == ["gradient", "sobel", "random"]
    assert list(mean["rank"]) == [1, 2, 3]
    np.testing.assert_allclose(mean["area"], [0.36 + 0.05, 0.16 + 0.05, 0.06 + 0.05])
    assert (mean["n_units"] == 3).all() and (mean["interval_over"] == "base_seeds").all()
    half = stats.t.ppf(0.975, 2) * 0.05 / math.sqrt(3)
    np.testing.assert_allclose(mean["ci_high"] - mean["area"], half)
    np.testing.assert_allclose(mean["area"] - mean["ci_low"], half)


def test_plot_ranking_draws_every_imputation(tmp_path):
    from diffroar.figures import plot_ranking

    runs = _runs(
        {"gradient": lambda b, r, k: 0.3 + 0.05 * b, "random": lambda b, r, k: 0.01 * r},
        base_seeds=2,
        imputations=("mean", "mask_only"),
        controls=("random",),
    )
    runs = pd.concat([runs, runs.assign(model="mlp_l2", training_mode="pgd")])
    runs.to_parquet(tmp_path / "metrics.parquet")
    out = tmp_path / "ranking-digits.png"
    plot_ranking(str(tmp_path / "metrics.parquet"), str(out), "digits", GRID)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
