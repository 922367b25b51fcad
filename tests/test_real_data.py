"""A small real-data experiment through the whole pipeline: BlockMNIST from the Fashion-MNIST
files of Debian's dataset-fashion-mnist (tests/data/tiny-fashion.yaml). CI installs the package;
elsewhere the test is skipped when the files are not there."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from diffroar.data import read_attributes
from diffroar.datafiles import SOURCES, files_problem
from workflow_helpers import copy_workflow, snakemake

pytestmark = pytest.mark.workflow

SOURCE = SOURCES["fashion_mnist"]
ROOT = SOURCE.default_root


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    problem = files_problem(SOURCE, ROOT)
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{ROOT} {problem}: .ci/run installs dataset-fashion-mnist")
        pytest.skip(f"{ROOT} {problem} (apt-get install dataset-fashion-mnist)")
    workdir = copy_workflow(tmp_path_factory.mktemp("fashion"))
    snakemake(workdir, "--cores", "2", config="tiny-fashion.yaml")
    return workdir / "results"


def test_the_dataset_is_blockmnist_of_real_fashion_images(results):
    attributes = read_attributes(results / "data" / "blockfashion.zarr")
    assert attributes["classes"] == ["T-shirt/top", "Trouser"]
    assert attributes["shape"] == [1, 56, 28]
    assert attributes["split_sizes"] == {"train": 340, "val": 60, "test": 100}
    assert str(Path(ROOT).resolve()) in attributes["source"]


def test_every_table_and_figure_is_written(results):
    runs = pd.read_parquet(results / "metrics.parquet")
    assert len(runs) == 2 * 2  # methods x orders
    assert runs["test_accuracy"].between(0, 1).all()
    base = pd.read_parquet(results / "noretrain.parquet")["unmasked_test_accuracy"]
    assert (base > 0.9).all()  # T-shirt vs trouser is easy even after 3 epochs
    localization = pd.read_parquet(results / "localization.parquet")
    assert set(localization["method"]) == {"gradient", "random"}
    for kind in ("methods", "imputation", "noretrain", "attributions", "localization", "sanity"):
        assert (results / "figures" / f"{kind}-blockfashion.png").stat().st_size > 10_000
