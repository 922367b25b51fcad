"""User attribution methods (the config's `methods` section): user functions, Captum classes by
name and precomputed attributions behind the one registry of diffroar.saliency
(`resolve_method`), the contract a function is called under, their fingerprints (the module's
file and the precomputed files are hashed without running anything), and bad plug-ins: each
stops before any job where the config can tell (a `config error:` line), else its saliency job
fails naming the method and leaves the output it would replace as it was.

Most cases call the resolver and run_saliency on the tiny stores of tests/test_saliency.py; the
config cases go through the Snakefile's parse-time check in process over the shared finished
small run (tests/small_runs.py), one through the snakemake command line.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from diffroar import saliency
from diffroar.config import precomputed_path, user_method_settings
from diffroar.plugins import content_sha256, find_module_file, source_sha256
from diffroar.saliency import (
    Settings,
    UserMethodError,
    gradient,
    gradient_x_input,
    resolve_method,
    run_saliency,
)
from diffroar.store import SPLITS, read_split
from scipy import ndimage
from small_runs import clean_run, copy_run
from test_bad_values import Case, check_in_process, run_case
from test_saliency import (
    DEFAULT,
    MEAN,
    STD,
    _checkpoint,
    _inputs,
    _seeds,
    linear_model,
    tiny_stores,
)
from workflow_helpers import JOB_LINES, REPO, tree_state

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

__all__ = ["tiny_stores"]  # the fixture, imported for the tests below
SALIENCY_CFG = {"target": "logit", "seed": 0}
EXAMPLE = "examples.my_attributions"

CONTRACT = """
    import numpy as np

    CALLS = []

    def record(model, inputs, targets, *, seeds, scale=1.0):
        CALLS.append({
            "training": model.training,
            "inputs": inputs.detach().cpu().numpy().copy(),
            "device": inputs.device.type,
            "targets": targets.cpu().numpy().copy(),
            "seeds": np.array(seeds),
        })
        return inputs.double() * scale  # float64: any real floating dtype is taken
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """write(module, source): a user module in the working directory of the test (the run's),
    its name; the modules are forgotten afterwards."""
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))

    def write(name: str, source: str) -> str:
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    yield write
    for name, module in list(sys.modules.items()):
        if str(folder) in str(getattr(module, "__file__", "") or ""):
            del sys.modules[name]


def _settings(entry: dict, **saliency_cfg) -> dict:
    """The saliency settings the rule passes for a user method `entry` of the tiny base model."""
    return user_method_settings(entry, SALIENCY_CFG | saliency_cfg, "tiny", "lin", 0)


def _run(stores, out: Path, entry: dict, batch_size: int = 2, **saliency_cfg) -> dict:
    """run_saliency of user method `entry` on the tiny stores; split -> attributions."""
    _, dataset, checkpoint = stores
    settings = _settings(entry, **saliency_cfg) | {"batch_size": batch_size}
    run_saliency(str(dataset), str(checkpoint), str(out), method="mine", settings=settings)
    return {split: read_split(out, split)["attributions"] for split in SPLITS}


def _gradient_rows(model, labels) -> np.ndarray:
    """d logit_y / d x of the tiny linear model: W[y] / std, (N, 2, 3, 3)."""
    weight = model.network[-1].weight.detach().numpy()
    return weight[labels].reshape(-1, 2, 3, 3) / np.array(STD, np.float32).reshape(1, 2, 1, 1)


def _images(dataset, split) -> tuple[np.ndarray, np.ndarray]:
    stored = read_split(dataset, split)
    return stored["images"].astype(np.float32) / 4.0, stored["labels"]


# --- one registry, one signature ---------------------------------------------------------------


def test_resolve_method_gives_built_ins_and_user_methods_behind_one_signature(plugins):
    assert resolve_method("gradient") is gradient
    builtin = list(inspect.signature(gradient).parameters)
    plugins("mine", "def fn(model, inputs, targets):\n    return inputs\n")
    for user in ({"function": "mine:fn", "params": {}}, {"captum": "Saliency", "params": {}}):
        method = resolve_method("mine", user)
        parameters = inspect.signature(method).parameters
        assert list(parameters) == builtin
        assert parameters["seeds"].kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(ValueError, match="no attribution method 'mine'"):
        resolve_method("mine")


