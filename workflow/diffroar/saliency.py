"""Stage `saliency`: attributions of a base model for every train, validation and test image.

Every method has one signature, `method(model, images, labels, *, batch_size, seed)`, taking
images (N, C, H, W) float32 in [0, 1] and labels (N,) int64 on the model's device, and returns
signed attributions (N, C, H, W) float32 on the CPU. `METHODS` maps config names to methods.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .data import read_attributes
from .models import load_checkpoint
from .runtime import device, log, package_version
from .store import SPLITS, create_empty, create_store, open_store, sample_blocks

# Images attributed per block read from the dataset store: bounds memory for large datasets.
BLOCK_IMAGES = 8192


def gradient(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, seed: int
) -> torch.Tensor:
    """Gradient of the true-class logit with respect to the input (Captum's Saliency, signed)."""
    from captum.attr import Saliency

    explainer = Saliency(model)
    parts = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        target = labels[start : start + batch_size]
        parts.append(explainer.attribute(batch, target=target, abs=False).detach().cpu())
    return torch.cat(parts)


def random(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, seed: int
) -> torch.Tensor:
    """The control: uniform random scores from `seed`, independent of model and image."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(images.shape, generator=generator, dtype=torch.float32)


METHODS: dict[str, Callable[..., torch.Tensor]] = {"gradient": gradient, "random": random}


def block_seed(seed: int, split: str, start: int) -> int:
    """An independent seed for the block of `split` that starts at sample `start`."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), start]).generate_state(1)[0])


def run_saliency(
    dataset_path: str,
    checkpoint_path: str,
    out_path: str,
    *,
    method: str,
    batch_size: int,
    seed: int,
) -> None:
    """Attribute every image of every split with `method` and write the saliency store."""
    model, checkpoint = load_checkpoint(checkpoint_path)
    on = device()
    model = model.to(on)
    dataset = read_attributes(dataset_path)
    root = create_store(
        out_path,
        {
            "dataset": checkpoint["dataset"],
            "model": checkpoint["model"],
            "base_seed": checkpoint["seed"],
            "method": method,
            "seed": seed,
            "target": "true-class logit",
            "input_space": "pixels scaled to [0, 1], before the model's normalisation",
            "values": "signed attributions; rankings use their absolute value per coordinate",
            "checkpoint_fingerprint": checkpoint["config_fingerprint"],
            "package_version": package_version(),
        },
    )
    source = open_store(dataset_path)
    pixel_max = np.float32(dataset["pixel_max"])
    for split in SPLITS:
        stored = source[split]["images"]
        attributions = create_empty(
            root.create_group(split), "attributions", stored.shape, "float32"
        )
        labels = source[split]["labels"][...]
        for block in sample_blocks(stored, BLOCK_IMAGES):
            images = torch.from_numpy(stored[block].astype(np.float32) / pixel_max).to(on)
            target = torch.from_numpy(labels[block]).to(on)
            values = METHODS[method](
                model,
                images,
                target,
                batch_size=batch_size,
                seed=block_seed(seed, split, block.start),
            )
            attributions[block] = values.numpy()
        log.info(
            "%s/%s seed %s: %s attributions of %d %s images",
            checkpoint["dataset"],
            checkpoint["model"],
            checkpoint["seed"],
            method,
            len(labels),
            split,
        )
