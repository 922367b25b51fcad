"""CIFAR-10, SVHN and image-folder datasets on fixture files written by the tests in the real
on-disk formats: the loaders, the data stage on them, and the config's and the run's checks of the
files (with torchvision's downloader faked)."""

from __future__ import annotations

import pickle
import socket
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision.datasets
import yaml
from diffroar.config import ConfigError, ensure_data_files, missing_data_files, validate_config
from diffroar.data import load_cifar10, load_imagefolder, load_svhn, prepare, read_attributes
from diffroar.datafiles import CIFAR10_FILES, SOURCES, SVHN_FILES, files_problem
from diffroar.store import SPLITS, read_split
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
# Class colours of write_imagefolder, in the order its classes are given: training images have
# them, validation images half of them (so a test can tell the splits apart).
PALETTE = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200)]


def write_cifar10(root: Path, train_per_batch=20, test=30, seed=0) -> dict:
    """CIFAR-10's python batches as cifar-10-python.tar.gz unpacks them: data_batch_1..5 and
    test_batch (pickled dicts with `data` (N, 3072) uint8, each row the 1024 red, 1024 green and
    1024 blue values of a 32x32 image in row-major order, and `labels` 0..9 in turn) and
    batches.meta. Returns {split: (data, labels)} of what was written and the label names."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {"train": ([], []), "test": ([], [])}
    batches = [(f"data_batch_{b}", "train", train_per_batch) for b in range(1, 6)]
    for name, split, count in [*batches, ("test_batch", "test", test)]:
        offset = sum(len(labels) for labels in written[split][1])
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = [int(label) for label in (offset + np.arange(count)) % 10]
        batch = {
            "batch_label": f"training batch {name[-1]} of 5"
            if split == "train"
            else ("testing batch 1 of 1"),
            "labels": labels,
            "data": data,
            "filenames": [f"{name}_{i:05d}.png" for i in range(count)],
        }
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[split][0].append(data)
        written[split][1].append(np.asarray(labels))
    meta = {"label_names": CIFAR10_NAMES, "num_cases_per_batch": train_per_batch, "num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    arrays = {split: tuple(map(np.concatenate, parts)) for split, parts in written.items()}
    return arrays | {"label_names": CIFAR10_NAMES}


def write_svhn(root: Path, train=40, test=20, seed=0, splits=("train", "test")) -> dict:
    """SVHN's cropped digits (format 2) as MATLAB files: `X` uint8 (32, 32, 3, N) (height, width,
    channel, image) and `y` uint8 (N, 1) in 1..10, 10 standing for the digit 0 (labels 1..10 in
    turn). Writes the files of `splits`; returns {split: (X, y)}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        images = rng.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)
        labels = (np.arange(count) % 10 + 1).astype(np.uint8)[:, None]
        if split in splits:
            scipy.io.savemat(root / f"{split}_32x32.mat", {"X": images, "y": labels})
        arrays[split] = (images, labels)
    return arrays


