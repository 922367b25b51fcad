"""`retraining.group_seeds`: one retrain job per masked dataset trains every retrain seed, and
the models and metrics are exactly those of one job per seed."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from safetensors.torch import load_file
from small_runs import clean_run, copy_run
from workflow_helpers import job_counts, set_config, snakemake

pytestmark = pytest.mark.workflow

SEEDS = [0, 1, 2]
TABLE = "results/metrics.parquet"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The small cut with three retrain seeds, run one job per seed and grouped, each from a copy
    of the session's finished small cut without its retrainings (data, base model, saliency and
    masks are reused; every retraining runs)."""
    done = {}
    for grouped in (False, True):
        workdir = copy_run(
            clean_run(tmp_path_factory), tmp_path_factory.mktemp(f"grouped-{grouped}") / "run"
        )
        shutil.rmtree(workdir / "results" / "retrain")  # every retraining runs in this mode
        set_config(workdir, retraining={"group_seeds": grouped})
        set_config(workdir, experiment={"retrain_seeds": SEEDS})
        result = snakemake(workdir, "--cores", "2", TABLE)
        done[grouped] = (workdir, job_counts(result.stdout + result.stderr))
    return done


def test_grouping_runs_one_retrain_job_per_masked_dataset(runs):
    assert runs[False][1]["retrain"] == len(SEEDS)  # one job per seed retrains top and bottom
    assert runs[True][1]["retrain"] == 1
    for counts in (runs[False][1], runs[True][1]):  # only retraining and what follows it reran
        assert not {"data", "train", "saliency", "mask"} & set(counts), counts
    log = next((runs[True][0] / "results/logs/retrain").rglob("retrain-seeds.log")).read_text()
    for seed in SEEDS:
        assert f"(retrain seed {seed})" in log


def test_grouped_seeds_give_the_same_models_and_metrics(runs):
    plain, grouped = (pd.read_parquet(runs[key][0] / TABLE) for key in (False, True))
    assert sorted(plain["retrain_seed"]) == sorted(SEEDS * 2)
    keys = ["order", "retrain_seed"]
    pd.testing.assert_frame_equal(
        plain.drop(columns="wall_seconds").sort_values(keys).reset_index(drop=True),
        grouped.drop(columns="wall_seconds").sort_values(keys).reset_index(drop=True),
    )
    checkpoints = sorted((runs[False][0] / "results/retrain").rglob("model.safetensors"))
    assert len(checkpoints) == 2 * len(SEEDS)
    for path in checkpoints:
        relative = path.relative_to(runs[False][0])
        one, other = load_file(path), load_file(runs[True][0] / relative)
        assert one.keys() == other.keys()
        for name in one:
            assert one[name].equal(other[name]), f"{relative}: {name} differs"
    # and different seeds trained different models
    first, second = (load_file(path) for path in checkpoints[:2])
    assert not all(first[name].equal(second[name]) for name in first)
