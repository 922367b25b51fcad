"""End-to-end workflow tests on the tiny config (tests/data/tiny.yaml) with one keep fraction.

One full run is shared by the module; every test that changes something works on its own copy of
that finished tree (timestamps and Snakemake's metadata preserved) and asks Snakemake what it would
rerun.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr
from diffroar.data import read_images
from diffroar.mask import masked_splits
from diffroar.models import load_checkpoint
from diffroar.resources import available_cpus, cores_note
from diffroar.train import accuracy
from workflow_helpers import (
    copy_workflow,
    job_counts,
    planned_jobs,
    set_config,
    snakemake,
    touch_module,
    tree_digest,
)

pytestmark = pytest.mark.workflow

# the tiny config with one keep fraction (tests/data/tiny.yaml has two): what the tests below
# check does not need a second one, and a test adds one; and a derived method (a modifier over a
# built-in one) beside the two of tiny.yaml
MODELS, KS, ORDERS = ["tiny_standard", "tiny_l2"], [0.1], 2
METHODS = ["gradient", "random", "gradient+blur1"]
GRADIENT_METHODS = 2  # the methods that explain a target: gradient and gradient+blur1
IMPUTATIONS = ["mean", "noisy_linear"]
FIGURE_KINDS = [
    "methods", "ranking", "imputation", "noretrain", "attributions", "localization", "sanity",
]  # fmt: skip
FIGURES = [f"{kind}-blockdigits" for kind in FIGURE_KINDS]
FIGURE_RULES = {f"figure_{kind}" for kind in FIGURE_KINDS}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A copy of the workflow after a complete run of the tiny config."""
    workdir = copy_workflow(tmp_path_factory.mktemp("finished"))
    set_config(workdir, experiment={"keep_fractions": KS, "methods": METHODS})
    result = snakemake(workdir, "--cores", "2")
    (workdir / "run.log").write_text(result.stdout + result.stderr)
    return workdir


@pytest.fixture
def copy_of_finished(finished, tmp_path):
    """A private copy of the finished tree, mtimes and .snakemake metadata included."""
    return shutil.copytree(finished, tmp_path / "copy", symlinks=True)


def test_tables_have_a_row_per_retrained_model_and_aggregate(finished):
    runs = pd.read_parquet(finished / "results" / "metrics.parquet")
    expected_runs = len(MODELS) * len(METHODS) * len(IMPUTATIONS) * len(KS) * ORDERS
    assert len(runs) == expected_runs
    for column in [
        "dataset", "model", "architecture", "training_mode", "base_seed", "method", "imputation",
        "ranking", "retrain_architecture", "order", "keep_fraction", "retrain_seed",
        "test_accuracy", "test_accuracy_last_epoch", "selected_epoch", "epochs", "wall_seconds",
        "config_fingerprint",
    ]:  # fmt: skip
        assert column in runs.columns, column
    assert set(runs["training_mode"]) == {"standard", "pgd_l2"}
    assert runs["test_accuracy"].between(0, 1).all()
    assert (runs["epochs"] == 3).all() and runs["selected_epoch"].between(1, 3).all()
    assert runs["config_fingerprint"].nunique() == expected_runs  # every run has its own config

    assert set(runs["imputation"]) == set(IMPUTATIONS)
    assert set(runs["retrain_architecture"]) == {"mlp"}

    table = pd.read_parquet(finished / "results" / "diffroar.parquet")
    assert len(table) == len(MODELS) * len(METHODS) * len(IMPUTATIONS) * len(KS)
    row = table.iloc[-1]
    pair = runs[
        (runs["model"] == row["model"])
        & (runs["method"] == row["method"])
        & (runs["imputation"] == row["imputation"])
        & (runs["keep_fraction"] == row["keep_fraction"])
    ].set_index("order")
    assert row["diffroar"] == pytest.approx(
        pair.loc["top", "test_accuracy"] - pair.loc["bottom", "test_accuracy"]
    )
    assert (table["n_runs"] == 1).all()