def write_imagefolder(
    root: Path, classes=("zebra", "apple", "mango"), per_class=3, sizes=((40, 30), (30, 50))
) -> dict:
    """An ImageNet-style tree: train/<class>/<i>.png and val/<class>/<i>.jpg, image i of size
    sizes[i % len(sizes)] (width, height), each a solid colour: its class's PALETTE colour in
    train, half of it in val. Returns {class: train colour}."""
    colours = {}
    for index, name in enumerate(classes):
        colours[name] = PALETTE[index]
        for split, suffix, scale in (("train", "png", 1), ("val", "jpg", 2)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            colour = tuple(value // scale for value in PALETTE[index])
            for i in range(per_class):
                Image.new("RGB", sizes[i % len(sizes)], colour).save(folder / f"{i}.{suffix}")
    return colours


def _config(dataset: dict) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["real"] = dataset
    config["experiment"]["datasets"] = ["real"]
    # the fixtures' training splits hold a few images: batches must fit in them
    config["training"]["batch_size"] = config["retraining"]["batch_size"] = 4
    return config


def _one_line(raised: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(raised.value)
    assert message.startswith("config error: datasets.real") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- CIFAR-10 ----------------------------------------------------------------------------------


def test_load_cifar10_reads_the_channel_major_rows(tmp_path):
    arrays = write_cifar10(tmp_path)
    dataset = load_cifar10(tmp_path)
    assert dataset.images.shape == (130, 3, 32, 32) and dataset.images.dtype == np.uint8
    assert dataset.classes == CIFAR10_NAMES and dataset.pixel_max == 255.0
    np.testing.assert_array_equal(dataset.official_test, np.arange(130) >= 100)
    train, test = arrays["train"][0], arrays["test"][0]
    # image 47 is row 7 of data_batch_3: green (c = 1) at y = 5, x = 30
    assert dataset.images[47, 1, 5, 30] == train[47, 1024 + 5 * 32 + 30]
    assert dataset.images[100 + 13, 2, 31, 0] == test[13, 2048 + 31 * 32]
    np.testing.assert_array_equal(dataset.images[:100].reshape(100, -1), train)
    np.testing.assert_array_equal(dataset.images[100:, 0], test[:, :1024].reshape(-1, 32, 32))
    np.testing.assert_array_equal(dataset.labels[:100], arrays["train"][1])
    np.testing.assert_array_equal(dataset.labels[100:], arrays["test"][1])
    assert dataset.labels.dtype == np.int64
    assert str(tmp_path.resolve()) in dataset.attributes["source"]


def test_load_cifar10_finds_torchvisions_download_folder(tmp_path):
    arrays = write_cifar10(tmp_path / "cifar-10-batches-py", train_per_batch=4, test=6)
    assert files_problem(SOURCES["cifar10"], tmp_path) is None
    dataset = load_cifar10(tmp_path)
    np.testing.assert_array_equal(dataset.images[20:].reshape(6, -1), arrays["test"][0])
    assert "cifar-10-batches-py" in dataset.attributes["source"]


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_load_cifar10_names_a_corrupt_batch(tmp_path, keep):
    write_cifar10(tmp_path, train_per_batch=4, test=6)
    path = tmp_path / "data_batch_3"
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError, match=r"data_batch_3: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)


def test_load_cifar10_names_a_missing_file(tmp_path):
    write_cifar10(tmp_path, train_per_batch=4, test=6)
    (tmp_path / "test_batch").unlink()
    nested = tmp_path / "cifar-10-batches-py"
    assert files_problem(SOURCES["cifar10"], tmp_path) == f"lacks test_batch (nor does {nested})"
    with pytest.raises(FileNotFoundError, match="lacks test_batch.*expected files data_batch_1"):
        load_cifar10(tmp_path)
    (tmp_path / "batches.meta").unlink()
    assert files_problem(SOURCES["cifar10"], tmp_path).startswith("lacks test_batch, batches.meta")


def test_load_cifar10_names_a_meta_file_without_label_names(tmp_path):
    write_cifar10(tmp_path, train_per_batch=4, test=6)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({"num_vis": 3072}, protocol=2))
    with pytest.raises(ValueError, match="batches.meta"):
        load_cifar10(tmp_path)


# --- SVHN --------------------------------------------------------------------------------------


def test_load_svhn_transposes_and_maps_10_to_0(tmp_path):
    arrays = write_svhn(tmp_path)
    dataset = load_svhn(tmp_path)
    assert dataset.images.shape == (60, 3, 32, 32) and dataset.images.dtype == np.uint8
    assert dataset.classes == [str(d) for d in range(10)]
    np.testing.assert_array_equal(dataset.official_test, np.arange(60) >= 40)
    train_x, train_y = arrays["train"]
    test_x, test_y = arrays["test"]
    assert dataset.images[9, 2, 3, 17] == train_x[3, 17, 2, 9]  # [i, c, y, x] == X[y, x, c, i]
    assert dataset.images[40 + 5, 0, 31, 1] == test_x[31, 1, 0, 5]
    np.testing.assert_array_equal(dataset.images[:40], train_x.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(dataset.images[40:], test_x.transpose(3, 2, 0, 1))
    # y 1..9 stay, y 10 is the digit 0
    assert train_y[9, 0] == 10 and dataset.labels[9] == 0 and dataset.labels[3] == train_y[3, 0]
    np.testing.assert_array_equal(dataset.labels[40:], test_y[:, 0] % 10)
    assert set(dataset.labels.tolist()) == set(range(10))


@pytest.mark.parametrize(
    ("contents", "fragment"),
    [
        ({"y": np.ones((5, 1), np.uint8)}, "not an SVHN .mat file"),
        ({"X": np.zeros((32, 32, 5), np.uint8), "y": np.ones((5, 1))}, r"expected \(H, W, 3, N\)"),
        ({"X": np.zeros((32, 32, 3, 5), np.uint8), "y": np.ones((4, 1))}, r"X \(32, 32, 3, 5\)"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]])}, "outside 0..9"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [1]])}, "outside 0..9"),
    ],
)
def test_load_svhn_refuses_a_foreign_mat_file(tmp_path, contents, fragment):
    write_svhn(tmp_path, splits=("train",))
    scipy.io.savemat(tmp_path / "test_32x32.mat", contents)
    with pytest.raises(ValueError, match=fragment) as raised:
        load_svhn(tmp_path)
    assert "test_32x32.mat" in str(raised.value)


