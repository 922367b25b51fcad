"""User architectures (`architecture: module:callable`) and imported checkpoints
(`checkpoint: path`): the builder lookup, the wrapping, the import of both key layouts and both
file formats, the fingerprints, and the bad plug-ins, each refused with a message that names the
model and the file (issue 16, items 3 to 5). Unit tests call the functions directly on small
files; one tiny workflow run (tests/data/tiny-user.yaml) takes a user model and an imported one to
the DiffROAR table, and dry runs over it show what an edit reruns."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from diffroar.config import ConfigError, model_file_hashes, validate_config
from diffroar.data import prepare, read_attributes
from diffroar.import_checkpoint import CheckpointError, run_import
from diffroar.models import (
    ARCHITECTURES,
    Normalize,
    architecture_builder,
    build_model,
    cnn,
    load_checkpoint,
    model_spec,
)
from diffroar.plugins import PluginError, find_module_file, load_callable
from diffroar.saliency import _gradcam_layer
from diffroar.train import accuracy, load_tensors, run_train
from safetensors.torch import save_file
from snakemake.utils import update_config
from torch import nn
from workflow_helpers import REPO, copy_workflow, job_counts, snakemake

torch.set_num_threads(1)

EXAMPLE = REPO / "examples" / "my_nets.py"
DIGITS = {"loader": "digits", "classes": [0, 1], "val_fraction": 0.15, "test_fraction": 0.2,
          "split_seed": 0}  # fmt: skip
USER = {
    "architecture": "my_nets:build",
    "params": {"channels": 4},
    "training": {"mode": "standard"},
}
TRAINING = {"epochs": 1, "batch_size": 64, "learning_rate": 0.01, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A dataset store of the digits 0 and 1 (1x8x8 images, 2 classes)."""
    path = tmp_path_factory.mktemp("store") / "digits.zarr"
    prepare("digits", dict(DIGITS), path)
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The working directory of a run with examples/my_nets.py in it; the modules it imports are
    forgotten afterwards (an edited module must be imported again)."""
    shutil.copy(EXAMPLE, tmp_path / "my_nets.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def forget(module: str = "my_nets") -> None:
    sys.modules.pop(module, None)


def write_module(workdir: Path, source: str, name: str = "bad_nets") -> str:
    (workdir / f"{name}.py").write_text(source)
    forget(name)
    return name


def spec_of(model_cfg: dict, store: Path) -> dict:
    return model_spec(model_cfg, read_attributes(store))


# --- the builder lookup and the wrapping -------------------------------------------------------


def test_one_lookup_gives_built_in_and_user_builders_one_signature(workdir, store):
    assert architecture_builder("cnn") is ARCHITECTURES["cnn"] is cnn
    builder = architecture_builder("my_nets:build")
    network = builder([1, 8, 8], 2, channels=4)
    assert isinstance(network, nn.Module) and network.conv1.out_channels == 4
    # the same call as a built-in's: build(input_shape, num_classes, **options)
    assert architecture_builder("mlp")([1, 8, 8], 2, hidden_sizes=[3])(
        torch.zeros(5, 1, 8, 8)
    ).shape == (5, 2)


def test_a_user_model_is_wrapped_like_a_built_in(workdir, store):
    spec = spec_of(USER, store)
    attributes = read_attributes(store)
    digest = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert spec["params"] == {"channels": 4} and spec["source_sha256"] == digest
    assert spec["input_shape"] == [1, 8, 8] and spec["num_classes"] == 2
    model = build_model(spec)
    assert list(dict(model.named_children())) == ["normalize", "network"]
    assert isinstance(model.normalize, Normalize)
    mean = torch.tensor(attributes["channel_mean"]).view(1, -1, 1, 1)
    torch.testing.assert_close(model.normalize.mean, mean)
    images = torch.rand(3, 1, 8, 8)  # pixels in [0, 1]: the network sees them normalised
    torch.testing.assert_close(model(images), model.network(model.normalize(images)))
    assert model(images).shape == (3, 2)


def test_a_user_model_trains_and_its_checkpoint_rebuilds_it(workdir, store):
    checkpoint, metrics = workdir / "model.safetensors", workdir / "metrics.json"
    run_train(str(store), str(checkpoint), str(metrics), dataset="digits", model_name="mine",
              model_cfg=USER, training_cfg=TRAINING, seed=0, config_fingerprint="f")  # fmt: skip
    record = json.loads(metrics.read_text())
    assert record["source"] == "trained" and record["architecture"] == "my_nets:build"
    forget()  # a later job imports the module afresh
    model, metadata = load_checkpoint(checkpoint)
    assert metadata["spec"]["architecture"] == "my_nets:build"
    assert metadata["spec"]["source_sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert accuracy(model, *load_tensors(store, "test", torch.device("cpu"))) == pytest.approx(
        record["test_accuracy"]
    )


def test_a_checkpoint_of_an_edited_module_is_refused(workdir, store):
    checkpoint = workdir / "model.safetensors"
    run_train(str(store), str(checkpoint), str(workdir / "m.json"), dataset="digits",
              model_name="mine", model_cfg=USER, training_cfg=TRAINING, seed=0,
              config_fingerprint="f")  # fmt: skip
    with (workdir / "my_nets.py").open("a") as handle:
        handle.write("\n# edited\n")
    forget()
    with pytest.raises(PluginError, match=r"model\.safetensors.*my_nets\.py is not the source"):
        load_checkpoint(checkpoint)


def test_a_module_is_found_without_running_it(workdir):
    (workdir / "loud.py").write_text("raise SystemExit('ran')\ndef build(): pass\n")
    assert find_module_file("loud") == workdir / "loud.py"
    cfg = {"architecture": "loud:build"}
    assert (
        model_file_hashes(cfg)["source_sha256"]
        == hashlib.sha256((workdir / "loud.py").read_bytes()).hexdigest()
    )
    assert "loud" not in sys.modules


def test_gradcam_names_the_missing_layer_of_a_user_network(workdir, store):
    model = build_model(spec_of(USER, store))
    assert _gradcam_layer(model, "conv2") is model.network.conv2
    with pytest.raises(ValueError, match=r"'conv9' is not a layer.*conv1, conv2"):
        _gradcam_layer(model, "conv9")


# --- fingerprints --------------------------------------------------------------------------------


def test_fingerprints_change_with_the_source_and_the_file_only(workdir):
    weights = workdir / "weights.safetensors"
    save_file({"a": torch.zeros(2)}, str(weights))
    cfg = {**USER, "checkpoint": str(weights)}
    first = model_file_hashes(cfg)
    assert set(first) == {"source_sha256", "checkpoint_sha256"}
    os.utime(workdir / "my_nets.py", (1, 1))  # a touch changes no hash
    os.utime(weights, (1, 1))
    (workdir / "other.py").write_text("x = 1\n")  # nor does another module
    assert model_file_hashes(cfg) == first
    moved = workdir / "moved.safetensors"
    shutil.copy(weights, moved)
    assert model_file_hashes({**cfg, "checkpoint": str(moved)}) == first
    with (workdir / "my_nets.py").open("a") as handle:
        handle.write("\n# edited\n")
    assert model_file_hashes(cfg)["source_sha256"] != first["source_sha256"]
    save_file({"a": torch.ones(2)}, str(weights))
    assert model_file_hashes(cfg)["checkpoint_sha256"] != first["checkpoint_sha256"]
    assert model_file_hashes({"architecture": "cnn"}) == {}  # built-ins keep their fingerprint


# --- imported checkpoints ------------------------------------------------------------------------

CNN = {
    "architecture": "cnn",
    "channels": [3],
    "hidden_sizes": [5],
    "training": {"mode": "standard"},
}


def trained_cnn(store) -> nn.Sequential:
    torch.manual_seed(3)
    model = build_model(spec_of(CNN, store))
    with torch.no_grad():  # weights unlike a fresh seed-0 initialisation
        for parameter in model.parameters():
            parameter.add_(0.1)
    return model.eval()


def save_weights(tensors: dict, path: Path) -> Path:
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    if path.suffix == ".safetensors":
        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return path


def do_import(store, weights, workdir, model_cfg=CNN, name="imp"):
    outputs = workdir / "model.safetensors", workdir / "metrics.json"
    run_import(str(store), str(weights), *map(str, outputs), dataset="digits", model_name=name,
               model_cfg=model_cfg, seed=0, config_fingerprint="f")  # fmt: skip
    return outputs


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("layout", ["network", "wrapped"])
def test_import_of_both_layouts_and_formats(workdir, store, suffix, layout):
    source = trained_cnn(store)
    tensors = (source.network if layout == "network" else source).state_dict()
    weights = save_weights(tensors, workdir / f"weights{suffix}")
    checkpoint, metrics = do_import(store, weights, workdir)
    model, metadata = load_checkpoint(checkpoint)
    images = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(model(images), source(images))
    record = json.loads(metrics.read_text())
    assert record["source"] == metadata["source"] == "imported"
    assert record["imported_file"] == str(weights) and record["imported_layout"] == layout
    assert record["imported_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    test = load_tensors(store, "test", torch.device("cpu"))
    assert record["test_accuracy"] == accuracy(source, *test)
    assert metadata["config_fingerprint"] == "f" and metadata["model"] == "imp"


def test_import_keeps_the_normalisation_of_a_wrapped_file(workdir, store):
    source = trained_cnn(store)
    source.normalize = Normalize([0.25], [0.5])  # trained behind other statistics
    weights = save_weights(source.state_dict(), workdir / "wrapped.safetensors")
    checkpoint, _ = do_import(store, weights, workdir)
    model, metadata = load_checkpoint(checkpoint)
    assert metadata["spec"]["channel_mean"] == [0.25] and metadata["spec"]["channel_std"] == [0.5]
    images = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(model(images), source(images))


def test_import_of_a_user_architecture(workdir, store):
    torch.manual_seed(1)
    source = build_model(spec_of(USER, store)).eval()
    weights = save_weights(source.network.state_dict(), workdir / "mine.pt")
    checkpoint, _ = do_import(store, weights, workdir, model_cfg=USER)
    forget()
    model, metadata = load_checkpoint(checkpoint)
    assert metadata["spec"]["architecture"] == "my_nets:build"
    images = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(images), source(images))


class Holder(nn.Module):
    """A module pickled whole by torch.save: weights_only refuses to load it."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)


