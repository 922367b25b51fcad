"""The embedded default experiment, end to end (minutes): outputs and the paper's findings.

Marked slow; `pytest -m "not slow"` skips it during development. CI runs it.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from background import run_of
from workflow_helpers import planned_jobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run():
    """The results of `snakemake --cores 2 --max-threads 1` on the default config from an empty
    tree, run in the background while the rest of the suite runs (tests/background.py)."""
    run = run_of("default_run")
    run.wait()
    print(f"default pipeline: {run.seconds:.0f} s on 2 cores, beside the rest of the suite")
    return run.workdir / "results"


DATASETS, MODELS, METHODS = ["digits", "blockdigits"], ["mlp_standard", "mlp_linf"], 3
IMPUTATIONS, KS, ORDERS, BASE_SEEDS = ["mean", "noisy_linear", "mask_only"], 3, 2, 3


def smallest_k(table, dataset, model, method, imputation="mean"):
    """The row at the smallest k of one dataset, model, method and imputation."""
    rows = table[
        (table["dataset"] == dataset)
        & (table["model"] == model)
        & (table["method"] == method)
        & (table["imputation"] == imputation)
    ]
    return rows.sort_values("keep_fraction").iloc[0]


def diffroar(table, dataset, model, method, imputation="mean"):
    """DiffROAR at the smallest k of one dataset, model, method and imputation."""
    return smallest_k(table, dataset, model, method, imputation)["diffroar"]


def test_every_output_exists(default_run):
    for name in ("metrics", "diffroar", "noretrain", "localization", "comparisons", "sanity"):
        assert (default_run / f"{name}.parquet").exists()
    for kind in ("methods", "imputation", "noretrain", "attributions", "ranking", "sanity"):
        for dataset in DATASETS:
            assert (default_run / "figures" / f"{kind}-{dataset}.png").stat().st_size > 10_000
    assert (default_run / "figures" / "localization-blockdigits.png").stat().st_size > 10_000
    runs = pd.read_parquet(default_run / "metrics.parquet")
    per_dataset = len(MODELS) * METHODS * len(IMPUTATIONS) * KS * ORDERS * BASE_SEEDS
    assert len(runs) == len(DATASETS) * per_dataset  # one retrain seed
    assert planned_jobs(default_run.parent, config=None) == {}


def test_every_row_carries_its_mask_only_control_and_an_interval_over_base_seeds(default_run):
    table = pd.read_parquet(default_run / "diffroar.parquet")
    assert len(table) == len(DATASETS) * len(MODELS) * METHODS * len(IMPUTATIONS) * KS
    for column in ["mask_only_top_accuracy", "mask_only_bottom_accuracy", "mask_only_diffroar"]:
        assert table[column].notna().all(), column
    assert table["beyond_mask_only"].notna().all()
    # three base models, each its own masks: the intervals are over them, not over retrain seeds
    assert set(table["interval_over"]) == {"base_seeds"}
    assert set(table["n_base_seeds"]) == {BASE_SEEDS}
    assert (table["ci_high"] >= table["ci_low"]).all()  # equal where every base seed agrees
    assert (table["ci_high"] > table["ci_low"]).mean() > 0.9


def test_the_mask_alone_gives_the_label_away_for_gradients_not_for_random(default_run):
    # 3 of 64 coordinates kept: which 3 the standard model's gradient keeps tells the digit
    table = pd.read_parquet(default_run / "diffroar.parquet")
    leak = smallest_k(table, "digits", "mlp_standard", "gradient")["mask_only_top_accuracy"]
    chance = smallest_k(table, "digits", "mlp_standard", "random")["mask_only_top_accuracy"]
    assert leak > 0.8
    assert chance < 0.3  # 10 classes


def test_comparisons_find_the_robust_gradient_above_random(default_run):
    table = pd.read_parquet(default_run / "comparisons.parquet")
    area = table[
        (table["dataset"] == "digits")
        & (table["model"] == "mlp_linf")
        & (table["imputation"] == "mean")
        & (table["statistic"] == "area_over_k")
        & (table["method_a"] == "gradient")
        & (table["method_b"] == "random")
    ]
    assert len(area) == 1
    assert area.iloc[0]["ci_low"] > 0


def test_gradients_of_the_robust_model_rank_discriminative_features_first(default_run):
    table = pd.read_parquet(default_run / "diffroar.parquet")
    robust = diffroar(table, "digits", "mlp_linf", "gradient")
    standard = diffroar(table, "digits", "mlp_standard", "gradient")
    assert robust > standard > 0.05
    assert robust > 0.3


def test_retrain_free_curves_cover_every_mask(default_run):
    table = pd.read_parquet(default_run / "noretrain.parquet")
    fills = len(IMPUTATIONS) - 1  # no retrain-free curve for the mask-only control
    assert len(table) == len(DATASETS) * len(MODELS) * METHODS * fills * KS * ORDERS * BASE_SEEDS
    assert "mask_only" not in set(table["imputation"])
    random = table[table["method"] == "random"].pivot_table(
        index=["dataset", "model", "keep_fraction"], columns="curve", values="test_accuracy"
    )
    assert (random["LeRF"] - random["MoRF"]).abs().max() < 0.15


def test_the_random_control_is_near_zero(default_run):
    table = pd.read_parquet(default_run / "diffroar.parquet")
    random = table[table["method"] == "random"]
    assert len(random) == len(DATASETS) * len(MODELS) * len(IMPUTATIONS) * KS
    assert random["diffroar"].abs().max() < 0.15


def test_robust_gradients_stay_on_the_signal_block(default_run):
    table = pd.read_parquet(default_run / "localization.parquet")
    shares = table[table["measure"] == "signal_mass_share"]
    assert set(shares["base_seed"]) == set(range(BASE_SEEDS))
    mass = shares.groupby(["model", "method"])["mean"].mean()  # over base seeds
    assert mass["mlp_linf", "gradient"] > mass["mlp_standard", "gradient"] > 0.5
    assert abs(mass["mlp_standard", "random"] - 0.5) < 0.05


def test_the_random_control_is_drawn_per_base_seed_and_shared_by_models(default_run):
    # the control ignores the model: the same masks for both models of a base seed (the same
    # attribution fingerprint), different masks for each base seed; none counted twice
    runs = pd.read_parquet(default_run / "metrics.parquet")
    random = runs[(runs["method"] == "random") & (runs["imputation"] == "mean")]
    units = random.groupby(["dataset", "base_seed"])["attribution_fingerprint"].nunique()
    assert (units == 1).all()  # one set of masks per base seed, whatever the model
    per_dataset = random.groupby("dataset")["attribution_fingerprint"].nunique()
    assert (per_dataset == BASE_SEEDS).all()
    accuracies = random.pivot_table(
        index=["dataset", "model", "order", "keep_fraction"],
        columns="base_seed",
        values="test_accuracy",
    )
    assert (accuracies.nunique(axis=1) > 1).any()  # the base seeds are not the same runs


def test_the_randomisation_check_separates_the_gradient_from_the_controls(default_run):
    table = pd.read_parquet(default_run / "sanity.parquet")
    layers = 3  # Linear(d, 256), Linear(256, 256), Linear(256, classes)
    assert len(table) == len(DATASETS) * len(MODELS) * BASE_SEEDS * METHODS * (1 + 2 * layers) * 2
    absolute = table[table["measure"] == "spearman_abs"].set_index(
        ["dataset", "model", "base_seed", "method", "mode", "layer_from_output"]
    )["mean"]
    assert absolute.xs("random", level="method").abs().max() < 0.1  # fresh draws every time
    gradient = absolute.xs("gradient", level="method")
    assert (gradient.xs("trained", level="mode") == 1).all()
    assert gradient.xs(("cascading", layers), level=("mode", "layer_from_output")).max() < 0.5


def test_snakemakes_scheduler_ran_a_round_per_event_not_a_growing_chain(default_run):
    # Snakemake's rate limiter would leave a timer chain per round (diffroar/scheduling.py): 71,163
    # rounds for the 752 jobs this run had then. Corrected: one round per job event, one per timer
    # (at most one a second), and a few more.
    run = run_of("default_run")
    output = run.wait()
    jobs = int(re.search(r"^total\s+(\d+)", output, re.M).group(1))
    rounds = len(re.findall(r"^Ready jobs", output, re.M))
    assert 0 < rounds <= 2 * jobs + 2 * run.seconds, (rounds, jobs, run.seconds)