# scipy raises MatReadError for an empty file and IndexError for one cut inside its 128-byte header
@pytest.mark.parametrize("keep", [0, 100, 1000])
def test_load_svhn_names_a_truncated_file(tmp_path, keep):
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ValueError, match="train_32x32.mat: not an SVHN .mat file"):
        load_svhn(tmp_path)


# --- image folders -----------------------------------------------------------------------------


def test_load_imagefolder_resizes_sorted_classes_and_keeps_val_as_test(tmp_path):
    colours = write_imagefolder(tmp_path, per_class=3, sizes=((40, 30), (30, 50), (16, 16)))
    dataset = load_imagefolder(tmp_path, 16)
    assert dataset.images.shape == (18, 3, 16, 16) and dataset.images.dtype == np.uint8
    assert dataset.classes == ["apple", "mango", "zebra"]
    np.testing.assert_array_equal(dataset.official_test, np.arange(18) >= 9)
    np.testing.assert_array_equal(dataset.labels, np.tile(np.repeat([0, 1, 2], 3), 2))
    means = dataset.images.mean(axis=(2, 3))
    for index, label in enumerate(dataset.labels):
        colour = np.array(colours[dataset.classes[label]]) / (2 if index >= 9 else 1)
        np.testing.assert_allclose(means[index], colour, atol=4)  # val is JPEG: nearly exact


def test_load_imagefolder_crops_the_centre_of_the_shorter_side(tmp_path):
    from torchvision import transforms

    wide = np.zeros((32, 48, 3), np.uint8)  # 48 wide: resized to 24x16, 4 columns cut each side
    wide[:, :4] = (255, 0, 0)
    wide[:, 4:-4] = (0, 255, 0)
    wide[:, -4:] = (0, 0, 255)
    wide[:16, 20:28] = (255, 255, 255)  # a mark in the top half of the centre
    tall = np.zeros((50, 30, 3), np.uint8)  # 30 wide: resized to 16x26, 5 rows cut each side
    tall[:, :] = (0, 255, 0)
    tall[:4] = tall[-4:] = (255, 0, 0)
    for split, suffix in (("train", "png"), ("val", "png")):
        for name, pixels in (("tall", tall), ("wide", wide)):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(pixels).save(tmp_path / split / name / f"0.{suffix}")
    Image.new("L", (20, 20), 90).save(tmp_path / "train" / "wide" / "grey.png")
    dataset = load_imagefolder(tmp_path, 16)
    assert dataset.classes == ["tall", "wide"] and dataset.images.shape == (5, 3, 16, 16)
    # train: tall/0.png, wide/0.png, wide/grey.png; val: tall/0.png, wide/0.png
    tall_image, wide_image, grey = dataset.images[:3]
    np.testing.assert_array_equal(dataset.labels, [0, 1, 1, 0, 1])
    # the red and blue margins are cut off, the centre and its mark stay
    assert tall_image[0].max() < 60 and (tall_image[1] == 255).all()
    assert wide_image[1].min() > 200 and wide_image[[0, 2]][:, :, [0, 1, 14, 15]].max() < 60
    assert wide_image[:, :6, 7:9].min() > 200 and wide_image[[0, 2], 10:].max() < 60
    assert (grey == 90).all()  # greyscale becomes RGB
    reference = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16)])
    for index, pixels in ((0, tall), (1, wide), (3, tall), (4, wide)):
        expected = np.asarray(reference(Image.fromarray(pixels))).transpose(2, 0, 1)
        np.testing.assert_array_equal(dataset.images[index], expected)


