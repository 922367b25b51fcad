"""The other attribution methods, a user function and a Captum class by name, the channel_mean
imputation, per-pixel ranking and the convolutional architectures through the whole pipeline, on
tests/data/tiny-methods.yaml (tiny.yaml covers the mlp, gradient, random and the other
imputations); and what an edit of the user function's module reruns."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import zarr
from diffroar.plugins import source_sha256
from small_runs import copy_run
from workflow_helpers import copy_workflow, job_counts, snakemake

pytestmark = pytest.mark.workflow

CONFIG = "tiny-methods.yaml"
MODELS = {"tiny_cnn": "cnn", "tiny_resnet": "resnet18"}
METHODS = [
    "gradient_x_input", "integrated_gradients", "smoothgrad", "smoothgrad_sq", "vargrad",
    "guided_backprop", "gradcam", "deeplift", "sobel", "edge_grad", "shap",
]  # fmt: skip
USER_FUNCTION = "examples.my_attributions:edge_gradient"  # edge_grad (shap: Captum's GradientShap)
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
    path = "retrain/blockdigits/tiny_resnet/seed0/deeplift/channel_mean/top-k0.2/retrain0"
    metrics = json.loads((finished / path / "metrics.json").read_text())
    # round(0.2 * 128) pixels of one channel
    assert metrics["ranking"] == "pixel" and metrics["kept_coordinates"] == 26
    assert metrics["imputation"] == "channel_mean"


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


def test_user_methods_record_their_entry_and_attribute_every_image(finished):
    for model in MODELS:
        edge = _saliency(finished, model, "edge_grad")
        user = edge.attrs["settings"]["user_method"]
        assert user["function"] == USER_FUNCTION and user["params"] == {"sigma": 1.0}
        assert user["source_sha256"] == source_sha256(USER_FUNCTION, [str(finished.parent)])
        shap = _saliency(finished, model, "shap").attrs["settings"]["user_method"]
        assert shap == {"captum": "GradientShap", "init": {}, "params": {"n_samples": 2,
                        "baselines": "zero"}}  # fmt: skip
        for method in ("edge_grad", "shap"):
            values = _saliency(finished, model, method)["test"]["attributions"][...]
            assert values.shape[1:] == (1, 16, 8) and np.isfinite(values).all()
            assert (np.abs(values).reshape(len(values), -1).sum(1) > 0).all()


def _planned(output: str, rule: str) -> list[tuple[str, str]]:
    """(reason, wildcards) of every job of `rule` in a dry run's output."""
    blocks = re.findall(rf"^rule {rule}:\n(.*?)(?=^\[|^Job stats|\Z)", output, re.M | re.S)
    return [
        (re.search(r"reason: (.*)", block).group(1), re.search(r"wildcards: (.*)", block).group(1))
        for block in blocks
    ]


def test_editing_a_user_module_reruns_its_method_and_what_follows_only(finished, tmp_path):
    workdir = copy_run(finished.parent, tmp_path / "edited")
    module = workdir / "examples" / "my_attributions.py"
    module.write_text(module.read_text() + "\n# edited by a test\n")
    result = snakemake(workdir, "--dry-run", config=CONFIG)
    output = result.stdout + result.stderr
    planned = job_counts(output)
    assert planned["saliency"] == len(MODELS) and "mask" not in planned, planned
    assert planned["retrain"] == len(MODELS) and planned["noretrain"] == len(MODELS), planned
    assert "train" not in planned and "data" not in planned, planned
    # the saliency jobs are edge_grad's, rerun because their params (the module's hash) changed
    for reason, wildcards in _planned(output, "saliency"):
        assert "method=edge_grad" in wildcards and "Params have changed" in reason, output
        assert "source_sha256" in reason
    assert all("method=edge_grad" in job[1] for job in _planned(output, "retrain")), output
    # the retrained models' attribution fingerprint follows the module too: with the stages
    # before it left as they are, edge_grad's retraining reruns for its params, shap's does not
    targets = [
        f"results/retrain/blockdigits/tiny_cnn/seed0/{method}/channel_mean/top-k0.2/retrain0/"
        "metrics.json"
        for method in ("edge_grad", "shap")
    ]
    # (a flag between --configfile and the targets; --allowed-rules last: both take lists)
    result = snakemake(workdir, "--dry-run", *targets, "--allowed-rules", "retrain", config=CONFIG)
    output = result.stdout + result.stderr
    ((reason, wildcards),) = _planned(output, "retrain")
    assert "method=edge_grad" in wildcards and "Params have changed" in reason, output
