"""`retraining.group_seeds`: one retrain job per masked dataset trains every retrain seed, and
the models and metrics are exactly those of one job per seed."""

from __future__ import annotations

import pandas as pd
import pytest
from safetensors.torch import load_file
from small_runs import small_workflow
from workflow_helpers import job_counts, snakemake

pytestmark = pytest.mark.workflow

SEEDS = [0, 1, 2]
TABLE = "results/metrics.parquet"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The small cut with three retrain seeds, run one job per seed and grouped."""
    done = {}
    for grouped in (False, True):
        workdir = small_workflow(
            tmp_path_factory.mktemp(f"grouped-{grouped}"),
            experiment={"retrain_seeds": SEEDS},
            retraining={"group_seeds": grouped},
        )
        result = snakemake(workdir, "--cores", "2", TABLE)
        done[grouped] = (workdir, job_counts(result.stdout + result.stderr))
    return done


def test_grouping_runs_one_retrain_job_per_masked_dataset(runs):
    assert runs[False][1]["retrain"] == 2 * len(SEEDS)  # top and bottom, each seed
    assert runs[True][1]["retrain"] == 2
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
