"""The DiffROAR table, the run table, and the BlockMNIST localization measures."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from diffroar.localization import localization_rows, null_topk_share, signal_mass_share, signal_rows
from diffroar.metrics import (
    MASK_ONLY_COLUMNS,
    RUN_COLUMNS,
    collect_runs,
    diffroar_table,
    interval95,
    noretrain_diffroar,
)
from diffroar.runtime import write_json
from diffroar.store import create_store, write_array
from scipy import stats

IDENTITY = {
    "dataset": "digits",
    "model": "mlp_standard",
    "architecture": "mlp",
    "training_mode": "standard",
    "imputation": "mean",
    "ranking": "coordinate",
    "retrain_architecture": "mlp",
}


def _run(method, keep_fraction, order, retrain_seed, accuracy, base_seed=0, **extra):
    """One run; its masks depend on the base seed unless `attribution_fingerprint` says else."""
    return (
        IDENTITY
        | {
            "method": method,
            "keep_fraction": keep_fraction,
            "order": order,
            "base_seed": base_seed,
            "retrain_seed": retrain_seed,
            "test_accuracy": accuracy,
            "attribution_fingerprint": f"{method}-seed{base_seed}",
        }
        | extra
    )


def _runs():
    return pd.DataFrame(
        [
            _run("gradient", 0.1, "top", 0, 0.90),
            _run("gradient", 0.1, "bottom", 0, 0.50),
            _run("gradient", 0.1, "top", 1, 0.80),
            _run("gradient", 0.1, "bottom", 1, 0.60),
            _run("random", 0.1, "top", 0, 0.55),
            _run("random", 0.1, "bottom", 0, 0.50),
            _run("random", 0.1, "top", 1, 0.45),
            _run("random", 0.1, "bottom", 1, 0.52),
            # one seed only at k = 0.5: no interval
            _run("gradient", 0.5, "top", 0, 0.95),
            _run("gradient", 0.5, "bottom", 0, 0.75),
        ]
    )


def _expected_interval(differences):
    differences = np.asarray(differences)
    n = len(differences)
    half = stats.t.ppf(0.975, n - 1) * differences.std(ddof=1) / math.sqrt(n)
    return differences.mean() - half, differences.mean() + half


def test_diffroar_table_values():
    table = diffroar_table(_runs())
    assert len(table) == 3
    for column in (
        "top_accuracy",
        "bottom_accuracy",
        "diffroar",
        "diffroar_std",
        "ci_low",
        "ci_high",
        "n_runs",
    ):
        assert column in table.columns
    rows = {(r.method, r.keep_fraction): r for r in table.itertuples()}

    gradient = rows[("gradient", 0.1)]
    assert gradient.dataset == "digits" and gradient.model == "mlp_standard"
    assert gradient.architecture == "mlp" and gradient.training_mode == "standard"
    assert gradient.top_accuracy == pytest.approx(0.85)
    assert gradient.bottom_accuracy == pytest.approx(0.55)
    assert gradient.diffroar == pytest.approx(0.30)
    assert gradient.diffroar_std == pytest.approx(np.std([0.4, 0.2], ddof=1))
    low, high = _expected_interval([0.4, 0.2])
    assert gradient.ci_low == pytest.approx(low)
    assert gradient.ci_high == pytest.approx(high)
    # t with 1 degree of freedom: 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert gradient.ci_high - gradient.diffroar == pytest.approx(1.27062, abs=1e-4)
    assert gradient.n_runs == 2

    control = rows[("random", 0.1)]
    assert control.top_accuracy == pytest.approx(0.50)
    assert control.bottom_accuracy == pytest.approx(0.51)
    assert control.diffroar == pytest.approx(-0.01)
    low, high = _expected_interval([0.05, -0.07])
    assert control.ci_low == pytest.approx(low)
    assert control.ci_high == pytest.approx(high)
    assert control.n_runs == 2

    single = rows[("gradient", 0.5)]
    assert single.diffroar == pytest.approx(0.20)
    assert single.n_runs == 1
    assert math.isnan(single.ci_low) and math.isnan(single.ci_high)
    assert math.isnan(single.diffroar_std)


def test_diffroar_pairs_runs_by_base_and_retrain_seed():
    # Pairing matters: (top - bottom) per seed pair, not mean(top) - mean(bottom) over unpaired
    # rows. An unpaired top run (seed 2 has no bottom run) is left out.
    runs = pd.DataFrame(
        [
            _run("gradient", 0.1, "top", 0, 0.9, base_seed=0),
            _run("gradient", 0.1, "bottom", 0, 0.4, base_seed=0),
            _run("gradient", 0.1, "top", 0, 0.7, base_seed=1),
            _run("gradient", 0.1, "bottom", 0, 0.6, base_seed=1),
            _run("gradient", 0.1, "top", 2, 0.1, base_seed=0),
        ]
    )
    row = diffroar_table(runs).iloc[0]
    assert row["n_runs"] == 2
    assert row["top_accuracy"] == pytest.approx(0.8)
    assert row["diffroar"] == pytest.approx(0.3)
    assert row["diffroar_std"] == pytest.approx(np.std([0.5, 0.1], ddof=1))


def test_diffroar_keeps_imputations_apart():
    runs = pd.DataFrame(
        [
            _run("gradient", 0.1, "top", 0, 0.9),
            _run("gradient", 0.1, "bottom", 0, 0.4),
            _run("gradient", 0.1, "top", 0, 0.7, imputation="noisy_linear"),
            _run("gradient", 0.1, "bottom", 0, 0.6, imputation="noisy_linear"),
        ]
    )
    table = diffroar_table(runs).set_index("imputation")
    assert table.loc["mean", "diffroar"] == pytest.approx(0.5)
    assert table.loc["noisy_linear", "diffroar"] == pytest.approx(0.1)
    assert (table["n_runs"] == 1).all()


def _pair(method, base_seed, retrain_seed, top, bottom, keep_fraction=0.1, **extra):
    """A top and a bottom run of one seed pair."""
    return [
        _run(method, keep_fraction, "top", retrain_seed, top, base_seed, **extra),
        _run(method, keep_fraction, "bottom", retrain_seed, bottom, base_seed, **extra),
    ]


def test_interval_is_over_base_seeds_when_they_differ_and_retraining_does_not():
    # A large base-seed effect and no retrain noise: 4 base seeds x 3 retrain seeds. The 12
    # pairs are not 12 independent values; the interval is over the 4 base seeds.
    by_seed = {0: 0.10, 1: 0.50, 2: 0.20, 3: 0.60}
    runs = pd.DataFrame(
        [
            run
            for seed, diffroar in by_seed.items()
            for retrain_seed in range(3)
            for run in _pair("gradient", seed, retrain_seed, 0.3 + diffroar, 0.3)
        ]
    )
    row = diffroar_table(runs).iloc[0]
    assert row["interval_over"] == "base_seeds"
    assert row["n_base_seeds"] == 4 and row["n_runs"] == 12
    assert row["diffroar"] == pytest.approx(0.35)
    assert row["diffroar_std"] == pytest.approx(np.std(list(by_seed.values()), ddof=1))
    low, high = _expected_interval(list(by_seed.values()))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert row["ci_high"] - row["ci_low"] > 0.6  # t(3) = 3.18: wide, as it should be
    # treating the 12 pairs as independent would have claimed an interval less than half as wide
    naive_low, naive_high = _expected_interval(np.repeat(list(by_seed.values()), 3))
    assert naive_high - naive_low < 0.5 * (row["ci_high"] - row["ci_low"])


def test_interval_is_over_retrain_seeds_with_one_base_seed():
    runs = pd.DataFrame(
        [
            run
            for rseed, top in enumerate([0.9, 0.8, 0.7])
            for run in _pair("gradient", 0, rseed, top, 0.5)
        ]
    )
    row = diffroar_table(runs).iloc[0]
    assert row["interval_over"] == "retrain_seeds"
    assert row["n_base_seeds"] == 1 and row["n_runs"] == 3
    low, high = _expected_interval([0.4, 0.3, 0.2])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert row["diffroar_std"] == pytest.approx(0.1)


def test_identical_runs_of_a_control_are_counted_once():
    # `sobel` ignores the model: its masks, and so its retrained models, are the same for both
    # base seeds. 2 base seeds x 2 retrain seeds are 2 distinct pairs of one unit.
    runs = pd.DataFrame(
        [
            run
            for seed in (0, 1)
            for rseed, top in [(0, 0.7), (1, 0.6)]
            for run in _pair("sobel", seed, rseed, top, 0.5, attribution_fingerprint="sobel")
        ]
    )
    row = diffroar_table(runs).iloc[0]
    assert row["n_runs"] == 2 and row["n_base_seeds"] == 1
    assert row["interval_over"] == "retrain_seeds"
    low, high = _expected_interval([0.2, 0.1])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert row["diffroar"] == pytest.approx(0.15)


def test_a_control_duplicated_over_base_seeds_does_not_narrow_its_interval():
    # The same 3 distinct pairs seen under 2 base seeds: the counted pairs, the mean and the
    # interval are those of the 3 pairs alone.
    values = [(0, 0.9), (1, 0.6), (2, 0.65)]
    once = pd.DataFrame(
        [
            r
            for rseed, top in values
            for r in _pair("random", 0, rseed, top, 0.6, attribution_fingerprint="random")
        ]
    )
    twice = pd.DataFrame(
        [
            r
            for seed in (0, 1)
            for rseed, top in values
            for r in _pair("random", seed, rseed, top, 0.6, attribution_fingerprint="random")
        ]
    )
    columns = ["diffroar", "diffroar_std", "ci_low", "ci_high", "n_runs", "n_base_seeds"]
    pd.testing.assert_series_equal(
        diffroar_table(once).iloc[0][columns], diffroar_table(twice).iloc[0][columns]
    )


def test_mask_only_columns():
    # gradient and random with `mean` and the mask-only control, 2 base seeds x 1 retrain seed;
    # the control was run for gradient only.
    runs = pd.DataFrame(
        _pair("gradient", 0, 0, 0.90, 0.50)
        + _pair("gradient", 1, 0, 0.80, 0.60)
        + _pair("gradient", 0, 0, 0.85, 0.55, imputation="mask_only")
        + _pair("gradient", 1, 0, 0.95, 0.55, imputation="mask_only")
        + _pair("random", 0, 0, 0.50, 0.50)
        + _pair("random", 1, 0, 0.52, 0.50)
    )
    table = diffroar_table(runs).set_index(["method", "imputation"])
    assert len(table) == 3
    mean = table.loc[("gradient", "mean")]
    control = table.loc[("gradient", "mask_only")]
    assert control["diffroar"] == pytest.approx(0.35)
    assert mean["mask_only_top_accuracy"] == pytest.approx(0.90)
    assert mean["mask_only_bottom_accuracy"] == pytest.approx(0.55)
    assert mean["mask_only_diffroar"] == pytest.approx(0.35)
    # paired over base seeds: (0.40 - 0.30, 0.20 - 0.40) = (0.10, -0.20)
    assert mean["beyond_mask_only"] == pytest.approx(-0.05)
    low, high = _expected_interval([0.10, -0.20])
    assert mean["beyond_mask_only_ci_low"] == pytest.approx(low)
    assert mean["beyond_mask_only_ci_high"] == pytest.approx(high)
    # the control's own row: the control against itself
    assert control["mask_only_diffroar"] == pytest.approx(0.35)
    assert control["beyond_mask_only"] == pytest.approx(0.0)
    # no control run for random: NaN
    random = table.loc[("random", "mean")]
    for column in MASK_ONLY_COLUMNS:
        assert math.isnan(random[column]), column


def test_mask_only_columns_are_nan_without_the_control():
    table = diffroar_table(_runs())
    assert set(MASK_ONLY_COLUMNS) <= set(table.columns)
    assert table[MASK_ONLY_COLUMNS].isna().all().all()
    assert (table[MASK_ONLY_COLUMNS].dtypes == "float64").all()  # NaN, not None, in the parquet


def test_noretrain_diffroar_is_lerf_minus_morf_averaged_over_base_seeds():
    rows = []
    for seed, lerf, morf in [(0, 0.9, 0.3), (1, 0.8, 0.4)]:
        for curve, accuracy in [("LeRF", lerf), ("MoRF", morf)]:
            rows.append(
                {"dataset": "d", "model": "m", "method": "gradient", "imputation": "mean",
                 "keep_fraction": 0.1, "base_seed": seed, "curve": curve,
                 "test_accuracy": accuracy}
            )  # fmt: skip
    table = noretrain_diffroar(pd.DataFrame(rows))
    assert len(table) == 1
    assert table.loc[0, "noretrain_diffroar"] == pytest.approx(0.5)
    assert table.loc[0, "n_seeds"] == 2


def test_interval95():
    values = pd.Series([0.1, 0.3, 0.2, 0.6])
    low, high = interval95(values)
    expected = stats.t.interval(0.95, 3, loc=values.mean(), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    assert all(math.isnan(v) for v in interval95(pd.Series([0.5])))


def _metrics_payload(order, retrain_seed, accuracy):
    payload = {column: None for column in RUN_COLUMNS} | _run(
        "gradient", 0.2, order, retrain_seed, accuracy
    )
    payload |= {
        "kept_coordinates": 13,
        "test_accuracy_last_epoch": accuracy - 0.01,
        "selected_epoch": 3,
        "epochs": 5,
        "wall_seconds": 1.5,
        "precision": "float32",
        "config_fingerprint": "abc",
        "package_version": "0.1.0",
        "history": [{"epoch": 1}],  # not a column of the run table
    }
    return payload


def test_collect_runs_reads_metrics_json(tmp_path):
    written = [("top", 1, 0.9), ("bottom", 0, 0.4), ("top", 0, 0.8), ("bottom", 1, 0.5)]
    paths = []
    for index, (order, seed, accuracy) in enumerate(written):
        path = tmp_path / f"run{index}" / "metrics.json"
        write_json(path, _metrics_payload(order, seed, accuracy))
        paths.append(path)
    runs = collect_runs(paths)
    assert list(runs.columns) == RUN_COLUMNS
    assert len(runs) == 4
    # sorted by order, then seeds
    assert list(runs["order"]) == ["bottom", "bottom", "top", "top"]
    assert list(runs["retrain_seed"]) == [0, 1, 0, 1]
    assert list(runs["test_accuracy"]) == [0.4, 0.5, 0.8, 0.9]
    assert (runs["kept_coordinates"] == 13).all()
    assert (runs["precision"] == "float32").all()
    table = diffroar_table(runs)
    assert table.loc[0, "diffroar"] == pytest.approx(0.4)
    assert table.loc[0, "n_runs"] == 2
    assert table.loc[0, "precision"] == "float32"


def test_a_diffroar_row_names_every_precision_its_runs_trained_in():
    """`auto` resolves per device: runs retrained on a CPU and on a bf16 GPU under one config
    land in one row, which says so; a row whose runs agree names one precision."""
    provenance = {"config_fingerprint": "abc", "package_version": "0.1.0"}
    runs = pd.DataFrame(
        [
            _run("gradient", 0.1, "top", 0, 0.9, precision="float32", **provenance),
            _run("gradient", 0.1, "bottom", 0, 0.5, precision="float32", **provenance),
            _run("gradient", 0.1, "top", 1, 0.8, precision="bfloat16", **provenance),
            _run("gradient", 0.1, "bottom", 1, 0.6, precision="bfloat16", **provenance),
            _run("gradient", 0.5, "top", 0, 0.95, precision="bfloat16", **provenance),
            _run("gradient", 0.5, "bottom", 0, 0.75, precision="bfloat16", **provenance),
        ]
    )
    table = diffroar_table(runs).set_index("keep_fraction")
    assert table.loc[0.1, "precision"] == "bfloat16, float32"
    assert table.loc[0.5, "precision"] == "bfloat16"
    assert "precision" not in diffroar_table(runs.drop(columns="precision"))


@pytest.mark.parametrize("value", [None, "", 16])
def test_collect_runs_refuses_a_run_without_its_precision(tmp_path, value):
    payload = _metrics_payload("top", 0, 0.9)
    if value is None:
        del payload["precision"]
    else:
        payload["precision"] = value
    write_json(tmp_path / "metrics.json", payload)
    expected = "no precision" if value is None else f"precision = {value!r}: must be a non-empty"
    with pytest.raises(ValueError, match=re.escape(expected)):
        collect_runs([tmp_path / "metrics.json"])


def test_collect_runs_names_a_missing_column(tmp_path):
    payload = _metrics_payload("top", 0, 0.9)
    del payload["test_accuracy"]
    write_json(tmp_path / "metrics.json", payload)
    with pytest.raises(ValueError, match="metrics.json: no test_accuracy"):
        collect_runs([tmp_path / "metrics.json"])


# --- localization -------------------------------------------------------------------------------


def test_signal_rows():
    rows = signal_rows(np.array([True, False]), 2)
    assert rows.dtype == bool
    np.testing.assert_array_equal(rows, [[True, True, False, False], [False, False, True, True]])


def test_signal_mass_share_hand_examples():
    attributions = np.zeros((4, 1, 4, 2))
    attributions[0, 0, :2] = [[1.0, -2.0], [0.5, 0.0]]  # all mass on the top (signal) block
    attributions[1, 0, 2:] = [[-1.0, 1.0], [1.0, 1.0]]  # all on the bottom, where the signal is
    attributions[2] = 1.0  # uniform
    attributions[3, 0, 0, 0], attributions[3, 0, 3, 1] = -3.0, 1.0  # 3 on signal, 1 on null
    in_signal = signal_rows(np.array([True, False, True, True]), 2)
    share = signal_mass_share(attributions, in_signal)
    np.testing.assert_allclose(share, [1.0, 1.0, 0.5, 0.75])


def test_signal_mass_share_of_zero_attributions_is_nan():
    share = signal_mass_share(np.zeros((1, 1, 4, 2)), signal_rows(np.array([True]), 2))
    assert np.isnan(share[0])


def test_null_topk_share_hand_example():
    keep = np.zeros((3, 1, 4, 2), dtype=bool)
    keep[0, 0, 0, :] = True  # 2 kept, both in the top rows
    keep[1, 0, 0, 0] = keep[1, 0, 3, :] = True  # 1 top row, 2 bottom rows
    keep[2, 0, 2:, :] = True  # 4 kept in the bottom rows
    in_signal = signal_rows(np.array([True, True, False]), 2)
    share = null_topk_share(keep, in_signal)
    np.testing.assert_allclose(share, [0.0, 2 / 3, 0.0])
    share_flipped = null_topk_share(keep, ~in_signal)
    np.testing.assert_allclose(share_flipped, [1.0, 1 / 3, 1.0])


def test_localization_rows_on_tiny_stores(tmp_path):
    count, height = 6, 2
    on_top = np.array([True, False, True, True, False, False])
    dataset = create_store(
        tmp_path / "dataset.zarr", {"dataset": "tiny_block", "block": {"height": height}}
    )
    saliency = create_store(
        tmp_path / "saliency.zarr", {"model": "m", "base_seed": 0, "method": "gradient"}
    )
    in_signal = signal_rows(on_top, height)
    # attributions only on the signal rows: perfect localization
    attributions = np.where(in_signal[:, None, :, None], 1.0, 0.0) * np.ones((count, 1, 4, 3))
    attributions = attributions * np.random.default_rng(0).uniform(1, 2, attributions.shape)
    write_array(dataset.create_group("test"), "signal_on_top", on_top)
    write_array(saliency.create_group("test"), "attributions", attributions.astype(np.float32))

    rows = localization_rows(
        str(tmp_path / "dataset.zarr"), str(tmp_path / "saliency.zarr"), [0.25, 0.5, 0.75], 0
    )
    assert [row["measure"] for row in rows] == ["signal_mass_share"] + ["null_topk_share"] * 3
    assert all(row["dataset"] == "tiny_block" and row["method"] == "gradient" for row in rows)
    assert rows[0]["mean"] == pytest.approx(1.0)
    assert rows[0]["n_images"] == count
    # one base model's rows: the interval covers its test images, not base seeds
    assert all(row["interval_over"] == "test_images" for row in rows)
    assert [row["keep_fraction"] for row in rows[1:]] == [0.25, 0.5, 0.75]
    assert rows[1]["mean"] == pytest.approx(0.0)
    assert rows[2]["mean"] == pytest.approx(0.0)
    # 9 of 12 coordinates kept, only 6 are signal: 3 / 9 in the null block
    assert rows[3]["mean"] == pytest.approx(1 / 3)