def test_imagefolder_problems_name_the_folders(tmp_path):
    source = SOURCES["imagefolder"]
    write_imagefolder(tmp_path, per_class=1)
    assert files_problem(source, tmp_path) is None
    (tmp_path / "val" / "apple").rename(tmp_path / "val" / "pear")
    problem = files_problem(source, tmp_path)
    assert problem == "has different class folders in train and val (apple, pear)"
    (tmp_path / "val" / "pear").rename(tmp_path / "val" / "apple")
    for entry in (tmp_path / "val" / "mango").iterdir():
        entry.unlink()
    assert files_problem(source, tmp_path) == "has class folders without images (val/mango)"
    for entry in (tmp_path / "val").rglob("*.jpg"):
        entry.unlink()
    for folder in (tmp_path / "val").iterdir():
        folder.rmdir()
    assert files_problem(source, tmp_path) == "lacks val/<class>/"
    (tmp_path / "val").rmdir()
    assert files_problem(source, tmp_path) == "lacks val/<class>/"
    with pytest.raises(FileNotFoundError, match=r"lacks val/<class>/; expected image folders"):
        load_imagefolder(tmp_path, 16)


# --- the data stage ----------------------------------------------------------------------------


def _prepared(tmp_path, dataset: dict) -> tuple[dict, dict]:
    config = validate_config(_config(dataset))
    ensure_data_files(config, ["real"])
    path = tmp_path / "real.zarr"
    prepare("real", config["datasets"]["real"], path)
    return read_attributes(path), {split: read_split(path, split) for split in SPLITS}


def _rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def test_prepare_cifar10_subsets_classes_and_keeps_the_official_test_split(tmp_path):
    arrays = write_cifar10(tmp_path / "cifar", train_per_batch=20, test=40)
    dataset = {"loader": "cifar10", "root": str(tmp_path / "cifar"), "classes": [3, 5]}
    attributes, splits = _prepared(tmp_path, dataset | {"train_size": 12, "test_size": 4})
    assert attributes["shape"] == [3, 32, 32] and attributes["classes"] == ["cat", "dog"]
    assert attributes["num_classes"] == 2 and attributes["pixel_max"] == 255.0
    assert attributes["split_sizes"] == {"train": 10, "val": 2, "test": 4}
    test_images, test_labels = arrays["test"]
    official = _rows(test_images[np.isin(test_labels, [3, 5])].reshape(-1, 3, 32, 32))
    assert _rows(splits["test"]["images"]) <= official
    assert not (_rows(splits["train"]["images"]) | _rows(splits["val"]["images"])) & official
    assert sorted(splits["test"]["labels"].tolist()) == [0, 0, 1, 1]


def test_prepare_svhn_keeps_the_official_test_split(tmp_path):
    arrays = write_svhn(tmp_path / "svhn", train=60, test=30)
    dataset = {"loader": "svhn", "root": str(tmp_path / "svhn"), "classes": [0, 1, 2]}
    attributes, splits = _prepared(tmp_path, dataset | {"test_size": 6})
    assert attributes["shape"] == [3, 32, 32] and attributes["classes"] == ["0", "1", "2"]
    assert attributes["split_sizes"] == {"train": 15, "val": 3, "test": 6}
    test_x, test_y = arrays["test"]
    official = _rows(test_x.transpose(3, 2, 0, 1)[np.isin(test_y[:, 0] % 10, [0, 1, 2])])
    assert _rows(splits["test"]["images"]) <= official
    assert not _rows(splits["train"]["images"]) & official
    assert sorted(splits["test"]["labels"].tolist()) == [0, 0, 1, 1, 2, 2]


def test_prepare_imagefolder_resizes_and_tests_on_val(tmp_path):
    write_imagefolder(tmp_path / "tree", per_class=8)
    dataset = {"loader": "imagefolder", "root": str(tmp_path / "tree"), "image_size": 12}
    attributes, splits = _prepared(tmp_path, dataset | {"classes": [2, 0], "train_size": 12})
    assert attributes["shape"] == [3, 12, 12] and attributes["classes"] == ["zebra", "apple"]
    assert attributes["num_classes"] == 2
    assert attributes["split_sizes"] == {"train": 10, "val": 2, "test": 16}
    # zebra is red (channel 0), apple green; val images (the test split) are half as bright
    for split, level in (("train", 200), ("val", 200), ("test", 100)):
        images, labels = splits[split]["images"], splits[split]["labels"]
        channel = np.where(labels == 0, 0, 1)
        brightness = images.max(axis=(1, 2, 3)).astype(int)
        assert (np.abs(brightness - level) <= 4).all(), (split, brightness)
        assert (images.mean(axis=(2, 3)).argmax(axis=1) == channel).all(), split


