"""Stage `data`: load a dataset, split it, and store it in zarr with its metadata.

A dataset store holds, per split, `images` (N, C, H, W) in their native dtype, `labels` (N,) int64
and any per-image arrays of the dataset (`signal_on_top` for BlockMNIST-style data). Its attributes
give the name, shape, class names, `pixel_max` (images / pixel_max lies in [0, 1]) and the
normalisation statistics of the training split in that [0, 1] scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .runtime import log
from .store import create_store, open_store, write_array


@dataclass
class ImageDataset:
    """Images (N, C, H, W) in their native dtype with integer labels (N,) in [0, len(classes))."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    pixel_max: float
    per_image: dict[str, np.ndarray] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


def load_digits(classes: list[int] | None = None) -> ImageDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0..16) as uint8."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # values are integers 0..16
    labels = bunch.target.astype(np.int64)
    keep = list(range(10)) if classes is None else list(classes)
    selected = np.isin(labels, keep)
    remap = {digit: index for index, digit in enumerate(keep)}
    return ImageDataset(
        images=images[selected],
        labels=np.array([remap[label] for label in labels[selected]], dtype=np.int64),
        classes=[str(digit) for digit in keep],
        pixel_max=16.0,
        attributes={"source": "sklearn.datasets.load_digits (UCI optical digits, 8x8)"},
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
    digits: ImageDataset, seed: int, null_patch: str = "square_outline"
) -> ImageDataset:
    """BlockMNIST from any digit source: each image stacks the digit (signal block) and one fixed
    class-independent patch (null block) vertically, the signal on top or at the bottom at random.

    Returns images (N, C, 2H, W) and the per-image bool array `signal_on_top`.
    """
    count, channels, height, width = digits.images.shape
    patch = NULL_PATCHES[null_patch](height, width, digits.pixel_max, digits.images.dtype)
    null = np.broadcast_to(patch, (count, channels, height, width))
    signal_on_top = np.random.default_rng(seed).random(count) < 0.5
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
            "block": {"height": height, "layout": "vertical", "null_patch": null_patch},
        },
    )


def load_blockdigits(classes: list[int] | None, null_patch: str, seed: int) -> ImageDataset:
    digits = load_digits([0, 1] if classes is None else classes)
    return build_block_dataset(digits, seed=seed, null_patch=null_patch)


LOADERS = {
    "digits": lambda cfg: load_digits(cfg.get("classes")),
    "blockdigits": lambda cfg: load_blockdigits(
        cfg.get("classes"), cfg["null_patch"], cfg["split_seed"]
    ),
}


def split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified train / val / test indices (each sorted) with fractions of the whole dataset."""
    from sklearn.model_selection import train_test_split

    everything = np.arange(len(labels))
    rest, test = train_test_split(
        everything, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=labels[rest],
        random_state=seed,
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def prepare(name: str, cfg: dict[str, Any], out_path: str | Path) -> None:
    """Load dataset `name` as configured, split it and write the store at `out_path`."""
    dataset = LOADERS[cfg["loader"]](cfg)
    splits = split_indices(
        dataset.labels, cfg["val_fraction"], cfg["test_fraction"], cfg["split_seed"]
    )
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
    root = create_store(out_path, attributes)
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


def read_images(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images of `split` as float32 in [0, 1] (N, C, H, W) and their labels (N,) int64."""
    group = open_store(path)
    pixel_max = float(group.attrs["pixel_max"])
    images = group[split]["images"][...].astype(np.float32) / np.float32(pixel_max)
    return images, group[split]["labels"][...].astype(np.int64)


def read_attributes(path: str | Path) -> dict[str, Any]:
    return dict(open_store(path).attrs)
