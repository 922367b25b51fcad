"""Datasets: the BlockMNIST construction, stratified splits, the digits loader and the store."""

from __future__ import annotations

import numpy as np
import pytest
from diffroar.data import (
    ImageDataset,
    build_block_dataset,
    dataset_splits,
    load_digits,
    prepare,
    read_attributes,
    read_images,
    square_outline,
)
from diffroar.store import SPLITS, read_split


def test_square_outline_8x8():
    patch = square_outline(8, 8, 16, np.uint8)
    assert patch.shape == (8, 8)
    assert patch.dtype == np.uint8
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[1, 1:7] = expected[6, 1:7] = 16
    expected[1:7, 1] = expected[1:7, 6] = 16
    np.testing.assert_array_equal(patch, expected)


def test_square_outline_has_a_one_pixel_margin_and_an_empty_inside():
    patch = square_outline(28, 28, 1.0, np.float32)
    assert set(np.unique(patch)) == {0.0, 1.0}
    # the border of the patch is empty, the outline starts one pixel in
    assert not patch[0].any() and not patch[-1].any()
    assert not patch[:, 0].any() and not patch[:, -1].any()
    assert patch[1, 1:-1].all() and patch[1:-1, 1].all()
    # 28 // 14 = 2 pixels thick, the inside empty
    assert patch[2, 2:-2].all()
    assert not patch[3:-3, 3:-3].any()
    # symmetric
    np.testing.assert_array_equal(patch, patch[::-1])
    np.testing.assert_array_equal(patch, patch[:, ::-1])


def tiny_digits(count: int = 200) -> ImageDataset:
    """Two classes of 1x4x4 uint8 images (values 1..16, never 0) with distinct images."""
    rng = np.random.default_rng(123)
    images = rng.integers(1, 17, size=(count, 1, 4, 4), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % 2
    return ImageDataset(
        images=images,
        labels=labels,
        classes=["a", "b"],
        pixel_max=16.0,
        attributes={"source": "synthetic"},
    )


def test_block_dataset_layout():
    digits = tiny_digits()
    block = build_block_dataset(digits, seed=0)
    count = len(digits.labels)
    assert block.images.shape == (count, 1, 8, 4)
    assert block.images.dtype == np.uint8
    np.testing.assert_array_equal(block.labels, digits.labels)
    assert block.classes == digits.classes
    assert block.pixel_max == digits.pixel_max
    assert block.attributes["source"] == "synthetic"
    assert block.attributes["block"]["height"] == 4

    on_top = block.per_image["signal_on_top"]
    assert on_top.shape == (count,) and on_top.dtype == bool
    assert on_top.any() and not on_top.all()

    patch = square_outline(4, 4, 16.0, np.uint8)
    for index in range(count):
        top, bottom = block.images[index, 0, :4], block.images[index, 0, 4:]
        signal, null = (top, bottom) if on_top[index] else (bottom, top)
        np.testing.assert_array_equal(signal, digits.images[index, 0])
        np.testing.assert_array_equal(null, patch)


def test_block_dataset_positions_are_roughly_balanced():
    on_top = build_block_dataset(tiny_digits(1000), seed=3).per_image["signal_on_top"]
    assert 400 < on_top.sum() < 600


def test_block_dataset_is_deterministic_per_seed():
    digits = tiny_digits()
    first = build_block_dataset(digits, seed=5)
    second = build_block_dataset(digits, seed=5)
    other = build_block_dataset(digits, seed=6)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(
        first.per_image["signal_on_top"], second.per_image["signal_on_top"]
    )
    assert not np.array_equal(first.per_image["signal_on_top"], other.per_image["signal_on_top"])


def test_block_dataset_with_several_channels():
    digits = tiny_digits(20)
    digits.images = np.repeat(digits.images, 3, axis=1)
    block = build_block_dataset(digits, seed=0)
    assert block.images.shape == (20, 3, 8, 4)
    on_top = block.per_image["signal_on_top"]
    for index in range(20):
        rows = slice(0, 4) if on_top[index] else slice(4, 8)
        np.testing.assert_array_equal(block.images[index, :, rows], digits.images[index])


def _labels(count=300, classes=3, seed=0):
    return np.random.default_rng(seed).integers(0, classes, size=count)


def split_indices(labels, val_fraction, test_fraction, seed, **sizes):
    """dataset_splits of a dataset with these labels and no official test split."""
    dataset = ImageDataset(np.zeros((len(labels), 1, 1, 1)), labels, ["a"], 1.0)
    cfg = {"val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": seed}
    return dataset_splits(dataset, cfg | sizes)


def test_split_indices_are_disjoint_and_cover_everything():
    labels = _labels()
    splits = split_indices(labels, 0.15, 0.2, seed=0)
    assert set(splits) == set(SPLITS)
    joined = np.concatenate([splits[name] for name in SPLITS])
    assert len(joined) == len(labels)
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(labels)))
    for name in SPLITS:
        np.testing.assert_array_equal(splits[name], np.sort(splits[name]))
    assert abs(len(splits["test"]) - 0.2 * len(labels)) <= 1
    assert abs(len(splits["val"]) - 0.15 * len(labels)) <= 1


def test_split_indices_are_stratified():
    labels = np.repeat([0, 1, 2, 3], [100, 200, 300, 400])
    splits = split_indices(labels, 0.15, 0.2, seed=1)
    overall = np.bincount(labels) / len(labels)
    for name in SPLITS:
        share = np.bincount(labels[splits[name]], minlength=4) / len(splits[name])
        np.testing.assert_allclose(share, overall, atol=0.01)


def test_split_indices_are_deterministic_per_seed():
    labels = _labels()
    first = split_indices(labels, 0.15, 0.2, seed=4)
    second = split_indices(labels, 0.15, 0.2, seed=4)
    other = split_indices(labels, 0.15, 0.2, seed=5)
    for name in SPLITS:
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(first["test"], other["test"])


