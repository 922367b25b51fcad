"""The embedded default experiment, end to end (minutes): outputs and the paper's findings.

Marked slow; `pytest -m "not slow"` skips it during development. CI runs it.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
from workflow_helpers import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("default"))
    started = time.perf_counter()
    snakemake(workdir, "--cores", "2", config=None)
    print(f"default pipeline: {time.perf_counter() - started:.0f} s on 2 cores")
    return workdir / "results"


def diffroar(table, dataset, model, method):
    """DiffROAR at the smallest k of one dataset, model and method."""
    rows = table[(table["dataset"] == dataset) & (table["model"] == model)]
    rows = rows[rows["method"] == method].sort_values("keep_fraction")
    return rows.iloc[0]["diffroar"]


def test_every_output_exists(default_run):
    for name in ("metrics", "diffroar", "noretrain", "localization"):
        assert (default_run / f"{name}.parquet").exists()
    for kind in ("methods", "imputation", "noretrain", "attributions"):
        for dataset in ("digits", "blockdigits"):
            assert (default_run / "figures" / f"{kind}-{dataset}.png").stat().st_size > 10_000
    assert (default_run / "figures" / "localization-blockdigits.png").stat().st_size > 10_000
    runs = pd.read_parquet(default_run / "metrics.parquet")
    assert len(runs) == 2 * 2 * 2 * 3 * 2 * 2  # datasets x models x methods x k x orders x seeds
    assert planned_jobs(default_run.parent, config=None) == {}


def test_gradients_of_the_robust_model_rank_discriminative_features_first(default_run):
    table = pd.read_parquet(default_run / "diffroar.parquet")
    robust = diffroar(table, "digits", "mlp_linf", "gradient")
    standard = diffroar(table, "digits", "mlp_standard", "gradient")
    assert robust > standard > 0.05
    assert robust > 0.3


def test_retrain_free_curves_cover_every_mask(default_run):
    table = pd.read_parquet(default_run / "noretrain.parquet")
    assert len(table) == 2 * 2 * 2 * 3 * 2  # datasets x models x methods x k x orders
    random = table[table["method"] == "random"].pivot_table(
        index=["dataset", "model", "keep_fraction"], columns="curve", values="test_accuracy"
    )
    assert (random["LeRF"] - random["MoRF"]).abs().max() < 0.15


def test_the_random_control_is_near_zero(default_run):
    table = pd.read_parquet(default_run / "diffroar.parquet")
    random = table[table["method"] == "random"]
    assert random["diffroar"].abs().max() < 0.15


def test_robust_gradients_stay_on_the_signal_block(default_run):
    table = pd.read_parquet(default_run / "localization.parquet")
    mass = table[table["measure"] == "signal_mass_share"].set_index(["model", "method"])["mean"]
    assert mass["mlp_linf", "gradient"] > mass["mlp_standard", "gradient"] > 0.5
    assert abs(mass["mlp_standard", "random"] - 0.5) < 0.05
