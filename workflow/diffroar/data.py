"""Stage `data`: load a dataset, split it, and store it in zarr with its metadata.

A dataset store holds, per split, `images` (N, C, H, W) in their native dtype, `labels` (N,) int64
and any per-image arrays of the dataset (`signal_on_top` for BlockMNIST-style data). Its attributes
give the name, shape, class names, `pixel_max` (images / pixel_max lies in [0, 1]) and the
normalisation statistics of the training split in that [0, 1] scale.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .datafiles import (
    CIFAR10_FILES,
    IDX_FILES,
    IMAGEFOLDER_SPLITS,
    LOADER_SOURCES,
    SOURCES,
    SVHN_FILES,
    class_folders,
    data_folder,
    expected_files,
    files_problem,
    find_file,
)
from .runtime import log
from .store import StoreError, new_store, open_store, read_block, stored_array, write_array


@dataclass
class ImageDataset:
    """Images (N, C, H, W) in their native dtype with integer labels (N,) in [0, len(classes))."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    pixel_max: float
    per_image: dict[str, np.ndarray] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    # True for the images of an official test split (None: the dataset has none)
    official_test: np.ndarray | None = None


def load_digits(classes: list[int] | None = None) -> ImageDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0..16) as uint8."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    dataset = ImageDataset(
        images=bunch.images.astype(np.uint8)[:, None],  # values are integers 0..16
        labels=bunch.target.astype(np.int64),
        classes=[str(digit) for digit in range(10)],
        pixel_max=16.0,
        attributes={"source": "sklearn.datasets.load_digits (UCI optical digits, 8x8)"},
    )
    return select_classes(dataset, classes)


def select_classes(dataset: ImageDataset, classes: list[int] | None) -> ImageDataset:
    """The images of `classes` (indices into dataset.classes, all when None), relabelled
    0..len(classes)-1 in the given order."""
    if classes is None:
        return dataset
    selected = np.isin(dataset.labels, classes)
    remap = np.full(len(dataset.classes), -1, dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    return ImageDataset(
        images=dataset.images[selected],
        labels=remap[dataset.labels[selected]],
        classes=[dataset.classes[c] for c in classes],
        pixel_max=dataset.pixel_max,
        per_image={name: values[selected] for name, values in dataset.per_image.items()},
        attributes=dataset.attributes,
        official_test=None if dataset.official_test is None else dataset.official_test[selected],
    )


# IDX element types (third byte of the magic number) and their big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file (LeCun's MNIST format), plain or gzipped (by its .gz suffix)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read: {error}") from error
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: IDX header cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes), the file holds "
            f"{len(data) - header} bytes of data (truncated or corrupted)"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def source_folder(source: str, root: str | Path | None) -> Path:
    """The folder with the files of `source` (root or its download folder); raises
    FileNotFoundError naming what is missing (the Snakefile checks this before any job)."""
    spec = SOURCES[source]
    root = root or spec.default_root
    problem = files_problem(spec, root) if root else "is not set"
    if problem:
        raise FileNotFoundError(
            f"{source} data root {str(root)!r} {problem}; expected {expected_files(spec)}"
        )
    return data_folder(spec, root)


def load_idx_collection(source: str, root: str | Path | None) -> ImageDataset:
    """MNIST or Fashion-MNIST from the four IDX files in `root`: the official training images
    followed by the official test images (flagged in `official_test`), uint8 (N, 1, 28, 28)."""
    from torchvision.datasets import FashionMNIST

    folder = source_folder(source, root)
    parts = []
    for split, (image_file, label_file) in IDX_FILES.items():
        split_images = read_idx(find_file(folder, image_file))
        split_labels = read_idx(find_file(folder, label_file)).astype(np.int64)
        if (
            split_images.dtype != np.uint8
            or split_images.ndim != 3
            or len(split_images) != len(split_labels)
        ):
            raise ValueError(
                f"{folder}: {split} images {split_images.dtype} {split_images.shape} and labels "
                f"{split_labels.shape} do not match (expected uint8 (N, H, W) and (N,))"
            )
        _check_labels(folder, split, split_labels, 10)
        parts.append((split_images[:, None], split_labels))
    names = {"mnist": [str(d) for d in range(10)], "fashion_mnist": list(FashionMNIST.classes)}
    origin = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}[source]
    return _official_splits(parts, names[source], f"{origin} IDX files in {folder.resolve()}")


def _check_labels(where, split: str, labels: np.ndarray, classes: int) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{where}: {split} labels outside 0..{classes - 1}")