def test_a_user_function_is_called_as_the_contract_says(plugins, tiny_stores, tmp_path):
    model, dataset, _ = tiny_stores
    plugins("contract", CONTRACT)
    entry = {"function": "contract:record", "params": {"scale": 2.0}}
    stored = _run(tiny_stores, tmp_path / "out.zarr", entry, batch_size=2)
    calls = sys.modules["contract"].CALLS
    assert [len(call["inputs"]) for call in calls] == [2, 2, 1] * len(SPLITS)  # batch_size chunks
    for index, split in enumerate(SPLITS):
        images, labels = _images(dataset, split)
        chunks = calls[3 * index : 3 * index + 3]
        for call in chunks:
            assert call["training"] is False and call["device"] == "cpu"
            assert call["inputs"].dtype == np.float32 and call["targets"].dtype == np.int64
            assert call["seeds"].dtype == np.uint64
            assert 0 <= call["inputs"].min() and call["inputs"].max() <= 1
        np.testing.assert_array_equal(np.concatenate([c["inputs"] for c in chunks]), images)
        np.testing.assert_array_equal(np.concatenate([c["targets"] for c in chunks]), labels)
        seeds = saliency.image_seeds(0, 0, split, range(len(images)))
        np.testing.assert_array_equal(np.concatenate([c["seeds"] for c in chunks]), seeds)
        np.testing.assert_allclose(stored[split], 2.0 * images)
        assert stored[split].dtype == np.float32
    attributes = dict(zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs)
    assert attributes["settings"]["user_method"]["function"] == "contract:record"
    assert attributes["settings"]["user_method"]["source_sha256"] == source_sha256(
        "contract:record"
    )


def test_a_user_function_explains_the_predicted_class_with_target_predicted(
    plugins, tiny_stores, tmp_path
):
    model, dataset, _ = tiny_stores
    plugins("contract", CONTRACT)
    _run(tiny_stores, tmp_path / "out.zarr", {"function": "contract:record"}, target="predicted")
    calls = sys.modules["contract"].CALLS
    targets = np.concatenate([call["targets"] for call in calls[:3]])
    images, labels = _images(dataset, "train")
    with torch.no_grad():
        predicted = model(torch.from_numpy(images)).argmax(1).numpy()
    np.testing.assert_array_equal(targets, predicted)
    assert (predicted != labels).any()  # the case tells the targets apart


def test_the_example_edge_gradient_is_the_gradient_weighted_by_edge_strength(monkeypatch):
    monkeypatch.chdir(REPO)  # examples/ is found from the repository root, as in a run
    model = linear_model()
    images, labels = _inputs(6)
    method = resolve_method("edge", {"function": f"{EXAMPLE}:edge_gradient", "params": {}})
    values = method(model, images, labels, Settings(batch_size=4), seeds=_seeds(images))
    edges = np.stack(
        [[ndimage.gaussian_gradient_magnitude(p, 1.0) for p in image] for image in images.double()]
    )
    weights = edges / edges.max(axis=(2, 3), keepdims=True)
    expected = _gradient_rows(model, labels.numpy()) * weights
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_seeds_make_a_stochastic_user_function_reproducible_and_batch_independent(
    monkeypatch, tiny_stores, tmp_path
):
    monkeypatch.chdir(REPO)
    model, dataset, _ = tiny_stores
    relu = _checkpoint(tmp_path / "relu.safetensors", 0, model_seed=4, hidden_sizes=[6])
    stores = (model, dataset, relu)
    entry = {"function": f"{EXAMPLE}:noisy_gradient", "params": {"samples": 3, "std": 0.3}}
    one = _run(stores, tmp_path / "one.zarr", entry, batch_size=1)
    five = _run(stores, tmp_path / "five.zarr", entry, batch_size=5)
    other_seed = _run(stores, tmp_path / "seed.zarr", entry, seed=1)
    for split in SPLITS:
        np.testing.assert_allclose(one[split], five[split], rtol=1e-5, atol=1e-7)
        assert np.abs(one[split]).sum() > 0
    assert not np.allclose(one["test"], other_seed["test"])