def test_stores_record_what_produced_them(finished):
    results = finished / "results"
    data = zarr.open_group(str(results / "data" / "blockdigits.zarr"), mode="r")
    assert data.attrs["shape"] == [1, 16, 8] and data.attrs["classes"] == ["0", "1"]
    assert data["train"]["images"].dtype == np.uint8
    signal = data["test"]["signal_on_top"][...]
    assert signal.any() and not signal.all()

    saliency = zarr.open_group(
        str(results / "saliency" / "blockdigits" / "tiny_l2" / "seed0" / "gradient.zarr"), mode="r"
    )
    assert saliency.attrs["method"] == "gradient" and saliency.attrs["model"] == "tiny_l2"
    for split in ("train", "val", "test"):
        assert saliency[split]["attributions"].shape == data[split]["images"].shape

    # no masked store is written: the retrain jobs mask in memory (diffroar.mask.masked_splits)
    assert not (results / "masked").exists()
    random = results / "saliency/blockdigits/tiny_standard/seed0/random.zarr"
    masking = {"ranking": "coordinate", "tiebreak_seed": 0, "keep_fraction": 0.1}
    dataset_path = str(results / "data" / "blockdigits.zarr")
    record, mean = masked_splits(dataset_path, str(random), ["top"], imputation="mean",
                                 splits=("test",), **masking)  # fmt: skip
    assert record["kept_coordinates"] == 13  # round(0.1 * 128)
    run = "retrain/blockdigits/tiny_standard/seed0/random/{}/top-k0.1/retrain0/metrics.json"
    retrained = json.loads((results / run.format("mean")).read_text())
    assert retrained["kept_coordinates"] == 13 and retrained["imputation"] == "mean"
    assert retrained["precision"] == "float32"  # precision auto, on a CPU
    test_images = mean["top"]["test"][0].reshape(len(signal), -1)
    fill = np.float32(data.attrs["pixel_mean"])
    assert ((test_images != fill).sum(axis=1) <= 13).all()
    _, noisy = masked_splits(dataset_path, str(random), ["top"], imputation="noisy_linear",
                             noise=0.01, splits=("test",), **masking)  # fmt: skip
    noisy_images = noisy["top"]["test"][0].reshape(len(signal), -1)
    kept = test_images != fill
    np.testing.assert_array_equal(noisy_images[kept], test_images[kept])  # same ranking
    assert len(np.unique(noisy_images[~kept])) > 100  # filled from neighbours, with noise
    # the retrain-free table measured the base model on these very images
    noretrain = pd.read_parquet(results / "noretrain/blockdigits/tiny_standard/seed0.parquet")
    assert len(noretrain) == len(METHODS) * len(IMPUTATIONS) * len(KS) * ORDERS
    row = noretrain[(noretrain["method"] == "random") & (noretrain["imputation"] == "mean")
                    & (noretrain["order"] == "top")]  # fmt: skip
    model, _ = load_checkpoint(results / "models/blockdigits/tiny_standard/seed0/model.safetensors")
    images, labels = (torch.from_numpy(array) for array in mean["top"]["test"])
    assert row["test_accuracy"].tolist() == [accuracy(model, images, labels)]

    base = json.loads((results / "models/blockdigits/tiny_l2/seed0/metrics.json").read_text())
    assert base["training_mode"] == "pgd_l2" and len(base["history"]) == 3
    assert base["precision"] == "float32" and base["config"]["training"]["precision"] == "auto"
    _, metadata = load_checkpoint(results / "models/blockdigits/tiny_l2/seed0/model.safetensors")
    assert metadata["precision"] == "float32"
    robust = json.loads((results / "models/blockdigits/tiny_l2/seed0/robust.json").read_text())
    assert 0 <= robust["robust_test_accuracy"] <= robust["test_accuracy"] == base["test_accuracy"]
    # the attack that measured it: the training attack's steps, one restart (the defaults)
    assert robust["robust_attack"] == {
        "norm": "l2",
        "eps": 0.5,
        "steps": 2,
        "step_size": 2.5 * 0.5 / 2,
        "restarts": 1,
    }
    assert robust["robust_attack_label"] == "PGD-l2 eps=0.5 steps=2 restarts=1"
    assert not (results / "models/blockdigits/tiny_standard/seed0/robust.json").exists()

    for figure in FIGURES:
        assert (results / "figures" / f"{figure}.png").stat().st_size > 10_000
    localization = pd.read_parquet(results / "localization.parquet")
    assert set(localization["measure"]) == {"signal_mass_share", "null_topk_share"}
    assert len(localization) == len(MODELS) * len(METHODS) * (1 + len(KS))
    assert (results / "logs" / "train" / "blockdigits" / "tiny_l2" / "seed0.log").read_text()