def _bad_weights(kind: str, store, path: Path) -> Path:
    network = trained_cnn(store).network.state_dict()
    if kind == "missing keys":
        return save_weights({k: v for k, v in network.items() if k != "classifier.bias"}, path)
    if kind == "unexpected keys":
        return save_weights(network | {"extra.weight": torch.zeros(2)}, path)
    if kind == "wrong shapes":
        return save_weights(network | {"fc1.bias": torch.zeros(7)}, path)
    if kind == "wrong class count":  # a cnn trained for 3 classes; the dataset has 2
        return save_weights(cnn([1, 8, 8], 3, [3], [5]).state_dict(), path)
    if kind == "wrong input shape":  # a cnn for 3-channel 8x8 images; the dataset's are 1x8x8
        return save_weights(cnn([3, 8, 8], 2, [3], [5]).state_dict(), path)
    if kind == "non-finite weights":
        return save_weights(network | {"fc1.bias": torch.full((5,), float("nan"))}, path)
    if kind == "pickled object":
        torch.save(Holder(), path)
    elif kind == "not a state dict":
        torch.save({"epoch": 3, "state_dict": network}, path)
    elif kind == "a bare tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "not a weights file":
        path.write_text("layer1: 0.5\n")
    elif kind == "damaged safetensors":
        save_file(network, str(path))
        path.write_bytes(path.read_bytes()[:200])
    return path


