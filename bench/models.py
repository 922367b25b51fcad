"""The models the throughput benchmarks run: diffroar's own architectures with their defaults."""

from __future__ import annotations

import numpy as np
import torch
from diffroar.architectures import ARCHITECTURE_OPTIONS
from diffroar.models import build_model, model_spec
from torch import nn


def bench_model(architecture: str, images: np.ndarray, pixel_max: float, **options) -> nn.Module:
    """A freshly initialised (seed 0) `architecture` for `images`, with the default options of
    diffroar.architectures unless `options` override them."""
    scaled = images.astype(np.float64) / pixel_max
    attributes = {
        "shape": list(images.shape[1:]),
        "num_classes": 10,
        "channel_mean": scaled.mean(axis=(0, 2, 3)).tolist(),
        "channel_std": scaled.std(axis=(0, 2, 3)).tolist(),
    }
    config = {"architecture": architecture, **ARCHITECTURE_OPTIONS[architecture], **options}
    torch.manual_seed(0)
    return build_model(model_spec(config, attributes))