def test_noretrain_table_has_both_curves_for_every_mask(finished):
    table = pd.read_parquet(finished / "results" / "noretrain.parquet")
    assert len(table) == len(MODELS) * len(METHODS) * len(IMPUTATIONS) * len(KS) * ORDERS
    assert set(table["curve"]) == {"LeRF", "MoRF"}
    assert (table.loc[table["order"] == "top", "curve"] == "LeRF").all()
    assert table["test_accuracy"].between(0, 1).all()
    base = json.loads(
        (finished / "results/models/blockdigits/tiny_l2/seed0/metrics.json").read_text()
    )
    unmasked = table.loc[table["model"] == "tiny_l2", "unmasked_test_accuracy"]
    assert (unmasked == base["test_accuracy"]).all()
    row = table[(table["keep_fraction"] == 0.1) & (table["order"] == "top")].iloc[0]
    assert row["removed_fraction"] == pytest.approx(1 - 13 / 128)


def test_a_derived_method_has_its_own_stores_rows_and_attributions(finished):
    results = finished / "results"
    directory = results / "saliency" / "blockdigits" / "tiny_standard" / "seed0"
    blurred = zarr.open_group(str(directory / "gradient+blur1.zarr"), mode="r")
    assert blurred.attrs["method"] == "gradient+blur1"
    assert blurred.attrs["settings"]["target"] == "logit"  # and sigma is in the name
    plain = zarr.open_group(str(directory / "gradient.zarr"), mode="r")
    from scipy import ndimage  # the blur of the stored gradient, plane by plane

    gradient = plain["test"]["attributions"][...]
    expected = ndimage.gaussian_filter(gradient, (0, 0, 1, 1), mode="reflect")
    np.testing.assert_allclose(blurred["test"]["attributions"][...], expected, atol=1e-6)
    run = results / "retrain/blockdigits/tiny_standard/seed0/gradient+blur1/mean/top-k0.1"
    assert json.loads((run / "retrain0/metrics.json").read_text())["method"] == "gradient+blur1"
    table = pd.read_parquet(results / "diffroar.parquet")
    assert len(table[table["method"] == "gradient+blur1"]) == len(MODELS) * len(IMPUTATIONS)


def test_a_masked_store_asked_for_by_path_holds_the_images_the_models_were_retrained_on(
    copy_of_finished,
):
    """No rule reads masked stores; asked for by path, the mask rule writes one, alone, with the
    images the retrain job made in memory (bit for bit)."""
    relative = "results/masked/blockdigits/tiny_standard/seed0/gradient/noisy_linear/top-k0.1.zarr"
    result = snakemake(copy_of_finished, "--cores", "1", relative)
    assert job_counts(result.stdout + result.stderr) == {"mask": 1}
    store = copy_of_finished / relative
    results = copy_of_finished / "results"
    _, masked = masked_splits(
        str(results / "data" / "blockdigits.zarr"),
        str(results / "saliency/blockdigits/tiny_standard/seed0/gradient.zarr"),
        ["top"], keep_fraction=0.1, imputation="noisy_linear", ranking="coordinate",
        tiebreak_seed=0, noise=0.01,
    )  # fmt: skip
    for split, (images, labels) in masked["top"].items():
        stored_images, stored_labels = read_images(store, split)
        np.testing.assert_array_equal(stored_images, images)
        np.testing.assert_array_equal(stored_labels, labels)
    assert planned_jobs(copy_of_finished) == {}  # nothing else is out of date


def test_the_randomisation_check_covers_every_base_model_and_method(finished):
    table = pd.read_parquet(finished / "results" / "sanity.parquet")
    layers = 2  # tiny mlps: Linear(128, 32), Linear(32, 2)
    assert len(table) == len(MODELS) * len(METHODS) * (1 + 2 * layers) * 2  # two measures
    assert set(table["method"]) == set(METHODS) and set(table["model"]) == set(MODELS)
    assert set(table["layer"]) == {"none", "network.1", "network.3"}
    random = table[table["method"] == "random"]
    assert random["mean"].abs().max() < 0.1  # fresh draws for every randomised model
    for method in ("gradient", "gradient+blur1"):
        rows = table[(table["method"] == method) & (table["measure"] == "spearman_abs")]
        assert (rows[rows["mode"] == "trained"]["mean"] == 1).all()
        assert (rows[rows["mode"] == "cascading"]["mean"] < 1).all()
    per_model = finished / "results" / "sanity" / "blockdigits" / "tiny_l2" / "seed0.parquet"
    assert len(pd.read_parquet(per_model)) == len(table) // len(MODELS)