BAD_CHECKPOINTS = {
    "missing keys": ["missing keys classifier.bias"],
    "unexpected keys": ["unexpected keys extra.weight"],
    "wrong shapes": ["wrong shapes fc1.bias (7,) (the architecture's: (5,))"],
    "wrong class count": ["classifier.weight (3, 5)", "2 classes"],
    "wrong input shape": ["conv1.weight (3, 3, 3, 3)", "1x8x8 images"],
    "non-finite weights": ["NaN or infinite weights in fc1.bias"],
    "pickled object": [
        "pickles Python objects",
        "(first: test_user_models.Holder)",
        "weights_only=True",
        "state_dict()",
    ],
    "not a state dict": ["not all tensors", "epoch: int", "state_dict: OrderedDict"],
    "a bare tensor": ["holds a Tensor, not a state dict"],
    "not a weights file": ["neither a safetensors file nor a PyTorch state dict"],
    "damaged safetensors": ["cannot read it as safetensors"],
}


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_a_bad_checkpoint_is_refused_naming_the_model_and_the_file(workdir, store, kind):
    suffix = ".safetensors" if kind == "damaged safetensors" else ".pt"
    weights = _bad_weights(kind, store, workdir / f"bad{suffix}")
    with pytest.raises(CheckpointError) as error:
        do_import(store, weights, workdir)
    message = str(error.value)
    assert message.startswith(f"model 'imp': {weights}"), message
    for part in BAD_CHECKPOINTS[kind]:
        assert part in message, (part, message)
    assert not (workdir / "model.safetensors").exists() and not (workdir / "metrics.json").exists()


