"""The other attribution methods, the channel_mean imputation, per-pixel ranking and the
convolutional architectures through the whole pipeline, on
tests/data/tiny-methods.yaml (tiny.yaml covers the mlp, gradient, random and the other
imputations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr
from workflow_helpers import copy_workflow, snakemake

pytestmark = pytest.mark.workflow

CONFIG = "tiny-methods.yaml"
MODELS = {"tiny_cnn": "cnn", "tiny_resnet": "resnet18"}
METHODS = [
    "gradient_x_input", "integrated_gradients", "smoothgrad", "smoothgrad_sq", "vargrad",
    "guided_backprop", "gradcam", "deeplift", "sobel",
]  # fmt: skip
FIGURES = ["methods", "imputation", "noretrain", "attributions", "localization"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("methods"))
    result = snakemake(workdir, "--cores", "2", config=CONFIG)
    (workdir / "run.log").write_text(result.stdout + result.stderr)
    return workdir / "results"


def _saliency(results, model, method):
    path = results / "saliency" / "blockdigits" / model / "seed0" / f"{method}.zarr"
    return zarr.open_group(str(path), mode="r")


def test_every_method_and_architecture_reaches_the_tables(finished):
    runs = pd.read_parquet(finished / "metrics.parquet")
    assert len(runs) == len(MODELS) * len(METHODS) * 2  # one k, one retrain seed, two orders
    assert sorted(runs["method"].unique()) == sorted(METHODS)
    for model, architecture in MODELS.items():
        rows = runs[runs["model"] == model]
        assert (rows["architecture"] == architecture).all()
        assert (rows["retrain_architecture"] == "cnn").all()  # retraining.model: tiny_cnn
    assert set(runs["imputation"]) == {"channel_mean"} and set(runs["ranking"]) == {"pixel"}
    assert runs["test_accuracy"].between(0, 1).all()
    table = pd.read_parquet(finished / "diffroar.parquet")
    assert len(table) == len(MODELS) * len(METHODS)
    assert table["diffroar"].between(-1, 1).all()
    noretrain = pd.read_parquet(finished / "noretrain.parquet")
    assert len(noretrain) == len(runs)
    localization = pd.read_parquet(finished / "localization.parquet")
    assert sorted(localization["method"].unique()) == sorted(METHODS)
    assert len(localization) == len(MODELS) * len(METHODS) * 2  # mass share + one k


def test_saliency_stores_record_their_settings(finished):
    integrated = _saliency(finished, "tiny_cnn", "integrated_gradients")
    assert integrated.attrs["target"] == "logit"
    assert integrated.attrs["settings"]["steps"] == 4
    gradcam = _saliency(finished, "tiny_cnn", "gradcam")
    assert gradcam.attrs["settings"]["layer"] == "conv1"
    assert _saliency(finished, "tiny_resnet", "gradcam").attrs["settings"]["layer"] == "layer4"
    values = gradcam["test"]["attributions"][...]
    assert values.shape[1:] == (1, 16, 8) and (values >= 0).all() and values.any()


def test_controls_do_not_depend_on_the_model(finished):
    cnn = _saliency(finished, "tiny_cnn", "sobel")["test"]["attributions"][...]
    resnet = _saliency(finished, "tiny_resnet", "sobel")["test"]["attributions"][...]
    np.testing.assert_array_equal(cnn, resnet)
    assert np.abs(cnn).sum() > 0


def test_pixel_ranking_reaches_the_masks(finished):
    path = "masked/blockdigits/tiny_resnet/seed0/deeplift/channel_mean/top-k0.2.zarr"
    masking = zarr.open_group(str(finished / path), mode="r").attrs["masking"]
    assert masking["ranking"] == "pixel" and masking["kept_units"] == 26  # round(0.2 * 128)
    assert masking["imputation"] == "channel_mean"


def test_the_randomisation_check_runs_every_method_on_the_cnn(finished):
    table = pd.read_parquet(finished / "sanity.parquet")
    assert set(table["model"]) == {"tiny_cnn"}  # sanity.models: not the resnet18
    assert sorted(table["method"].unique()) == sorted(METHODS)
    assert set(table["n_images"] + table["n_undefined"]) == {16}
    layers = ["network.conv1", "network.conv2", "network.fc1", "network.classifier"]
    cascading = table[(table["mode"] == "cascading") & (table["method"] == "sobel")]
    assert list(cascading["layer"].drop_duplicates()) == layers[::-1]  # from the output down
    assert (table[table["method"] == "sobel"]["mean"] == 1).all()  # it ignores the model


def test_every_figure_is_drawn(finished):
    assert (finished / "figures" / "sanity-blockdigits.png").stat().st_size > 10_000
    for kind in FIGURES:
        assert (finished / "figures" / f"{kind}-blockdigits.png").stat().st_size > 10_000, kind