def test_complete_run_has_nothing_to_do(copy_of_finished):
    assert planned_jobs(copy_of_finished) == {}


def test_reordering_config_keys_reruns_nothing(copy_of_finished):
    path = copy_of_finished / "tiny.yaml"
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # source order
    assert planned_jobs(copy_of_finished) == {}
    reordered = {key: config[key] for key in reversed(config)}
    reordered["models"]["tiny_l2"] = dict(reversed(config["models"]["tiny_l2"].items()))
    path.write_text(yaml.safe_dump(reordered, sort_keys=False))
    assert planned_jobs(copy_of_finished) == {}


def test_adding_a_k_reruns_only_that_k_and_the_tables(copy_of_finished):
    set_config(copy_of_finished, experiment={"keep_fractions": [*KS, 0.3]})
    jobs = planned_jobs(copy_of_finished)
    per_k = len(MODELS) * len(METHODS) * len(IMPUTATIONS)  # one job writes both orders
    assert jobs["retrain"] == per_k and "mask" not in jobs
    assert {"train", "saliency", "data", "figure_attributions"}.isdisjoint(jobs)
    assert jobs["metrics"] == 1 and jobs["figure_methods"] == 1
    assert jobs["noretrain"] == len(MODELS)


def test_adding_an_imputation_reruns_only_its_masks_and_what_follows(copy_of_finished):
    set_config(copy_of_finished, experiment={"imputations": [*IMPUTATIONS, "channel_mean"]})
    jobs = planned_jobs(copy_of_finished)
    per_imputation = len(MODELS) * len(METHODS) * len(KS)
    assert jobs["retrain"] == per_imputation and "mask" not in jobs
    assert {"train", "saliency", "data", "localization"}.isdisjoint(jobs)


def test_adding_the_mask_only_control_reruns_only_its_masks_retrains_and_tables(copy_of_finished):
    set_config(copy_of_finished, experiment={"imputations": [*IMPUTATIONS, "mask_only"]})
    jobs = planned_jobs(copy_of_finished)
    per_mask = len(MODELS) * len(METHODS) * len(KS)  # once per mask, not per imputation
    assert jobs["retrain"] == per_mask and "mask" not in jobs
    assert jobs["metrics"] == 1 and jobs["figure_methods"] == 1
    # the base models never saw binary masks: no retrain-free rows for the control
    assert {"train", "saliency", "data", "localization", "noretrain"}.isdisjoint(jobs)
    assert "figure_attributions" not in jobs


def test_changing_the_imputation_noise_reruns_only_noisy_linear(copy_of_finished):
    set_config(copy_of_finished, masking={"noise": 0.05})
    jobs = planned_jobs(copy_of_finished)
    assert jobs["retrain"] == len(MODELS) * len(METHODS) * len(KS)  # not the mean masks
    assert jobs["noretrain"] == len(MODELS)  # its noisy_linear rows
    assert {"saliency", "train", "mask", "sanity"}.isdisjoint(jobs)


def test_naming_a_retraining_model_reruns_only_retraining(copy_of_finished):
    set_config(copy_of_finished, retraining={"model": "tiny_standard"})
    jobs = planned_jobs(copy_of_finished)
    # tiny_l2's masks are now retrained as tiny_standard models; tiny_standard's retrainings
    # already were
    assert jobs["retrain"] == len(METHODS) * len(IMPUTATIONS) * len(KS)
    assert {"train", "saliency", "mask", "noretrain"}.isdisjoint(jobs)


def test_changing_a_saliency_parameter_reruns_that_saliency_not_training(copy_of_finished):
    set_config(copy_of_finished, saliency={"seed": 7})  # only `random` depends on it
    jobs = planned_jobs(copy_of_finished)
    assert jobs["saliency"] == len(MODELS)
    assert jobs["retrain"] == len(MODELS) * len(IMPUTATIONS) * len(KS)
    assert "train" not in jobs and "data" not in jobs