def test_a_checkpoint_changed_during_the_run_is_refused(workdir, store):
    weights = save_weights(trained_cnn(store).network.state_dict(), workdir / "w.pt")
    with pytest.raises(CheckpointError, match="changed after the workflow computed"):
        do_import(store, weights, workdir, model_cfg=CNN | {"checkpoint_sha256": "0" * 64})


# --- bad user builders, in the job -------------------------------------------------------------

BAD_BUILDERS = {
    "raises on import": ("import not_installed\n", "cannot import module 'bad_nets'"),
    "no such callable": ("def other(): pass\n", "defines no 'build'"),
    "not callable": ("build = 3\n", "is not callable (its type: int)"),
    "builder raises": (
        "def build(input_shape, num_classes):\n    raise RuntimeError('no GPU')\n",
        "raised RuntimeError: no GPU",
    ),
    "not a module": (
        "def build(input_shape, num_classes):\n    return [1, 2]\n",
        "returned a list, not a torch.nn.Module",
    ),
    "wrong class count": (
        "from torch import nn\ndef build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n",
        "gives (1, 10) for one image; it must give (1, 2)",
    ),
    "wrong input shape": (
        "from torch import nn\ndef build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n",
        "fails on one 1x8x8 image",
    ),
}


@pytest.mark.parametrize("case", BAD_BUILDERS)
def test_a_bad_builder_fails_its_job_naming_the_model_and_the_file(workdir, store, case):
    source, expected = BAD_BUILDERS[case]
    module = write_module(workdir, source)
    cfg = {"architecture": f"{module}:build", "params": {}, "training": {"mode": "standard"}}
    checkpoint = workdir / "model.safetensors"
    with pytest.raises(PluginError) as error:
        run_train(str(store), str(checkpoint), str(workdir / "m.json"), dataset="digits",
                  model_name="mine", model_cfg=cfg, training_cfg=TRAINING, seed=0,
                  config_fingerprint="f")  # fmt: skip
    message = str(error.value)
    assert message.startswith("model 'mine': ") and expected in message, message
    assert "bad_nets" in message
    assert not checkpoint.exists()


def test_the_job_imports_from_the_working_directory(workdir, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(workdir))])
    function, path = load_callable("my_nets:build")
    assert path == workdir / "my_nets.py" and callable(function)


# --- bad plug-ins in the config, before any job --------------------------------------------------


def tiny_config(**sections) -> dict:
    """config.yaml with tests/data/tiny.yaml and `sections` merged over it, as Snakemake merges
    --configfile files."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "tests" / "data" / "tiny.yaml").read_text()))
    update_config(config, copy.deepcopy(sections))
    return config


def user_model(**settings) -> dict:
    """Sections that make model `mine`, of the user architecture my_nets:build, the experiment's."""
    return {
        "models": {"mine": {"architecture": "my_nets:build", **settings}},
        "experiment": {"models": ["mine"]},
    }