# --- Captum classes by name --------------------------------------------------------------------


@pytest.mark.parametrize("target", ["logit", "loss"])
def test_captum_saliency_by_name_is_the_built_in_gradient(target):
    model = linear_model()
    images, labels = _inputs(7)
    settings = Settings(batch_size=3, target=target, channel_mean=tuple(MEAN))
    by_name = resolve_method("s", {"captum": "Saliency", "params": {"abs": False}})
    expected = gradient(model, images, labels, settings, seeds=_seeds(images))
    torch.testing.assert_close(by_name(model, images, labels, settings, seeds=_seeds(images)),
                               expected)  # fmt: skip


@pytest.mark.parametrize(
    "user",
    [
        # lists become the tuples Captum wants
        {"captum": "Occlusion", "params": {"sliding_window_shapes": [1, 1, 1]}},
        {"captum": "FeatureAblation", "params": {"baselines": "zero"}},
        # with no noise, every sample of a linear model's GradientShap is (x - baseline) * grad
        {"captum": "GradientShap", "params": {"n_samples": 3, "stdevs": 0.0, "baselines": "zero"}},
    ],
    ids=lambda user: user["captum"],
)
def test_captum_perturbation_and_shap_classes_of_a_linear_model_are_input_times_gradient(user):
    model = linear_model()
    images, labels = _inputs(5)
    settings = Settings(batch_size=2, channel_mean=tuple(MEAN))
    values = resolve_method("c", user)(model, images, labels, settings, seeds=_seeds(images))
    expected = gradient_x_input(model, images, labels, settings, seeds=_seeds(images))
    torch.testing.assert_close(values, expected, rtol=1e-4, atol=1e-6)


def test_captum_gradient_shap_mean_baseline_and_seeded_noise(tiny_stores, tmp_path):
    model, dataset, _ = tiny_stores
    exact = {
        "captum": "GradientShap",
        "params": {"n_samples": 4, "stdevs": 0.0, "baselines": "mean"},
    }
    stored = _run(tiny_stores, tmp_path / "exact.zarr", exact)
    for split in SPLITS:
        images, labels = _images(dataset, split)
        mean = np.array(MEAN, np.float32).reshape(1, 2, 1, 1)
        expected = (images - mean) * _gradient_rows(model, labels)
        np.testing.assert_allclose(stored[split], expected, rtol=1e-4, atol=1e-6)
    noisy = {
        "captum": "GradientShap",
        "params": {"n_samples": 4, "stdevs": 0.2, "baselines": "zero"},
    }
    first = _run(tiny_stores, tmp_path / "first.zarr", noisy)
    again = _run(tiny_stores, tmp_path / "again.zarr", noisy)
    other = _run(tiny_stores, tmp_path / "other.zarr", noisy, seed=3)
    for split in SPLITS:  # reproducible: the generators are seeded per chunk from image seeds
        np.testing.assert_array_equal(first[split], again[split])
    assert not np.allclose(first["train"], other["train"])


# --- precomputed attributions ------------------------------------------------------------------


def _precomputed(dataset, scale: float = 3.0) -> dict[str, np.ndarray]:
    """Attributions (float64) of every image of the tiny dataset: its pixels times `scale`."""
    return {split: _images(dataset, split)[0].astype(np.float64) * scale for split in SPLITS}