def test_changing_a_method_setting_reruns_only_the_methods_that_use_it(copy_of_finished):
    set_config(copy_of_finished, saliency={"steps": 8, "noise_std": 0.3})  # IG and SmoothGrad
    assert planned_jobs(copy_of_finished) == {}
    # speed only: attributions do not depend on the batch sizes
    set_config(copy_of_finished, saliency={"batch_size": 7, "internal_batch_size": 3})
    assert planned_jobs(copy_of_finished) == {}
    set_config(copy_of_finished, saliency={"target": "loss"})  # every gradient method
    # gradient and gradient+blur1, not random
    assert planned_jobs(copy_of_finished)["saliency"] == len(MODELS) * GRADIENT_METHODS
    set_config(copy_of_finished, saliency={"target": "predicted"})
    jobs = planned_jobs(copy_of_finished)
    assert jobs["saliency"] == len(MODELS) * GRADIENT_METHODS
    assert "train" not in jobs and "robust" not in jobs


def test_a_new_blur_reruns_only_its_saliency_and_what_follows(copy_of_finished):
    # a modifier's settings are in its name: another sigma is another method, computed alone
    methods = ["gradient", "random", "gradient+blur2"]
    set_config(copy_of_finished, experiment={"methods": methods})
    jobs = planned_jobs(copy_of_finished)
    assert jobs["saliency"] == len(MODELS)  # gradient+blur2 only: not gradient, not random
    assert jobs["retrain"] == len(MODELS) * len(IMPUTATIONS) * len(KS) and "mask" not in jobs
    assert {"data", "train", "robust"}.isdisjoint(jobs)
    # the checks that attribute with every method of a base model, and the tables
    assert jobs["sanity"] == jobs["noretrain"] == len(MODELS) and jobs["metrics"] == 1
    # a final abs would rank as its base does; a bad sigma stops before any job
    for bad, message in [
        ("gradient+abs", "ranks every coordinate as 'gradient' does"),
        ("gradient+blur0", "blur's sigma must be > 0"),
    ]:
        set_config(copy_of_finished, experiment={"methods": ["gradient", bad]})
        result = snakemake(copy_of_finished, "--dry-run", check=False)
        assert result.returncode != 0 and message in result.stderr
        assert "Traceback" not in result.stderr


def test_a_stronger_eval_attack_reruns_only_the_robust_accuracy(copy_of_finished):
    set_config(copy_of_finished, training={"eval_attack": {"steps": 5, "restarts": 2}})
    assert planned_jobs(copy_of_finished) == {"robust": 1, "all": 1}  # the pgd model only


def test_editing_figure_code_reruns_only_figures(copy_of_finished):
    touch_module(copy_of_finished, "figures")
    jobs = planned_jobs(copy_of_finished)
    assert set(jobs) == FIGURE_RULES | {"all"}


def test_editing_training_code_reruns_training_and_everything_after(copy_of_finished):
    touch_module(copy_of_finished, "train")
    jobs = planned_jobs(copy_of_finished)
    assert "data" not in jobs
    assert jobs["train"] == len(MODELS)
    assert jobs["saliency"] == len(MODELS) * len(METHODS)
    assert jobs["retrain"] == len(MODELS) * len(METHODS) * len(IMPUTATIONS) * len(KS)
    assert jobs["noretrain"] == len(MODELS) and jobs["sanity"] == len(MODELS)
    assert all(jobs[rule] == 1 for rule in FIGURE_RULES)


def test_editing_a_rule_script_reruns_its_jobs_and_what_follows(copy_of_finished):
    """A rule runs its script through diffroar.client, the script's sha256 in the command:
    Snakemake's code trigger sees an edit (and only an edit: touching it reruns nothing)."""
    script = copy_of_finished / "workflow" / "scripts" / "retrain.py"
    os.utime(script)
    assert planned_jobs(copy_of_finished) == {}
    script.write_text(script.read_text() + "\n# edited by a test\n")
    result = snakemake(copy_of_finished, "--dry-run")
    jobs = job_counts(result.stdout + result.stderr)
    assert jobs["retrain"] == len(MODELS) * len(METHODS) * len(IMPUTATIONS) * len(KS)
    assert {"data", "train", "saliency", "sanity", "robust", "mask", "noretrain"}.isdisjoint(jobs)
    assert "Code has changed since last execution" in result.stdout + result.stderr
    script.write_text(script.read_text().removesuffix("\n# edited by a test\n"))
    # the job's threads and resources are in its JSON, not in what decides reruns
    set_config(copy_of_finished, resources={"retrain": {"threads": 2, "mem_mb": 3000}})
    assert planned_jobs(copy_of_finished) == {}