# --- the config's checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "fragments"),
    [
        ({"loader": "cifar10"}, ["missing required key 'root'", "data_batch_1", "download: true"]),
        ({"loader": "svhn"}, ["missing required key 'root'", "ufldl.stanford.edu"]),
        (
            {"loader": "imagefolder", "image_size": 64},
            ["missing required key 'root'", "train/<class>/", "arrange the images"],
        ),
        ({"loader": "imagefolder", "root": "/x"}, ["missing required key 'image_size'"]),
        ({"loader": "cifar10", "root": "/x", "image_size": 32}, ["image_size = 32: not used"]),
        (
            {"loader": "imagefolder", "root": "/x", "image_size": 64, "download": True},
            ["download = True: not used by loader 'imagefolder' (nothing to download: arrange"],
        ),
        ({"loader": "digits", "download": True}, ["download = True: not used by loader 'digits'"]),
        ({"loader": "cifar10", "root": "/x", "test_fraction": 0.2}, ["test_fraction = 0.2"]),
        ({"loader": "cifar10", "root": "/x", "classes": [1, 10]}, ["classes[1] = 10: must be <="]),
    ],
)
def test_config_refuses_what_a_loader_cannot_use(dataset, fragments):
    with pytest.raises(ConfigError) as raised:
        validate_config(_config(dataset))
    message = _one_line(raised, *fragments)
    if "missing required key 'root'" in message and dataset["loader"] == "imagefolder":
        assert "download: true" not in message


@pytest.mark.parametrize(
    "dataset",
    [
        {"loader": "cifar10"},
        {"loader": "svhn", "download": True},
        {"loader": "imagefolder", "image_size": 32},
    ],
)
def test_config_validates_without_the_files_and_notes_them(tmp_path, dataset):
    root = tmp_path / "nowhere"
    config = validate_config(_config(dataset | {"root": str(root)}))
    assert config["datasets"]["real"]["root"] == str(root)
    then = "downloads them" if dataset.get("download") else "stops"
    assert missing_data_files(config) == [
        f"note: dataset 'real': {root} does not exist; a run that builds its store first {then}"
    ]
    {"cifar10": write_cifar10, "svhn": write_svhn, "imagefolder": write_imagefolder}[
        dataset["loader"]
    ](root)
    assert missing_data_files(config) == []
    ensure_data_files(config, ["real"])


def test_ensure_data_files_refuses_a_class_beyond_the_folders(tmp_path):
    write_imagefolder(tmp_path, per_class=1)
    dataset = {"loader": "imagefolder", "root": str(tmp_path), "image_size": 16, "classes": [0, 3]}
    config = validate_config(_config(dataset))
    with pytest.raises(ConfigError) as raised:
        ensure_data_files(config, ["real"])
    _one_line(raised, "classes[1] = 3: must be < 3", f"class folders in {tmp_path}/train")


@pytest.mark.parametrize(
    ("loader", "fragments"),
    [
        (
            "cifar10",
            ["lacks data_batch_1, data_batch_2", "cifar-10-batches-py", "set `download: true`"],
        ),
        ("svhn", ["lacks train_32x32.mat, test_32x32.mat", "set `download: true`"]),
        ("imagefolder", ["lacks train/<class>/, val/<class>/", "arrange the images"]),
    ],
)
def test_ensure_data_files_names_dataset_root_files_and_how_to_obtain_them(
    tmp_path, loader, fragments
):
    dataset = {"loader": loader, "root": str(tmp_path)}
    dataset |= {"image_size": 16} if loader == "imagefolder" else {}
    config = validate_config(_config(dataset))
    with pytest.raises(ConfigError) as raised:
        ensure_data_files(config, ["digits", "real"])  # digits has no files: skipped
    message = _one_line(raised, f"datasets.real.root = '{tmp_path}'", "dataset 'real' needs")
    for fragment in [*fragments, SOURCES[loader].how_to_obtain]:
        assert fragment in message, (fragment, message)
    assert ("download: true" in message) == (loader != "imagefolder")