def _official_splits(
    parts: list[tuple[np.ndarray, np.ndarray]], classes, source: str
) -> ImageDataset:
    """One dataset from the (images, labels) of the official train and test splits, in order."""
    (train_images, train_labels), (test_images, test_labels) = parts
    return ImageDataset(
        images=np.concatenate([train_images, test_images]),
        labels=np.concatenate([train_labels, test_labels]).astype(np.int64),
        classes=list(classes),
        pixel_max=255.0,
        attributes={"source": source},
        official_test=np.repeat([False, True], [len(train_labels), len(test_labels)]),
    )


def load_cifar10(root: str | Path | None) -> ImageDataset:
    """CIFAR-10 from its python batches (data_batch_1..5, test_batch, batches.meta: pickled dicts
    with `data` (N, 3072) uint8 rows in channel-major order and `labels`), uint8 (N, 3, 32, 32)."""
    import pickle

    folder = source_folder("cifar10", root)

    def unpickle(name: str, keys: tuple[str, ...]) -> dict:
        try:
            with open(folder / name, "rb") as handle:
                content = pickle.load(handle, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"{folder / name}: not a CIFAR-10 python batch ({error})") from error
        if not isinstance(content, dict) or not set(keys) <= set(content):
            raise ValueError(
                f"{folder / name}: not a CIFAR-10 python batch (expected a dict with the keys "
                f"{', '.join(keys)})"
            )
        return content

    parts = []
    for split, names in (("train", CIFAR10_FILES[:5]), ("test", CIFAR10_FILES[5:6])):
        batches = [unpickle(name, ("data", "labels")) for name in names]
        images = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b["labels"], np.int64) for b in batches])
        if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
            raise ValueError(
                f"{folder}: {split} batches hold data {images.shape} and labels "
                f"{labels.shape}; expected (N, 3072) and (N,)"
            )
        _check_labels(folder, split, labels, 10)
        parts.append((images.reshape(-1, 3, 32, 32), labels))
    classes = unpickle(CIFAR10_FILES[6], ("label_names",))["label_names"]
    return _official_splits(parts, classes, f"CIFAR-10 python batches in {folder.resolve()}")


def load_svhn(root: str | Path | None) -> ImageDataset:
    """SVHN's cropped digits from train_32x32.mat and test_32x32.mat (MATLAB files with `X`
    (32, 32, 3, N) uint8 and `y` (N, 1) in 1..10, 10 standing for the digit 0), uint8
    (N, 3, 32, 32) with labels 0..9."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    folder = source_folder("svhn", root)
    parts = []
    for split, name in zip(("train", "test"), SVHN_FILES, strict=True):
        try:
            mat = loadmat(folder / name)
            images, labels = mat["X"], mat["y"].reshape(-1).astype(np.int64)
        except (ValueError, KeyError, OSError, IndexError, MatReadError) as error:
            raise ValueError(f"{folder / name}: not an SVHN .mat file ({error})") from error
        if images.ndim != 4 or images.shape[2] != 3 or images.shape[3] != len(labels):
            raise ValueError(
                f"{folder / name}: X {images.shape} and y {labels.shape}; expected "
                "(H, W, 3, N) and (N, 1)"
            )
        _check_labels(folder / name, split, labels - 1, 10)
        parts.append((np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels % 10))
    return _official_splits(
        parts, [str(d) for d in range(10)], f"SVHN cropped digits in {folder.resolve()}"
    )


def load_imagefolder(root: str | Path | None, image_size: int) -> ImageDataset:
    """An ImageNet-style tree, root/train/<class>/<image> and root/val/<class>/<image> (val is
    the test split), as RGB uint8 (N, 3, image_size, image_size): the shorter side resized to
    image_size, then the centre square cropped. Classes are the sorted folder names."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    folder = source_folder("imagefolder", root)
    to_array = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.PILToTensor(),
        ]
    )
    parts = []
    for split in IMAGEFOLDER_SPLITS:
        tree = ImageFolder(str(folder / split), transform=to_array)
        images = np.empty((len(tree), 3, image_size, image_size), np.uint8)
        for index in range(len(tree)):
            images[index] = tree[index][0].numpy()
            if (index + 1) % 5000 == 0:
                log.info("%s: %d of %d images read", folder / split, index + 1, len(tree))
        parts.append((images, np.asarray(tree.targets, np.int64)))
    return _official_splits(
        parts,
        class_folders(folder / "train"),
        f"image folders train/ and val/ in {folder.resolve()}, resized to {image_size} px",
    )


