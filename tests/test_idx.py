"""MNIST-format (IDX) datasets on fixture files written by the tests in the real on-disk format:
the reader, the loaders, BlockMNIST from them, official splits and the config's file checks."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from diffroar.config import (
    ConfigError,
    ensure_data_files,
    missing_data_files,
    validate_config,
)
from diffroar.data import load_idx_collection, prepare, read_attributes, read_idx
from diffroar.datafiles import IDX_FILES, SOURCES
from diffroar.store import SPLITS, read_split
from workflow_helpers import copy_workflow, set_config, snakemake

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = SOURCES["fashion_mnist"].default_root
TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def write_idx(path: Path, array: np.ndarray, gzipped: bool = False) -> Path:
    """`array` as an IDX file: two zero bytes, the type code, the number of dimensions, each
    dimension as a big-endian uint32, then the values big-endian."""
    array = np.asarray(array)
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, TYPE_CODES[big_endian.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + big_endian.tobytes()
    path = path.with_name(path.name + ".gz") if gzipped else path
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def write_collection(root: Path, train=120, test=40, gzipped=True, seed=0) -> dict:
    """Four IDX files of 28x28 uint8 images whose labels are 0..9 in turn; returns the arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        image_file, label_file = IDX_FILES[split]
        write_idx(root / image_file, images, gzipped)
        write_idx(root / label_file, labels, gzipped)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, ">i4", ">f4"])
def test_read_idx_round_trip(tmp_path, gzipped, dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    path = write_idx(tmp_path / "a-idx3-ubyte", array, gzipped)
    read = read_idx(path)
    np.testing.assert_array_equal(read, array)
    assert read.shape == (2, 3, 4) and read.dtype.isnative


def test_read_idx_refuses_truncated_and_foreign_files(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((5, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"shape \(5, 4, 4\).*truncated"):
        read_idx(path)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(other)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(broken)


@pytest.mark.parametrize("gzipped", [False, True])
def test_load_idx_collection_keeps_the_official_splits(tmp_path, gzipped):
    arrays = write_collection(tmp_path, gzipped=gzipped)
    dataset = load_idx_collection("fashion_mnist", tmp_path)
    assert dataset.images.shape == (160, 1, 28, 28) and dataset.images.dtype == np.uint8
    assert dataset.classes[0] == "T-shirt/top" and len(dataset.classes) == 10
    assert dataset.pixel_max == 255.0
    np.testing.assert_array_equal(dataset.official_test, np.arange(160) >= 120)
    np.testing.assert_array_equal(dataset.images[120:, 0], arrays["test"][0])
    np.testing.assert_array_equal(dataset.labels[:120], arrays["train"][1])
    assert load_idx_collection("mnist", tmp_path).classes == [str(d) for d in range(10)]


def test_load_idx_collection_names_a_missing_file(tmp_path):
    write_collection(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="lacks t10k-labels-idx1-ubyte"):
        load_idx_collection("mnist", tmp_path)


def _cfg(loader, root, **extra):
    return {"loader": loader, "root": str(root), "val_fraction": 0.25, "split_seed": 0} | extra


def test_prepare_mnist_uses_the_official_test_split_and_subsets(tmp_path):
    arrays = write_collection(tmp_path / "raw")
    path = tmp_path / "mnist.zarr"
    cfg = _cfg("mnist", tmp_path / "raw", classes=[3, 7], train_size=20, test_size=6)
    prepare("mnist", cfg, path)
    attributes = read_attributes(path)
    assert attributes["shape"] == [1, 28, 28] and attributes["classes"] == ["3", "7"]
    assert attributes["split_sizes"] == {"train": 15, "val": 5, "test": 6}
    test = read_split(path, "test")
    assert sorted(test["labels"].tolist()) == [0, 0, 0, 1, 1, 1]
    official = arrays["test"][0][np.isin(arrays["test"][1], [3, 7])]
    for image in test["images"][:, 0]:  # every test image comes from the official test files
        assert any(np.array_equal(image, candidate) for candidate in official)


@pytest.mark.parametrize(
    ("loader", "on_top"), [("blockmnist", None), ("blockmnist_top", True), ("blockfashion", None)]
)
def test_block_loaders_build_blockmnist_from_the_files(tmp_path, loader, on_top):
    write_collection(tmp_path / "raw", train=200, test=60)
    path = tmp_path / "block.zarr"
    prepare("block", _cfg(loader, tmp_path / "raw", null_patch="square_outline"), path)
    attributes = read_attributes(path)
    assert attributes["shape"] == [1, 56, 28] and attributes["num_classes"] == 2
    assert attributes["block"]["height"] == 28
    positions = np.concatenate([read_split(path, s)["signal_on_top"] for s in SPLITS])
    if on_top:
        assert positions.all()
    else:
        assert positions.any() and not positions.all()


# --- the config's checks, before any job -------------------------------------------------------


def _config(dataset: dict) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["real"] = dataset
    config["experiment"]["datasets"] = ["real"]
    return config


def test_config_accepts_a_folder_with_the_files(tmp_path):
    write_collection(tmp_path)
    config = validate_config(_config({"loader": "blockmnist", "root": str(tmp_path)}))
    dataset = config["datasets"]["real"]
    assert "test_fraction" not in dataset and dataset["val_fraction"] == 0.15
    assert config["datasets"]["digits"]["test_fraction"] == 0.2


def test_a_root_is_required_where_there_is_no_default():
    with pytest.raises(ConfigError) as raised:
        validate_config(_config({"loader": "mnist"}))
    message = str(raised.value)
    assert message.startswith("config error: datasets.real: missing required key 'root'")
    assert "ossci-datasets" in message and "download: true" in message


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda root: root / "nowhere", ["nowhere", "does not exist", "train-images-idx3-ubyte"]),
        (lambda root: write_idx(root / "file", np.zeros(3, np.uint8)), ["is a file, not a folder"]),
        (lambda root: root, ["lacks train-images-idx3-ubyte, train-labels", "MNIST/raw"]),
    ],
)
def test_a_run_stops_when_the_files_are_not_there(tmp_path, make, fragments):
    config = validate_config(_config({"loader": "mnist", "root": str(make(tmp_path))}))
    (note,) = missing_data_files(config)  # validation passes: a dry run needs no data
    assert note.startswith("note: dataset 'real'") and note.endswith("first stops")
    with pytest.raises(ConfigError) as raised:
        ensure_data_files(config, ["real"])
    message = str(raised.value)
    assert message.startswith("config error: datasets.real.root") and "\n" not in message
    for fragment in [*fragments, "ossci-datasets", "download: true"]:
        assert fragment in message, (fragment, message)


