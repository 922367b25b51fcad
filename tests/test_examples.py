"""The example a newcomer copies (examples/own-method.yaml, README "Evaluate your own method"): a
user attribution method, a user architecture and an imported checkpoint, run end to end from the
repository root as the README says, cut to one k, the mean fill and the mask-only control and two
epochs (one run, about 50 jobs)."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.workflow

MODELS = {"my_cnn", "imported_mlp", "mlp_standard"}
METHODS = {"gradient", "edge_grad", "random"}
TABLES = ["diffroar", "noretrain", "localization", "sanity"]
CUT = {
    "experiment": {"keep_fractions": [0.1], "imputations": ["mean", "mask_only"]},
    "training": {"epochs": 2},
    "retraining": {"epochs": 2},
    "sanity": {"images": 20},
}


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("example"))
    (workdir / "cut.yaml").write_text(yaml.safe_dump(CUT))
    targets = [f"results/{name}.parquet" for name in TABLES]
    # the README's command, with the cut merged over the example (targets before --configfile)
    snakemake(
        workdir, "--cores", "2", *targets, "--configfile", "examples/own-method.yaml", "cut.yaml",
        config=None,
    )  # fmt: skip
    return workdir


def test_the_readme_runs_this_example():
    readme = (REPO / "README.md").read_text()
    assert "snakemake --configfile examples/own-method.yaml --cores 2" in readme
    example = yaml.safe_load((REPO / "examples" / "own-method.yaml").read_text())
    assert set(example["experiment"]["models"]) == MODELS
    assert set(example["experiment"]["methods"]) == METHODS


def test_every_table_has_the_user_method_and_models(example_run):
    for name in TABLES:
        table = pd.read_parquet(example_run / "results" / f"{name}.parquet")
        assert set(table["method"]) == METHODS, name
        assert set(table["model"]) == MODELS, name
        pairs = set(zip(table["model"], table["method"], strict=True))
        assert pairs == {(model, method) for model in MODELS for method in METHODS}, name


def test_the_user_method_is_evaluated_like_a_builtin(example_run):
    table = pd.read_parquet(example_run / "results" / "diffroar.parquet")
    rows = table[(table["method"] == "edge_grad") & (table["imputation"] == "mean")]
    assert len(rows) == len(MODELS) and rows["diffroar"].between(-1, 1).all()
    assert rows["mask_only_diffroar"].notna().all()  # with its control
    store = example_run / "results/saliency/blockdigits/my_cnn/seed0/edge_grad.zarr"
    attributes = json.loads((store / "zarr.json").read_text())["attributes"]
    assert attributes["settings"]["user_method"]["function"] == (
        "examples.my_attributions:edge_gradient"
    )


def test_the_checkpoint_is_imported_not_trained(example_run):
    models = example_run / "results" / "models" / "blockdigits"
    record = json.loads((models / "imported_mlp" / "seed0" / "metrics.json").read_text())
    source = REPO / "examples" / "blockdigits-mlp.pt"
    assert record["source"] == "imported"
    assert record["imported_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["test_accuracy"] >= 0.9  # examples/train_elsewhere.py measured 1.000
    assert not (
        example_run / "results" / "logs" / "train" / "blockdigits" / "imported_mlp"
    ).exists()
    trained = json.loads((models / "my_cnn" / "seed0" / "metrics.json").read_text())
    assert trained["source"] == "trained" and trained["architecture"] == "examples.my_nets:build"
