"""The shipped experiment configs: each validates, and the paper's grid plans without its data."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from diffroar.config import experiment_models, validate_config
from workflow_helpers import REPO, copy_workflow, job_counts, snakemake

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def merged(path: Path) -> dict:
    """`path` merged over config.yaml the way Snakemake merges a --configfile (dicts merge
    recursively, everything else replaces)."""

    def merge(base, update):
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    default = yaml.safe_load((REPO / "config.yaml").read_text())
    return merge(default, yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_shipped_config_validates(path):
    validate_config(merged(path))


@pytest.mark.workflow
def test_the_paper_grid_dry_runs_without_its_data(tmp_path):
    workdir = copy_workflow(tmp_path / "paper")
    shutil.copy2(REPO / "configs" / "paper.yaml", workdir / "paper.yaml")
    config = validate_config(merged(REPO / "configs" / "paper.yaml"))
    experiment = config["experiment"]
    bases = sum(
        len(experiment_models(experiment, name)) * len(experiment["base_seeds"])
        for name in experiment["datasets"]
    )
    # one retrain job per mask pair and retrain seed masks and retrains both orders (top-k and
    # bottom-k); no mask job (masked stores are written on request only)
    masks = (
        bases * len(experiment["methods"]) * len(experiment["imputations"])
        * len(experiment["keep_fractions"])
    )  # fmt: skip
    result = snakemake(workdir, "--dry-run", config="paper.yaml")
    planned = job_counts(result.stdout)
    assert {rule: planned[rule] for rule in ("data", "train", "saliency", "retrain")} == {
        "data": 5,
        "train": bases,
        "saliency": bases * len(experiment["methods"]),
        "retrain": masks * len(experiment["retrain_seeds"]),
    }
    assert "mask" not in planned
    assert planned["noretrain"] == bases and planned["localization"] == 1  # blockmnist
    assert bases == 2 * (3 + 3 + 3 + 6 + 6)  # two base seeds of 21 dataset-model pairs
    for name in ("cifar10", "svhn", "imagenet10", "blockmnist"):
        assert f"note: dataset {name!r}:" in result.stderr
    assert not (workdir / "data").exists()  # a dry run downloads nothing
    # every job that runs a network asks for a GPU, data does not
    resources = dict(
        re.findall(r"^rule (\w+):.*?^\s+resources: ([^\n]*)", result.stdout, re.M | re.S)
    )
    for rule in ("train", "saliency", "retrain", "noretrain"):
        assert "gpu=1" in resources[rule], (rule, resources[rule])
    assert "gpu" not in resources["data"] and "mem_mb=16000" in resources["data"]
