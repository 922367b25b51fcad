"""Attribution methods: the gradient of a linear model in closed form, the random control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffroar import saliency
from diffroar.models import build_model, save_checkpoint
from diffroar.saliency import METHODS, gradient, random, run_saliency
from diffroar.store import SPLITS, create_store, read_split, write_array
from torch import nn

torch.set_num_threads(1)

MEAN, STD = [0.2, 0.5], [0.25, 4.0]


def linear_model(seed: int = 0) -> nn.Sequential:
    """build_model's Normalize in front of one Linear layer: 2x3x3 inputs, 4 classes."""
    torch.manual_seed(seed)
    spec = {
        "architecture": "mlp",
        "hidden_sizes": [],
        "input_shape": [2, 3, 3],
        "num_classes": 4,
        "channel_mean": MEAN,
        "channel_std": STD,
    }
    return build_model(spec).eval()


def _inputs(count=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 2, 3, 3, generator=generator)
    labels = torch.randint(0, 4, (count,), generator=generator)
    return images, labels


def test_gradient_of_a_linear_model_is_the_weight_row_over_std():
    model = linear_model()
    weight = model[1][-1].weight.detach()  # (4, 18)
    images, labels = _inputs()
    attributions = gradient(model, images, labels, batch_size=64, seed=0)
    assert attributions.shape == images.shape
    assert attributions.dtype == torch.float32
    assert attributions.device.type == "cpu"
    std = torch.tensor(STD).view(1, 2, 1, 1)
    expected = weight[labels].view(-1, 2, 3, 3) / std
    torch.testing.assert_close(attributions, expected)
    # signed, not absolute values
    assert (attributions < 0).any()


def test_gradient_of_a_plain_linear_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(18, 3))
    images, _ = _inputs(6)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    attributions = gradient(model, images, labels, batch_size=4, seed=0)
    expected = model[1].weight.detach()[labels].view(-1, 2, 3, 3)
    torch.testing.assert_close(attributions, expected)


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_gradient_does_not_depend_on_batching(batch_size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(18, 8), nn.Tanh(), nn.Linear(8, 4)).eval()
    images, labels = _inputs(10)
    whole = gradient(model, images, labels, batch_size=100, seed=0)
    batched = gradient(model, images, labels, batch_size=batch_size, seed=0)
    torch.testing.assert_close(batched, whole)
    one_by_one = torch.cat(
        [
            gradient(model, images[i : i + 1], labels[i : i + 1], batch_size=1, seed=0)
            for i in range(10)
        ]
    )
    torch.testing.assert_close(one_by_one, whole)


def test_gradient_targets_the_given_label():
    model = linear_model()
    images, _ = _inputs(4)
    zeros = gradient(model, images, torch.zeros(4, dtype=torch.long), batch_size=4, seed=0)
    ones = gradient(model, images, torch.ones(4, dtype=torch.long), batch_size=4, seed=0)
    assert not torch.allclose(zeros, ones)


def test_random_is_deterministic_per_seed_and_independent_of_the_model():
    images, labels = _inputs(5)
    first = random(linear_model(0), images, labels, batch_size=2, seed=3)
    again = random(linear_model(1), images * 0, labels, batch_size=5, seed=3)
    other = random(linear_model(0), images, labels, batch_size=2, seed=4)
    assert first.shape == images.shape
    assert first.dtype == torch.float32
    assert first.min() >= 0 and first.max() < 1
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)
    # different coordinates and images get different scores
    assert len(torch.unique(first)) == first.numel()


def test_methods_registry():
    assert sorted(METHODS) == ["gradient", "random"]
    assert METHODS["gradient"] is gradient
    assert METHODS["random"] is random


def test_block_seeds_differ_by_split_and_start_and_seed():
    seeds = {
        (seed, split, start): saliency.block_seed(seed, split, start)
        for seed in (0, 1)
        for split in ("train", "val", "test")
        for start in (0, 8192)
    }
    assert len(set(seeds.values())) == len(seeds)
    assert saliency.block_seed(0, "val", 8192) == seeds[(0, "val", 8192)]


def test_run_saliency_writes_closed_form_gradients(tmp_path):
    model = linear_model()
    spec = {
        "architecture": "mlp",
        "hidden_sizes": [],
        "input_shape": [2, 3, 3],
        "num_classes": 4,
        "channel_mean": MEAN,
        "channel_std": STD,
    }
    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(
        checkpoint,
        model,
        spec,
        {"dataset": "tiny", "model": "lin", "seed": 0, "config_fingerprint": "f"},
    )
    dataset = create_store(tmp_path / "dataset.zarr", {"pixel_max": 4.0})
    rng = np.random.default_rng(0)
    for split in SPLITS:
        group = dataset.create_group(split)
        write_array(group, "images", rng.integers(0, 5, size=(5, 2, 3, 3), dtype=np.uint8))
        write_array(group, "labels", rng.integers(0, 4, size=5).astype(np.int64))
    out = tmp_path / "saliency.zarr"
    run_saliency(
        str(tmp_path / "dataset.zarr"),
        str(checkpoint),
        str(out),
        method="gradient",
        batch_size=2,
        seed=0,
    )
    weight = model[1][-1].weight.detach().numpy()
    std = np.array(STD, dtype=np.float32).reshape(1, 2, 1, 1)
    for split in SPLITS:
        labels = read_split(tmp_path / "dataset.zarr", split)["labels"]
        stored = read_split(out, split)["attributions"]
        assert stored.dtype == np.float32
        np.testing.assert_allclose(stored, weight[labels].reshape(-1, 2, 3, 3) / std, rtol=1e-5)