# --- downloads (torchvision's downloader faked) -------------------------------------------------


class FakeCIFAR10:
    """torchvision.datasets.CIFAR10 as its download leaves the files: root/cifar-10-batches-py."""

    calls: list = []

    def __init__(self, root, train=True, download=False, **kwargs):
        assert download
        FakeCIFAR10.calls.append({"root": root, "train": train} | kwargs)
        write_cifar10(Path(root) / "cifar-10-batches-py", train_per_batch=4, test=6)


class FakeSVHN:
    """torchvision.datasets.SVHN as its download leaves the files: root/<split>_32x32.mat."""

    calls: list = []

    def __init__(self, root, split="train", download=False, **kwargs):
        assert download
        FakeSVHN.calls.append({"root": root, "split": split} | kwargs)
        write_svhn(Path(root), train=20, test=10, splits=(split,))


class Offline:
    def __init__(self, root, download=False, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")


class Empty:
    def __init__(self, root, download=False, **kwargs):
        pass  # "downloads" nothing


@pytest.mark.parametrize(
    ("loader", "fake", "calls", "sizes"),
    [
        ("cifar10", FakeCIFAR10, [{"train": True}], (20, 6)),
        ("svhn", FakeSVHN, [{"split": "train"}, {"split": "test"}], (20, 10)),
    ],
)
def test_ensure_data_files_downloads_where_the_loader_reads(
    tmp_path, monkeypatch, loader, fake, calls, sizes
):
    monkeypatch.setattr(torchvision.datasets, fake.__name__.removeprefix("Fake"), fake)
    monkeypatch.setattr(fake, "calls", [])
    root = tmp_path / "new" / "folder"  # created by the download
    config = validate_config(_config({"loader": loader, "root": str(root), "download": True}))
    ensure_data_files(config, ["real"])
    assert fake.calls == [{"root": str(root)} | call for call in calls]
    dataset = {"cifar10": load_cifar10, "svhn": load_svhn}[loader](root)
    assert dataset.images.shape == (sum(sizes), 3, 32, 32)
    assert dataset.official_test.sum() == sizes[1]
    ensure_data_files(config, ["real"])  # the files are there: no second download
    assert len(fake.calls) == len(calls)


@pytest.mark.parametrize(("loader", "name"), [("cifar10", "CIFAR10"), ("svhn", "SVHN")])
def test_ensure_data_files_reports_a_failed_download(tmp_path, monkeypatch, loader, name):
    monkeypatch.setattr(torchvision.datasets, name, Offline)
    config = validate_config(_config({"loader": loader, "root": str(tmp_path), "download": True}))
    with pytest.raises(ConfigError) as raised:
        ensure_data_files(config, ["real"])
    _one_line(
        raised,
        "datasets.real.download = true: torchvision could not download",
        f"into '{tmp_path}'",
        "URLError",
        "Name or service not known",
        "without a network",
        ", ".join(SOURCES[loader].files),
    )
    monkeypatch.setattr(torchvision.datasets, name, Empty)
    with pytest.raises(ConfigError) as raised:
        ensure_data_files(config, ["real"])
    _one_line(raised, f"root = '{tmp_path}': lacks {SOURCES[loader].files[0]}")


def test_ensure_data_files_without_a_network_fails_quickly(tmp_path):
    try:
        socket.getaddrinfo("ufldl.stanford.edu", 80)
    except OSError:
        pass
    else:
        pytest.skip("this machine has a network: a real download would fetch SVHN's 250 MB")
    root = tmp_path / "svhn"
    config = validate_config(_config({"loader": "svhn", "root": str(root), "download": True}))
    with pytest.raises(ConfigError) as raised:
        ensure_data_files(config, ["real"])
    _one_line(raised, "could not download svhn", str(root), ", ".join(SVHN_FILES))
    assert not list(root.glob("*.mat"))


def test_the_fixture_files_match_the_loaders_file_lists(tmp_path):
    write_cifar10(tmp_path / "cifar", train_per_batch=1, test=1)
    write_svhn(tmp_path / "svhn", train=1, test=1)
    assert sorted(p.name for p in (tmp_path / "cifar").iterdir()) == sorted(CIFAR10_FILES)
    assert sorted(p.name for p in (tmp_path / "svhn").iterdir()) == sorted(SVHN_FILES)