def test_files_where_torchvisions_downloader_puts_them_are_found(tmp_path):
    arrays = write_collection(tmp_path / "MNIST" / "raw", gzipped=False)
    config = validate_config(_config({"loader": "mnist", "root": str(tmp_path)}))
    assert missing_data_files(config) == []
    ensure_data_files(config, ["real"])
    loaded = load_idx_collection("mnist", tmp_path)
    np.testing.assert_array_equal(loaded.images[:120, 0], arrays["train"][0])


def test_fashion_mnist_defaults_to_debians_folder():
    config = validate_config(_config({"loader": "fashion_mnist"}))
    assert config["datasets"]["real"]["root"] == DEFAULT_ROOT
    if Path(DEFAULT_ROOT).is_dir():
        ensure_data_files(config, ["real"])
    else:
        with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
            ensure_data_files(config, ["real"])


@pytest.mark.parametrize(
    ("dataset", "fragment"),
    [
        ({"loader": "mnist", "test_fraction": 0.2}, "test_fraction = 0.2: not used by loader"),
        ({"loader": "digits", "root": "/data"}, "root = '/data': not used by loader 'digits'"),
    ],
)
def test_config_refuses_keys_a_loader_does_not_use(tmp_path, dataset, fragment):
    write_collection(tmp_path)
    if dataset["loader"] == "mnist":
        dataset = dataset | {"root": str(tmp_path)}
    with pytest.raises(ConfigError, match=fragment):
        validate_config(_config(dataset))


@pytest.mark.workflow
def test_the_data_rule_builds_a_store_from_the_files(tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    write_collection(tmp_path / "fashion", train=100, test=30)
    dataset = {"loader": "fashion_mnist", "root": str(tmp_path / "fashion"), "test_size": 20}
    set_config(workdir, datasets={"fashion": dataset})
    snakemake(workdir, "--cores", "1", "results/data/fashion.zarr")
    attributes = read_attributes(workdir / "results" / "data" / "fashion.zarr")
    assert attributes["classes"][9] == "Ankle boot"
    assert attributes["split_sizes"] == {"train": 85, "val": 15, "test": 20}
    assert str(tmp_path / "fashion") in attributes["source"]