def test_one_figure_builds_only_what_it_needs(tmp_path):
    workdir = copy_workflow(tmp_path / "fresh")
    set_config(workdir, experiment={"datasets": ["digits", "blockdigits"]})
    # the same two dry runs show the note on --cores beyond the CPUs, and only there
    cpus = available_cpus()
    for target, cores in [
        ("results/figures/methods-blockdigits.png", str(cpus + 6)),
        ("figure_methods_blockdigits", "all"),
    ]:
        result = snakemake(workdir, "--dry-run", "--cores", cores, target)
        assert "results/data/blockdigits.zarr" in result.stdout
        assert "digits.zarr" not in result.stdout.replace("blockdigits.zarr", "")
        assert "figure_attributions" not in result.stdout
        assert "rule noretrain" not in result.stdout
        notes = [line for line in result.stderr.splitlines() if "note: --cores" in line]
        assert notes == ([cores_note(cpus + 6, cpus)] if cores != "all" else []), result.stderr


def test_a_figure_rebuilds_without_the_files_of_other_datasets(copy_of_finished):
    # the run checks the files of the datasets whose stores it builds, not of every dataset
    set_config(
        copy_of_finished,
        datasets={"cifar": {"loader": "cifar10", "root": "data/cifar10"}},
        experiment={"datasets": ["blockdigits", "cifar"]},
    )
    before = tree_digest(copy_of_finished / "results")
    result = snakemake(copy_of_finished, "--cores", "1", check=False)
    assert result.returncode != 0
    assert "config error: datasets.cifar.root = 'data/cifar10': does not exist" in result.stderr
    assert tree_digest(copy_of_finished / "results") == before
    figure = copy_of_finished / "results" / "figures" / "methods-blockdigits.png"
    figure.unlink()
    snakemake(copy_of_finished, "--cores", "1", "figure_methods_blockdigits")
    assert figure.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("experiment={'keep_fractions': [1.5], 'datasets': ['blockdigits'], 'models': "
         "['tiny_standard'], 'methods': ['gradient']}",
         "experiment.keep_fractions[0] = 1.5: must be <= 1"),
        ("experiment={'keep_fractions': [0.1], 'datasets': ['blockdigits'], 'models': "
         "['tiny_standard'], 'methods': ['saliency_map']}",
         "experiment.methods[0] = 'saliency_map': must be one of 'gradient', 'gradient_x_input'"),
        ("experiment={'keep_fractions': [0.1], 'datasets': ['blockdigits'], 'models': "
         "['tiny_standard'], 'methods': ['gradcam']}",
         "experiment.methods = ['gradcam']: gradcam needs convolutional layers, and model "
         "'tiny_standard' is an 'mlp'"),
        ("experiment={'keep_fractions': [0.1], 'datasets': ['mnist'], 'models': "
         "['tiny_standard'], 'methods': ['gradient']}",
         "experiment.datasets[0] = 'mnist': not defined under `datasets`"),
        ("datasets={'blockdigits': {'loader': 'blockmnist', 'root': '/nonexistent/mnist'}}",
         "datasets.blockdigits.root = '/nonexistent/mnist': does not exist; dataset "
         "'blockdigits' needs mnist's files train-images-idx3-ubyte"),
        ("datasets={'blockdigits': {'loader': 'svhn', 'root': 'data/svhn', 'download': True}}",
         "datasets.blockdigits.download = true: torchvision could not download svhn into "
         "'data/svhn'"),
        ("models={'tiny_l2': {'architecture': 'mlp', 'training': {'mode': 'pgd', 'norm': 'l2', "
         "'eps': -1}}}",
         "models.tiny_l2.training.eps = -1: must be > 0"),
    ],
)  # fmt: skip
def test_bad_config_stops_before_any_job_with_one_message(copy_of_finished, override, message):
    before = tree_digest(copy_of_finished / "results")
    result = snakemake(copy_of_finished, "--cores", "1", "--config", override, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"config error: {message}" in output
    assert "Traceback" not in output
    assert tree_digest(copy_of_finished / "results") == before


def test_report_has_every_figure_with_its_caption(copy_of_finished):
    snakemake(copy_of_finished, "--report", "report.html")
    report = (copy_of_finished / "report.html").read_text()
    # captions are rendered with their wildcards
    assert "DiffROAR(k) on blockdigits" in report and "feature leakage" in report
    assert "noisy_linear" in report and "LeRF" in report


def test_lint_is_clean(copy_of_finished):
    result = snakemake(copy_of_finished, "--lint")
    assert "Congratulations" in result.stdout + result.stderr