def _write_npy(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, values in arrays.items():
        np.save(folder / f"{split}.npy", values)
    return folder


def _write_zarr(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    root = zarr.open_group(str(path), mode="w")
    for split, values in arrays.items():
        root.create_group(split).create_array("attributions", data=values, chunks=(2, 2, 3, 3))
    return path


@pytest.mark.parametrize("layout", ["npy", "zarr"])
def test_precomputed_attributions_are_checked_and_copied(tiny_stores, tmp_path, layout):
    _, dataset, _ = tiny_stores
    arrays = _precomputed(dataset)
    write = _write_npy if layout == "npy" else _write_zarr
    path = write(tmp_path / f"theirs.{layout}", arrays)
    stored = _run(tiny_stores, tmp_path / "out.zarr", {"attributions": str(path)})
    for split in SPLITS:
        np.testing.assert_array_equal(stored[split], arrays[split].astype(np.float32))
    attributes = dict(zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs)
    assert attributes["settings"]["user_method"]["sha256"] == content_sha256(
        path, None if layout == "zarr" else ["train.npy", "val.npy", "test.npy"]
    )
    assert attributes["target"] is None  # nothing was explained here


def test_a_precomputed_path_names_its_base_model():
    entry = {"attributions": "theirs/{dataset}/{model}-seed{seed}.zarr"}
    assert precomputed_path(entry, "blockdigits", "cnn", 2) == "theirs/blockdigits/cnn-seed2.zarr"
    assert precomputed_path({"attributions": "one.zarr"}, "blockdigits", "cnn", 2) == "one.zarr"


# --- fingerprints --------------------------------------------------------------------------------


def test_a_function_fingerprint_follows_its_module_file_and_params_only(plugins):
    source = "def fn(model, inputs, targets, sigma=1.0):\n    return inputs * sigma\n"
    plugins("mine", source)
    entry = {"function": "mine:fn", "params": {"sigma": 1.0}}
    first = _settings(entry)
    plugins("other", "x = 1\n")  # another module of the folder
    os.utime("mine.py", ns=(1, 1))  # the same bytes, another modification time
    assert _settings(entry) == first
    assert _settings(entry | {"params": {"sigma": 2.0}}) != first
    assert _settings(entry, target="predicted") != first
    plugins("mine", source + "# edited\n")
    edited = _settings(entry)
    assert edited["user_method"]["source_sha256"] != first["user_method"]["source_sha256"]
    assert {k: v for k, v in edited.items() if k != "user_method"} == {
        k: v for k, v in first.items() if k != "user_method"
    }


def test_finding_and_hashing_a_module_never_runs_it(plugins, tmp_path):
    marker = tmp_path / "ran"
    plugins("loud", f"open({str(marker)!r}, 'w').write('ran')\ndef fn(m, x, t):\n    return x\n")
    plugins("pkg_mod", "")
    (Path("pkg") / "sub").mkdir(parents=True)
    Path("pkg/__init__.py").write_text(f"open({str(marker)!r}, 'w').write('package ran')\n")
    Path("pkg/sub/__init__.py").write_text("")
    Path("pkg/sub/methods.py").write_text("def fn(m, x, t):\n    return x\n")
    assert find_module_file("loud") == Path.cwd() / "loud.py"
    assert find_module_file("pkg.sub.methods") == Path.cwd() / "pkg" / "sub" / "methods.py"
    _settings({"function": "loud:fn"})
    _settings({"function": "pkg.sub.methods:fn"})
    assert not marker.exists()


def test_a_precomputed_fingerprint_follows_the_content_of_its_files(tiny_stores, tmp_path):
    _, dataset, _ = tiny_stores
    arrays = _precomputed(dataset)
    for write, name in ((_write_npy, "theirs"), (_write_zarr, "theirs.zarr")):
        path = write(tmp_path / name, arrays)
        first = _settings({"attributions": str(path)})
        write(path, arrays)  # the same bytes again (new modification times)
        assert _settings({"attributions": str(path)}) == first
        (path / "notes.txt").write_text("not part of the npy layout's content")
        changed = write(path, arrays | {"val": arrays["val"] + 1})
        assert _settings({"attributions": str(changed)}) != first
    # a zarr store's hash covers every file under it, its chunks included
    chunk = next(p for p in sorted((tmp_path / "theirs.zarr" / "test").rglob("*")) if p.is_file()
                 and p.name != "zarr.json")  # fmt: skip
    before = content_sha256(tmp_path / "theirs.zarr")
    chunk.write_bytes(chunk.read_bytes() + b"\0")
    assert content_sha256(tmp_path / "theirs.zarr") != before


# --- bad plug-ins in the job: the job names the method and writes nothing --------------------

BAD_FUNCTIONS = [
    ("module not importable", "nowhere:fn", None,
     r"cannot import module 'nowhere' \(not found .*\): ModuleNotFoundError"),
    ("no such callable", "bad:missing", "def fn(m, x, t):\n    return x\n",
     r"module 'bad' \(.*bad\.py\) defines no 'missing'"),
    ("not callable", "bad:fn", "fn = object()\n",
     r"bad:fn \(.*\) is not callable \(its type: object\)"),
    ("module raises on import", "bad:fn", "raise RuntimeError('no GPU here')\n",
     r"cannot import module 'bad' \(.*bad\.py\): RuntimeError: no GPU here"),
    ("callable raises", "bad:fn", "def fn(m, x, t):\n    raise KeyError('sigma')\n",
     r"raised KeyError: 'sigma'"),
    ("wrong output shape", "bad:fn", "def fn(m, x, t):\n    return x[:, :1]\n",
     r"returned shape \(2, 1, 3, 3\) for inputs of shape \(2, 2, 3, 3\)"),
    ("integer dtype", "bad:fn", "def fn(m, x, t):\n    return (x * 4).long()\n",
     r"returned dtype torch.int64: must be real floating"),
    ("complex dtype", "bad:fn",
     "import torch\ndef fn(m, x, t):\n    return x.to(torch.complex64)\n",
     r"returned dtype torch.complex64: must be real floating"),
    ("numpy booleans", "bad:fn", "def fn(m, x, t):\n    return x.numpy() > 0.5\n",
     r"returned dtype bool: must be real floating"),
    ("a list", "bad:fn", "def fn(m, x, t):\n    return x.tolist()\n",
     r"returned a list: must be a torch tensor or numpy array"),
    ("NaN attributions", "bad:fn", "def fn(m, x, t):\n    return x * float('nan')\n",
     r"returned NaN or infinite attributions"),
    ("beyond float32", "bad:fn",
     "import numpy as np\ndef fn(m, x, t):\n    return np.full(x.shape, 1e300)\n",
     r"returned NaN or infinite attributions \(as float32\)"),
]  # fmt: skip
BAD_CAPTUM = [
    ("unknown captum class", {"captum": "Gradient"}, r"captum 'Gradient' is not an attribution"),
    ("captum class needing a layer", {"captum": "LayerGradCam"}, r"cannot be constructed"),
    ("captum attribute() refusing params", {"captum": "Occlusion", "params": {"strides": [1]}},
     r"\(captum Occlusion\) raised TypeError"),
]  # fmt: skip


def _refused(stores, tmp_path, settings: dict, pattern: str) -> str:
    """run_saliency over an existing good store must raise UserMethodError naming the method
    (`mine`) and matching `pattern`, and leave that store exactly as it was."""
    _, dataset, checkpoint = stores
    out = tmp_path / "out.zarr"
    if not out.exists():
        run_saliency(str(dataset), str(checkpoint), str(out), method="gradient", settings={})
    before = tree_state(out)
    with pytest.raises(UserMethodError) as raised:
        run_saliency(
            str(dataset), str(checkpoint), str(out), method="mine",
            settings=settings | {"batch_size": 2},
        )  # fmt: skip
    message = str(raised.value)
    assert "user method 'mine'" in message, message
    assert re.search(pattern, message), (pattern, message)
    assert tree_state(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name) == []
    return message


@pytest.mark.parametrize("case", BAD_FUNCTIONS, ids=[case[0] for case in BAD_FUNCTIONS])
def test_a_bad_user_function_fails_its_job_naming_it(case, plugins, tiny_stores, tmp_path):
    _, spec, source, pattern = case
    if source is not None:
        plugins("bad", source)
    user = {"function": spec, "params": {}}  # no source hash: the job alone decides
    _refused(tiny_stores, tmp_path, SALIENCY_CFG | {"user_method": user}, pattern)


@pytest.mark.parametrize("case", BAD_CAPTUM, ids=[case[0] for case in BAD_CAPTUM])
def test_a_bad_captum_method_fails_its_job_naming_it(case, tiny_stores, tmp_path):
    _, user, pattern = case
    _refused(tiny_stores, tmp_path, SALIENCY_CFG | {"user_method": user}, pattern)


def test_a_module_edited_after_the_workflow_hashed_it_is_refused(plugins, tiny_stores, tmp_path):
    plugins("mine", "def fn(m, x, t):\n    return x\n")
    settings = _settings({"function": "mine:fn"})
    plugins("mine", "def fn(m, x, t):\n    return -x\n")
    _refused(tiny_stores, tmp_path, settings, r"its module changed after the workflow hashed it")


def _bad_precomputed(arrays: dict[str, np.ndarray], case: str) -> dict[str, np.ndarray]:
    if case == "wrong count":
        return arrays | {"val": arrays["val"][:-1]}
    if case == "wrong shape":
        return arrays | {"test": arrays["test"][:, :1]}
    if case == "non-finite":
        return arrays | {"train": np.where(arrays["train"] > 0.5, np.inf, arrays["train"])}
    if case == "integer dtype":
        return arrays | {"train": arrays["train"].astype(np.int32)}
    return {split: values for split, values in arrays.items() if split != "test"}


BAD_PRECOMPUTED = [
    ("wrong count", r"4 val attributions for the 5 val images"),
    ("wrong shape", r"test attributions have shape \(5, 1, 3, 3\): must be \(N, C, H, W\) = "
     r"\(5, 2, 3, 3\)"),
    ("non-finite", r"train attributions 0:5 hold NaN or infinite values"),
    ("integer dtype", r"train attributions have dtype int32: must be real floating"),
    ("missing split", r"no readable test attributions"),
]  # fmt: skip


@pytest.mark.parametrize("layout", ["npy", "zarr"])
@pytest.mark.parametrize("case", BAD_PRECOMPUTED, ids=[case[0] for case in BAD_PRECOMPUTED])
def test_bad_precomputed_attributions_fail_the_job_before_any_is_used(
    case, layout, tiny_stores, tmp_path
):
    _, dataset, _ = tiny_stores
    arrays = _bad_precomputed(_precomputed(dataset), case[0])
    write = _write_npy if layout == "npy" else _write_zarr
    path = write(tmp_path / f"theirs.{layout}", arrays)
    user = {"attributions": str(path)}  # no hash: the job checks what it finds
    _refused(tiny_stores, tmp_path, {"user_method": user}, case[1])


def test_missing_or_changed_precomputed_attributions_fail_the_job(tiny_stores, tmp_path):
    _, dataset, _ = tiny_stores
    path = _write_npy(tmp_path / "theirs", _precomputed(dataset))
    settings = _settings({"attributions": str(path)})
    np.save(path / "val.npy", _precomputed(dataset, scale=2.0)["val"])
    _refused(tiny_stores, tmp_path, settings, r"changed after the workflow hashed it")
    missing = {"user_method": {"attributions": str(tmp_path / "gone")}}
    _refused(tiny_stores, tmp_path, missing, r"attributions '.*gone'\): does not exist")


# --- bad plug-ins before any job: the Snakefile's config check --------------------------------

MODULE = """
THRESHOLD = 0.5


def fn(model, inputs, targets):
    return inputs
"""
NAMES = "must be one of 'gradient', 'gradient_x_input'"


def config_case(name: str, expected: list[str], methods: dict, listed=("mine",), **sections):
    """A Case of tests/test_bad_values.py: user `methods` and experiment.methods = gradient and
    `listed`, merged over the finished small run's tiny.yaml."""
    experiment = {"methods": ["gradient", *listed]}
    config = {"methods": methods, "experiment": experiment, **sections}
    return Case(name, "plug-in", expected, config)


CONFIG_CASES = [
    config_case(
        "a built-in's name",
        ["methods.gradient: 'gradient' is a built-in method"],
        {"gradient": {"function": "mine:fn"}},
        listed=(),
    ),
    config_case(
        "two kinds",
        ["methods.mine = ", "give exactly one of function", "it gives function, captum"],
        {"mine": {"function": "mine:fn", "captum": "Saliency"}},
    ),
    config_case("no kind", ["it gives none"], {"mine": {"params": {"sigma": 1}}}),
    config_case(
        "init of a function",
        ["methods.mine.init = {'x': 1}: not used by a function method"],
        {"mine": {"function": "mine:fn", "init": {"x": 1}}},
    ),
    config_case(
        "a parameter the stage sets",
        ["methods.mine.params.targets = 3: set by the saliency stage itself"],
        {"mine": {"function": "mine:fn", "params": {"targets": 3}}},
    ),
    config_case(
        "module not importable",
        [
            "methods.mine.function = 'nowhere:fn': module 'nowhere' not found: no module "
            "'nowhere' in the working directory or PYTHONPATH (",
        ],
        {"mine": {"function": "nowhere:fn"}},
    ),
    config_case(
        "not module:callable",
        ["methods.mine.function = 'mine.fn': 'mine.fn' is not 'module:callable'"],
        {"mine": {"function": "mine.fn"}},
    ),
    config_case(
        "a module that does not parse",
        [
            "methods.mine.function = 'broken:fn': ",
            "broken.py, line 1: syntax error: expected ':'",
        ],
        {"mine": {"function": "broken:fn"}},
    ),
    config_case(
        "no such callable",
        ["mine.py) defines no 'edge'", "(its functions and classes: fn)"],
        {"mine": {"function": "mine:edge"}},
    ),
    config_case(
        "not callable",
        ["mine.THRESHOLD in ", "is a literal value, not callable"],
        {"mine": {"function": "mine:THRESHOLD"}},
    ),
    config_case(
        "unknown captum class",
        [
            "methods.mine.captum = 'GradientShapp': not a class of captum.attr",
            "(did you mean 'GradientShap'?)",
        ],
        {"mine": {"captum": "GradientShapp"}},
    ),  # fmt: skip
    config_case(
        "captum class of a layer",
        ["methods.mine.captum = 'LayerGradCam': explains a layer or a neuron"],
        {"mine": {"captum": "LayerGradCam"}},
    ),
    config_case(
        "precomputed path missing",
        [
            "methods.mine.attributions = 'gone.zarr': 'gone.zarr' does not exist",
            "(the attributions of dataset 'blockdigits', model 'tiny_standard', base seed 0)",
        ],
        {"mine": {"attributions": "gone.zarr"}},
    ),  # fmt: skip
    config_case(
        "precomputed split missing",
        ["'theirs' has no val.npy (it needs train.npy, val.npy, test.npy)"],
        {"mine": {"attributions": "theirs"}},
    ),
    config_case(
        "precomputed store of another layout",
        ["is neither a zarr store", "nor a directory with train.npy"],
        {"mine": {"attributions": "mine.py"}},
    ),
    config_case(
        "unknown placeholder",
        ["unknown placeholder {method}; allowed: {dataset}, {model}, {seed}"],
        {"mine": {"attributions": "theirs/{method}"}},
    ),
    config_case(
        "a user function asked for the loss",
        ["saliency.target = 'loss': the user functions mine (in experiment.methods)"],
        {"mine": {"function": "mine:fn"}},
        saliency={"target": "loss"},
    ),
    config_case(
        "experiment lists an undefined name",
        [
            "experiment.methods[1] = 'mien': ",
            NAMES,
            "or a name under `methods` (defined: mine)",
            "(did you mean 'mine'?)",
        ],
        {"mine": {"function": "mine:fn"}},
        listed=("mien",),
    ),  # fmt: skip
    config_case(
        "a name that is no path part",
        ["methods: the name 'edge-grad' must match"],
        {"edge-grad": {"function": "mine:fn"}},
        listed=(),
    ),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The shared finished small run (do not modify)."""
    return clean_run(tmp_path_factory)


@pytest.fixture
def run_copy(finished, tmp_path, monkeypatch) -> Path:
    """A copy of the finished run with user modules and an incomplete precomputed folder in its
    working directory, which the test runs in."""
    workdir = copy_run(finished, tmp_path / "run")
    (workdir / "mine.py").write_text(MODULE)
    (workdir / "broken.py").write_text("def fn(model, inputs, targets)\n    return inputs\n")
    _write_npy(workdir / "theirs", {"train": np.zeros((1, 1, 16, 8))})
    monkeypatch.chdir(workdir)
    return workdir


@pytest.mark.workflow
@pytest.mark.parametrize("case", CONFIG_CASES, ids=str)
def test_a_bad_plug_in_stops_the_config_check_with_one_line(case, run_copy):
    before = tree_state(run_copy / "results")
    message = check_in_process(case, run_copy)
    assert message is not None, f"{case.name}: every check passed"
    assert "\n" not in message and message.startswith("config error: "), message
    for fragment in case.expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert tree_state(run_copy / "results") == before


@pytest.mark.workflow
def test_every_kind_of_user_method_passes_the_config_check_without_running_code(run_copy):
    marker = run_copy / "ran"
    (run_copy / "loud.py").write_text(f"open({str(marker)!r}, 'w')\n{MODULE}")
    _write_npy(run_copy / "theirs", _precomputed_like(run_copy))
    methods = {
        "mine": {"function": "loud:fn", "params": {"sigma": 1.0}},
        "example": {"function": f"{EXAMPLE}:edge_gradient"},
        "shap": {"captum": "GradientShap", "params": {"baselines": "zero"}},
        "theirs": {"attributions": "theirs"},
    }
    case = config_case("good", [], methods, listed=tuple(methods))
    assert check_in_process(case, run_copy) is None
    assert not marker.exists()


def _precomputed_like(workdir: Path) -> dict[str, np.ndarray]:
    """Zero attributions of the shape of every split of the run's dataset store."""
    store = workdir / "results" / "data" / "blockdigits.zarr"
    return {split: np.zeros(read_split(store, split)["images"].shape) for split in SPLITS}


@pytest.mark.workflow
def test_a_bad_plug_in_on_the_command_line_starts_no_job(finished, tmp_path):
    case = config_case("module not importable", [], {"mine": {"function": "nowhere:fn"}})
    outcome = run_case(case, finished, tmp_path / "cli")
    errors = [line for line in outcome.output.splitlines() if "config error" in line]
    assert outcome.returncode != 0 and "Traceback" not in outcome.output, outcome.output
    assert len(errors) == 1 and "methods.mine.function = 'nowhere:fn'" in errors[0], errors
    assert not JOB_LINES.search(outcome.output), outcome.output
    assert outcome.after == outcome.before


# --- modifiers over user methods (diffroar.modifiers) --------------------------------------------


def test_modifiers_apply_to_a_user_function_as_to_a_built_in(plugins):
    """`mine+abs+blur1`: the user function's maps, made absolute, then blurred per channel with
    sigma 1 (as `gradient+abs+blur1` treats the gradient)."""
    plugins("mine", "def fn(model, inputs, targets):\n    return inputs - 0.5\n")
    user = {"function": "mine:fn", "params": {}}
    images, labels = _inputs(count=3)
    plain = resolve_method("mine", user)(
        linear_model(), images, labels, DEFAULT, seeds=_seeds(images)
    )
    derived = resolve_method("mine+abs+blur1", user)
    values = derived(linear_model(), images, labels, DEFAULT, seeds=_seeds(images)).numpy()
    expected = np.stack(
        [
            np.stack([ndimage.gaussian_filter(np.abs(plane), 1.0) for plane in image])
            for image in plain.numpy()
        ]
    )
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def test_the_config_takes_modifiers_on_user_methods_but_not_on_precomputed_ones(plugins, tmp_path):
    import yaml
    from diffroar.config import ConfigError, validate_config

    plugins("mine", "def fn(model, inputs, targets):\n    return inputs\n")
    folder = _write_npy(
        tmp_path / "theirs", {s: np.zeros((1, 1, 8, 8), np.float32) for s in SPLITS}
    )
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["methods"] = {"mine": {"function": "mine:fn"}, "theirs": {"attributions": str(folder)}}
    config["experiment"]["methods"] = ["gradient", "mine+blur1", "mine+smoothgrad"]
    validated = validate_config(config)
    assert validated["experiment"]["methods"] == ["gradient", "mine+blur1", "mine+smoothgrad"]
    config["experiment"]["methods"] = ["gradient", "theirs+blur1"]
    with pytest.raises(ConfigError, match="'theirs' is precomputed attributions, used as they are"):
        validate_config(config)