def square_outline(height: int, width: int, value, dtype) -> np.ndarray:
    """A (height, width) patch with a square outline inset by one pixel: BlockMNIST's null block."""
    patch = np.zeros((height, width), dtype=dtype)
    line = max(1, min(height, width) // 14)
    top, bottom, left, right = 1, height - 1, 1, width - 1
    patch[top : top + line, left:right] = value
    patch[bottom - line : bottom, left:right] = value
    patch[top:bottom, left : left + line] = value
    patch[top:bottom, right - line : right] = value
    return patch


NULL_PATCHES = {"square_outline": square_outline}


def build_block_dataset(
    digits: ImageDataset, seed: int, null_patch: str = "square_outline", always_on_top=False
) -> ImageDataset:
    """BlockMNIST from any digit source: each image stacks the digit (signal block) and one fixed
    class-independent patch (null block) vertically, the signal on top or at the bottom at random
    (always on top with `always_on_top`: the control without leakage).

    Returns images (N, C, 2H, W) and the per-image bool array `signal_on_top`.
    """
    count, channels, height, width = digits.images.shape
    patch = NULL_PATCHES[null_patch](height, width, digits.pixel_max, digits.images.dtype)
    null = np.broadcast_to(patch, (count, channels, height, width))
    signal_on_top = np.random.default_rng(seed).random(count) < 0.5
    if always_on_top:
        signal_on_top[:] = True
    on_top = signal_on_top[:, None, None, None]
    images = np.concatenate(
        [np.where(on_top, digits.images, null), np.where(on_top, null, digits.images)], axis=2
    )
    return ImageDataset(
        images=images,
        labels=digits.labels,
        classes=digits.classes,
        pixel_max=digits.pixel_max,
        per_image={"signal_on_top": signal_on_top},
        attributes={
            **digits.attributes,
            "block": {
                "height": height,
                "layout": "vertical",
                "null_patch": null_patch,
                "signal": "always on top" if always_on_top else "on top or at the bottom at random",
            },
        },
        official_test=digits.official_test,
    )


def load_blockdigits(classes: list[int] | None, null_patch: str, seed: int) -> ImageDataset:
    digits = load_digits([0, 1] if classes is None else classes)
    return build_block_dataset(digits, seed=seed, null_patch=null_patch)


def load_idx_dataset(cfg: dict[str, Any]) -> ImageDataset:
    """An IDX-backed dataset as configured: its classes, as BlockMNIST for the block loaders."""
    loader = cfg["loader"]
    images = load_idx_collection(LOADER_SOURCES[loader], cfg.get("root"))
    if not loader.startswith("block"):
        return select_classes(images, cfg.get("classes"))
    images = select_classes(images, cfg.get("classes") or [0, 1])
    return build_block_dataset(
        images, cfg["split_seed"], cfg["null_patch"], always_on_top=loader == "blockmnist_top"
    )


LOADERS = {
    "digits": lambda cfg: load_digits(cfg.get("classes")),
    "blockdigits": lambda cfg: load_blockdigits(
        cfg.get("classes"), cfg["null_patch"], cfg["split_seed"]
    ),
    **{
        loader: load_idx_dataset
        for loader, source in LOADER_SOURCES.items()
        if source in ("mnist", "fashion_mnist")
    },
    "cifar10": lambda cfg: select_classes(load_cifar10(cfg.get("root")), cfg.get("classes")),
    "svhn": lambda cfg: select_classes(load_svhn(cfg.get("root")), cfg.get("classes")),
    "imagefolder": lambda cfg: select_classes(
        load_imagefolder(cfg.get("root"), cfg["image_size"]), cfg.get("classes")
    ),
}


def _subset(indices: np.ndarray, labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A stratified random subset of `size` of `indices` (all of them, unchanged, when size is
    None or not smaller)."""
    from sklearn.model_selection import train_test_split

    if size is None or size >= len(indices):
        return indices
    kept, _ = train_test_split(
        indices, train_size=size, stratify=labels[indices], random_state=seed
    )
    return kept


def dataset_splits(dataset: ImageDataset, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Sorted train / val / test indices, stratified and seeded by `split_seed`.

    The test split is the official one when the dataset has it, else `test_fraction` of all
    images. The rest is the pool of training images, subset to `train_size` when given; the
    validation split is `val_fraction` of the whole dataset (fraction datasets) or of that pool
    (official splits). `test_size` subsets the test split.
    """
    from sklearn.model_selection import train_test_split

    labels, seed = dataset.labels, cfg["split_seed"]
    everything = np.arange(len(labels))
    if dataset.official_test is None:
        pool, test = train_test_split(
            everything, test_size=cfg["test_fraction"], stratify=labels, random_state=seed
        )
        val_share = cfg["val_fraction"] / (1 - cfg["test_fraction"])
    else:
        pool, test = everything[~dataset.official_test], everything[dataset.official_test]
        val_share = cfg["val_fraction"]
    pool = _subset(pool, labels, cfg.get("train_size"), seed)
    train, val = train_test_split(
        pool, test_size=val_share, stratify=labels[pool], random_state=seed
    )
    test = _subset(test, labels, cfg.get("test_size"), seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def prepare(name: str, cfg: dict[str, Any], out_path: str | Path) -> None:
    """Load dataset `name` as configured, split it and write the store at `out_path`."""
    dataset = LOADERS[cfg["loader"]](cfg)
    splits = dataset_splits(dataset, cfg)
    train = dataset.images[splits["train"]].astype(np.float64) / dataset.pixel_max
    attributes = {
        "dataset": name,
        "config": cfg,
        "shape": list(dataset.images.shape[1:]),
        "classes": dataset.classes,
        "num_classes": len(dataset.classes),
        "pixel_max": dataset.pixel_max,
        "pixel_mean": float(train.mean()),
        "channel_mean": train.mean(axis=(0, 2, 3)).tolist(),
        "channel_std": train.std(axis=(0, 2, 3)).tolist(),
        "split_sizes": {split: int(len(index)) for split, index in splits.items()},
        **dataset.attributes,
    }
    with new_store(out_path, attributes) as root:
        for split, index in splits.items():
            group = root.create_group(split)
            write_array(group, "images", dataset.images[index])
            write_array(group, "labels", dataset.labels[index])
            for array_name, values in dataset.per_image.items():
                write_array(group, array_name, values[index])
    log.info(
        "dataset %s: %s images of shape %s, %d classes, splits %s",
        name,
        len(dataset.labels),
        tuple(dataset.images.shape[1:]),
        len(dataset.classes),
        attributes["split_sizes"],
    )


# The attributes that images are read and checked with.
IMAGE_ATTRIBUTES = ("shape", "num_classes", "pixel_max")


def read_images(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images of `split` as float32 in [0, 1] (N, C, H, W) and their labels (N,) int64.

    A store that is incomplete or corrupted, holds NaN or infinite values, or whose images and
    labels do not fit its attributes fails with a StoreError that names it: nothing trains on
    them."""
    root = open_store(path, IMAGE_ATTRIBUTES)
    images = read_block(stored_array(root, split, "images", path), path)
    labels = read_block(stored_array(root, split, "labels", path), path).astype(np.int64)
    shape, classes = list(root.attrs["shape"]), int(root.attrs["num_classes"])
    if list(images.shape[1:]) != shape or len(labels) != len(images):
        raise StoreError(
            f"{path}: {split} images {images.shape} and labels {labels.shape} do not fit the "
            f"store's image shape {shape}; delete it and rerun the rule that writes it"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise StoreError(
            f"{path}: {split} labels outside 0..{classes - 1}; delete it and rerun the rule that "
            "writes it"
        )
    images = images.astype(np.float32) / np.float32(root.attrs["pixel_max"])
    fill = root.attrs.get("masking", {}).get("fill_on_read")
    if fill is not None:
        images = _filled(root, path, split, images, int(fill[split]["block_rows"]))
    return images, labels


def _filled(root, path: str | Path, split: str, images: np.ndarray, rows: int) -> np.ndarray:
    """The images of a masked store filled on read (diffroar.mask): each block of `rows` images
    imputed as the mask job would have, with its noise stream."""
    from .imputation import impute, noise_rng

    keep = read_block(stored_array(root, split, "keep", path), path)
    if keep.shape != images.shape or keep.dtype != np.bool_ or rows < 1:
        raise StoreError(
            f"{path}: {split} keep mask {keep.shape} {keep.dtype} does not fit its images "
            f"{images.shape} (block rows {rows}); delete it and rerun the rule that writes it"
        )
    masking = root.attrs["masking"]
    filled = np.empty_like(images)
    for start in range(0, len(images), rows):
        block = slice(start, start + rows)
        filled[block] = impute(
            images[block],
            keep[block],
            masking["imputation"],
            pixel_mean=float(root.attrs["pixel_mean"]),
            channel_mean=list(root.attrs["channel_mean"]),
            noise=float(masking["noise"]),
            rng=noise_rng(int(masking["tiebreak_seed"]), split, start),
        )
    return filled


class StoreAttributes(dict):
    """A store's attributes; a missing one raises a KeyError that names the store."""

    def __init__(self, path: str | Path, attributes: dict[str, Any]):
        super().__init__(attributes)
        self.path = path

    def __missing__(self, key: str):
        raise KeyError(
            f"{self.path} has no attribute {key!r}: not the store this stage expects, or damaged"
        )


def read_attributes(path: str | Path) -> dict[str, Any]:
    """The attributes of a dataset or masked store (a missing one is named with the store)."""
    return StoreAttributes(path, open_store(path).attrs.asdict())