def test_train_and_test_size_draw_stratified_subsets():
    labels = np.repeat([0, 1, 2, 3], [100, 200, 300, 400])
    full = split_indices(labels, 0.15, 0.2, seed=1)
    small = split_indices(labels, 0.15, 0.2, seed=1, train_size=400, test_size=100)
    assert len(small["test"]) == 100 and set(small["test"]) <= set(full["test"])
    assert len(small["train"]) + len(small["val"]) == 400  # the pool before validation
    assert abs(len(small["val"]) - 400 * 0.15 / 0.8) <= 1
    np.testing.assert_allclose(np.bincount(labels[small["test"]]) / 100, [0.1, 0.2, 0.3, 0.4])
    assert not set(small["train"]) & (set(small["val"]) | set(small["test"]))


def test_official_test_split_is_the_test_set():
    labels = np.tile([0, 1], 60)
    official = np.arange(120) >= 100
    dataset = ImageDataset(
        np.zeros((120, 1, 1, 1)), labels, ["a", "b"], 1.0, official_test=official
    )
    cfg = {"val_fraction": 0.25, "split_seed": 0}
    splits = dataset_splits(dataset, cfg)
    np.testing.assert_array_equal(splits["test"], np.arange(100, 120))
    assert len(splits["val"]) == 25 and len(splits["train"]) == 75  # val is 25% of the pool
    small = dataset_splits(dataset, cfg | {"train_size": 40, "test_size": 10})
    assert len(small["train"]) + len(small["val"]) == 40 and len(small["val"]) == 10
    assert len(small["test"]) == 10 and (small["test"] >= 100).all()
    assert (np.bincount(labels[small["test"]]) == [5, 5]).all()


def test_load_digits_all_classes():
    digits = load_digits()
    assert digits.images.shape == (1797, 1, 8, 8)
    assert digits.images.dtype == np.uint8
    assert digits.images.min() == 0 and digits.images.max() == 16
    assert digits.labels.dtype == np.int64
    assert sorted(np.unique(digits.labels)) == list(range(10))
    assert digits.classes == [str(d) for d in range(10)]
    assert digits.pixel_max == 16.0


def test_load_digits_class_subset_remaps_labels():
    from sklearn.datasets import load_digits as sklearn_digits

    target = sklearn_digits().target
    digits = load_digits([7, 3])
    assert digits.classes == ["7", "3"]
    assert len(digits.labels) == int(np.isin(target, [3, 7]).sum())
    assert set(np.unique(digits.labels)) == {0, 1}
    # label 0 is digit 7, label 1 is digit 3, in the original order
    np.testing.assert_array_equal(
        digits.labels, np.where(target[np.isin(target, [3, 7])] == 7, 0, 1)
    )
    assert len(digits.images) == len(digits.labels)


DIGITS_CFG = {
    "loader": "digits",
    "classes": [0, 1, 2],
    "val_fraction": 0.15,
    "test_fraction": 0.2,
    "split_seed": 0,
    "null_patch": "square_outline",
}


def test_prepare_writes_a_store_with_its_metadata(tmp_path):
    path = tmp_path / "digits.zarr"
    prepare("small", dict(DIGITS_CFG), path)
    attributes = read_attributes(path)
    assert attributes["dataset"] == "small"
    assert attributes["shape"] == [1, 8, 8]
    assert attributes["classes"] == ["0", "1", "2"]
    assert attributes["num_classes"] == 3
    assert attributes["pixel_max"] == 16.0
    sizes = attributes["split_sizes"]
    assert set(sizes) == set(SPLITS)
    total = sum(sizes.values())
    assert total == len(load_digits([0, 1, 2]).labels)
    assert abs(sizes["test"] - 0.2 * total) <= 1

    train_images, _ = read_images(path, "train")
    assert sizes["train"] == len(train_images)
    np.testing.assert_allclose(
        attributes["channel_mean"], [train_images.astype(np.float64).mean()], rtol=1e-6
    )
    np.testing.assert_allclose(
        attributes["channel_std"], [train_images.astype(np.float64).std()], rtol=1e-6
    )
    assert attributes["pixel_mean"] == pytest.approx(attributes["channel_mean"][0])
    assert 0 < attributes["pixel_mean"] < 1


def test_prepare_stores_native_images_and_read_images_scales_them(tmp_path):
    path = tmp_path / "digits.zarr"
    prepare("small", dict(DIGITS_CFG), path)
    for split in SPLITS:
        stored = read_split(path, split)
        assert stored["images"].dtype == np.uint8
        images, labels = read_images(path, split)
        assert images.dtype == np.float32
        assert labels.dtype == np.int64
        assert images.shape == stored["images"].shape
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert images.max() == 1.0
        np.testing.assert_allclose(images * 16, stored["images"])
        np.testing.assert_array_equal(labels, stored["labels"])


def test_prepare_block_dataset_stores_positions(tmp_path):
    path = tmp_path / "block.zarr"
    cfg = dict(DIGITS_CFG, loader="blockdigits", classes=[0, 1])
    prepare("block", cfg, path)
    attributes = read_attributes(path)
    assert attributes["shape"] == [1, 16, 8]
    assert attributes["block"]["height"] == 8
    for split in SPLITS:
        stored = read_split(path, split)
        assert stored["signal_on_top"].dtype == bool
        assert len(stored["signal_on_top"]) == len(stored["labels"])
        patch = square_outline(8, 8, 16, np.uint8)
        for image, on_top in zip(stored["images"], stored["signal_on_top"], strict=True):
            null = image[0, 8:] if on_top else image[0, :8]
            np.testing.assert_array_equal(null, patch)
