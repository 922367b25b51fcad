"""The mask-only control: a model retrained on the binary keep-mask alone measures what the mask's
shape gives away about the label (ROAD's mask-leakage test, as a retrained control)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diffroar.imputation import impute
from diffroar.mask import masked_splits
from diffroar.retrain import run_retrain
from diffroar.store import SPLITS, create_store, write_array

SHAPE = (1, 8, 8)
CLASSES = 4
SIZES = {"train": 400, "val": 80, "test": 200}
KEPT = 3  # coordinates kept per image: k = 3/64


def test_mask_only_is_the_keep_mask_whatever_the_images():
    rng = np.random.default_rng(0)
    keep = rng.random((5, 2, 4, 4)) < 0.3
    for images in (rng.random(keep.shape), np.zeros(keep.shape), np.full(keep.shape, 7.0)):
        out = impute(
            images, keep, "mask_only", pixel_mean=0.5, channel_mean=[0.5, 0.5], noise=0.1, rng=rng
        )
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, keep.astype(np.float32))


def _stores(tmp_path, attributions_of) -> tuple[str, str]:
    """A dataset whose pixel values carry no label (uniform noise) and a saliency store whose
    values `attributions_of(labels, rng)` decide which coordinates are kept."""
    rng = np.random.default_rng(0)
    dataset = create_store(
        tmp_path / "dataset.zarr",
        {
            "dataset": "synthetic",
            "shape": list(SHAPE),
            "classes": [str(c) for c in range(CLASSES)],
            "num_classes": CLASSES,
            "pixel_max": 255.0,
            "pixel_mean": 0.5,
            "channel_mean": [0.5],
            "channel_std": [0.29],
        },
    )
    saliency = create_store(
        tmp_path / "saliency.zarr", {"model": "base", "base_seed": 0, "method": "gradient"}
    )
    for split, count in SIZES.items():
        labels = rng.integers(0, CLASSES, count).astype(np.int64)
        group = dataset.create_group(split)
        write_array(group, "images", rng.integers(0, 256, (count, *SHAPE), dtype=np.uint8))
        write_array(group, "labels", labels)
        attributions = attributions_of(labels, rng).astype(np.float32)
        write_array(saliency.create_group(split), "attributions", attributions)
    return str(tmp_path / "dataset.zarr"), str(tmp_path / "saliency.zarr")


def label_shaped(labels, rng):
    """Attributions largest on 3 coordinates that depend on the class (like a true-class
    gradient whose largest entries sit on the class's strokes), small noise elsewhere."""
    values = rng.random((len(labels), int(np.prod(SHAPE)))) * 0.1
    for index, label in enumerate(labels):
        values[index, label * 10 : label * 10 + KEPT] += 1.0
    return values.reshape(len(labels), *SHAPE)


def label_free(labels, rng):
    return rng.random((len(labels), *SHAPE))


def _mask_only_accuracy(tmp_path, attributions_of) -> float:
    """The test accuracy of a model retrained, as a retrain job does (masking in memory), on the
    top-k keep-masks alone."""
    dataset_path, saliency_path = _stores(tmp_path, attributions_of)
    settings = dict(keep_fraction=KEPT / 64, imputation="mask_only")
    masking = {"ranking": "coordinate", "tiebreak_seed": 0}
    _, masked = masked_splits(dataset_path, saliency_path, ["top"], **settings, **masking)
    for split in SPLITS:
        images = masked["top"][split][0]
        assert set(np.unique(images)) == {0.0, 1.0}
        assert (images.reshape(len(images), -1).sum(axis=1) == KEPT).all()
    metrics = tmp_path / "metrics.json"
    run_retrain(
        dataset_path,
        saliency_path,
        {"top": [(str(tmp_path / "model.safetensors"), str(metrics))]},
        **settings,
        masking_cfg=masking,
        base_model_cfg={
            "architecture": "mlp",
            "hidden_sizes": [32],
            "training": {"mode": "standard"},
        },
        model_cfg={"architecture": "mlp", "hidden_sizes": [32]},
        retraining_cfg={
            "epochs": 15,
            "batch_size": 32,
            "learning_rate": 0.01,
            "weight_decay": 0.0,
        },
        retrain_seeds=[0],
        config_fingerprints={"top": ["f"]},
        attribution_fingerprint="a",
    )
    result = json.loads(metrics.read_text())
    assert result["imputation"] == "mask_only" and result["attribution_fingerprint"] == "a"
    return result["test_accuracy"]


def test_a_mask_whose_shape_carries_the_label_is_read_by_the_control(tmp_path):
    # The pixel values are pure noise: only the shape of the mask can tell the class.
    assert _mask_only_accuracy(tmp_path, label_shaped) >= 0.95


def test_a_mask_that_ignores_the_label_leaves_the_control_at_chance(tmp_path):
    accuracy = _mask_only_accuracy(tmp_path, label_free)
    assert accuracy == pytest.approx(1 / CLASSES, abs=0.12)