BAD_CONFIGS = {
    "neither built-in nor module:callable": (
        {"models": {"tiny_standard": {"architecture": "vgg16"}}},
        ["models.tiny_standard.architecture = 'vgg16'", "must be one of 'mlp', 'cnn', 'resnet18'",
         "or a user builder 'module:callable'"],
    ),
    "module not found": (
        user_model(architecture="no_such_nets:build"),
        ["models.mine.architecture = 'no_such_nets:build'", "not found",
         "the working directory or PYTHONPATH"],
    ),
    "no such callable": (
        user_model(architecture="my_nets:bulid"),
        ["models.mine.architecture = 'my_nets:bulid'", "my_nets.py) defines no 'bulid'"],
    ),
    "syntax error": (
        user_model(architecture="broken_nets:build"),
        ["broken_nets.py, line 1: syntax error"],
    ),
    "built-in option on a user architecture": (
        user_model(hidden_sizes=[8]),
        ["models.mine.hidden_sizes = [8]", "not used by the user architecture",
         "under `params`"],
    ),
    "params on a built-in": (
        {"models": {"tiny_standard": {"params": {"depth": 2}}}},
        ["models.tiny_standard.params = {'depth': 2}", "not used by architecture 'mlp'"],
    ),
    "gradcam without a layer": (
        {**user_model(), "experiment": {"models": ["mine"], "methods": ["gradcam"]}},
        ["models.mine: missing key 'gradcam_layer'", "user architecture 'my_nets:build'"],
    ),
    "checkpoint missing": (
        {"models": {"tiny_standard": {"checkpoint": "nowhere.pt"}}},
        ["models.tiny_standard.checkpoint = 'nowhere.pt': no such file",
         "relative to the working directory"],
    ),
    "checkpoint a folder": (
        {"models": {"tiny_standard": {"checkpoint": "."}}},
        ["models.tiny_standard.checkpoint = '.': not a file"],
    ),
    "checkpoint not a weights file": (
        {"models": {"tiny_standard": {"checkpoint": "my_nets.py"}}},
        ["models.tiny_standard.checkpoint = 'my_nets.py'", "neither a safetensors file nor"],
    ),
    "imported model with two base seeds": (
        {"models": {"tiny_standard": {"checkpoint": "weights.pt"}},
         "experiment": {"base_seeds": [0, 1]}},
        ["experiment.base_seeds = [0, 1]", "model 'tiny_standard' is imported", "one base seed"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_bad_plug_in_stops_the_config_check_with_one_line(workdir, case):
    (workdir / "broken_nets.py").write_text("def build(:\n")
    torch.save({"w": torch.zeros(1)}, workdir / "weights.pt")
    sections, expected = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as error:
        validate_config(tiny_config(**sections))
    message = str(error.value)
    assert message.startswith("config error: ") and "\n" not in message, message
    for part in expected:
        assert part in message, (part, message)


def test_a_good_plug_in_config_passes_and_fills_its_defaults(workdir):
    torch.save({"w": torch.zeros(1)}, workdir / "weights.pt")
    sections = user_model(gradcam_layer="conv2")
    sections["experiment"]["methods"] = ["gradcam"]
    config = validate_config(tiny_config(**sections))
    assert config["models"]["mine"]["params"] == {}
    config = validate_config(tiny_config(models={"tiny_l2": {"checkpoint": "weights.pt"}}))
    assert config["models"]["tiny_l2"]["checkpoint"] == "weights.pt"


# --- the workflow: a user model and an imported one to the DiffROAR table ----------------------

RUN_TABLE = "results/diffroar.parquet"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """tests/data/tiny-user.yaml run to the DiffROAR table (one job per stage and model)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("user_models"))
    shutil.copy(EXAMPLE, workdir / "my_nets.py")
    torch.manual_seed(0)
    torch.save(cnn([1, 16, 8], 2, [4], [8]).state_dict(), workdir / "imported.pt")
    result = snakemake(workdir, "--cores", "2", RUN_TABLE, config="tiny-user.yaml")
    (workdir / "run.log").write_text(result.stdout + result.stderr)
    return workdir


@pytest.mark.workflow
def test_a_user_model_and_an_imported_one_reach_the_diffroar_table(finished):
    import pandas as pd

    counts = job_counts((finished / "run.log").read_text())
    assert counts["train"] == 1 and counts["import_checkpoint"] == 1  # the import trains nothing
    table = pd.read_parquet(finished / RUN_TABLE)
    assert sorted(table["model"]) == ["tiny_imported", "tiny_user"]
    assert dict(zip(table["model"], table["architecture"], strict=True)) == {
        "tiny_imported": "cnn",
        "tiny_user": "my_nets:build",
    }
    assert table["diffroar"].between(-1, 1).all()
    metrics = json.loads(
        (finished / "results/models/blockdigits/tiny_imported/seed0/metrics.json").read_text()
    )
    digest = hashlib.sha256((finished / "imported.pt").read_bytes()).hexdigest()
    assert metrics["source"] == "imported" and metrics["imported_sha256"] == digest
    assert 0 <= metrics["test_accuracy"] <= 1


@pytest.mark.workflow
def test_an_edit_reruns_only_the_model_it_belongs_to(finished):
    """One dry run after editing the builder's module and rewriting the checkpoint file with other
    weights but an old mtime: the user model's training and the import rerun with what follows
    them (one chain each), nothing else. The import can only rerun for the file's new sha256."""
    module, weights = finished / "my_nets.py", finished / "imported.pt"
    source, data = module.read_text(), weights.read_bytes()
    try:
        module.write_text(source + "\n# a comment is an edit too\n")
        torch.manual_seed(1)
        torch.save(cnn([1, 16, 8], 2, [4], [8]).state_dict(), weights)
        os.utime(weights, ns=(1, 1))  # older than every output: only the hash can tell
        result = snakemake(finished, "--dry-run", RUN_TABLE, config="tiny-user.yaml")
        assert job_counts(result.stdout) == {
            "train": 1,
            "import_checkpoint": 1,
            **{"saliency": 2, "retrain": 2, "metrics": 1, "combine_table": 1},
        }, result.stdout
    finally:
        module.write_text(source)
        weights.write_bytes(data)
