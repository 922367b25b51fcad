"""2. Attribution throughput: each method on a batch against the same method image by image.

Both call diffroar.saliency's method with its default settings (32 integration steps, 16 noisy
samples) on the same model and images, each image with its own seed (`image_seeds`); the batched
call uses the CPU's "auto" batch sizes (what the saliency job runs on a CPU), the per-image loop
is the baseline; each is repeated to last at least MEASURED_SECONDS per timed round. The models
are diffroar's default mlp (every method but Grad-CAM, which needs a convolution) and cnn,
freshly initialised: attribution cost does not depend on the weights' values. The last row is
the issue's target: batched at least as fast as image by image for every method on every
architecture (the lowest ratio of the rows above).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffroar.saliency import METHODS, Settings, batch_sizes, image_seeds

from .common import Row, alternate, fashion_or_digits, seconds
from .models import bench_model

TARGETS = {"gradient": 10.0}
EVERY_METHOD_TARGET = 1.0  # batched >= image by image


MEASURED_SECONDS = 0.25  # each timed round lasts at least this long: a shared machine's stalls
# of a few milliseconds would otherwise decide the ratio of the cheap methods (mlp, controls)
QUICK_SECONDS = 0.02  # --quick checks that every case runs and measures, not the ratios


def _loops(function: Callable[[], Any], measured_seconds: float) -> int:
    """How many calls of `function` (timed once, after a warm-up call) last `measured_seconds`."""
    function()
    return max(1, math.ceil(measured_seconds / max(seconds(function), 1e-6)))


def _repeated(function: Callable[[], Any], loops: int) -> Callable[[], None]:
    def repeated() -> None:
        for _ in range(loops):
            function()

    return repeated


def run(quick: bool) -> list[Row]:
    batched_count, single_count = (64, 8) if quick else (256, 16)
    images, labels, pixel_max, data_name = fashion_or_digits(batched_count)
    x = torch.from_numpy(images.astype(np.float32) / np.float32(pixel_max))
    y = torch.from_numpy(labels)
    seeds = image_seeds(0, 0, "train", range(batched_count))
    sizes = batch_sizes({}, torch.device("cpu"))
    rows = []
    for architecture in ("mlp", "cnn"):
        model = bench_model(architecture, images, pixel_max).eval()
        # Grad-CAM on the cnn's last convolution; the mlp has none
        settings = Settings(layer="conv2" if architecture == "cnn" else None, **sizes)
        for name, method in METHODS.items():
            if name == "gradcam" and architecture == "mlp":
                continue

            def batched(method=method, model=model, settings=settings):
                method(model, x, y, settings, seeds=seeds)

            def one_by_one(method=method, model=model, settings=settings):
                for i in range(single_count):
                    method(model, x[i : i + 1], y[i : i + 1], settings, seeds=seeds[i : i + 1])

            round_seconds = QUICK_SECONDS if quick else MEASURED_SECONDS
            loops = {
                name: _loops(f, round_seconds)
                for name, f in (("batched", batched), ("per_image", one_by_one))
            }
            times = alternate(
                {
                    "batched": _repeated(batched, loops["batched"]),
                    "per_image": _repeated(one_by_one, loops["per_image"]),
                },
                3,
            )
            ours = batched_count * loops["batched"] / times["batched"]
            baseline = single_count * loops["per_image"] / times["per_image"]
            target = TARGETS.get(name, EVERY_METHOD_TARGET)
            rows.append(
                Row(
                    benchmark="attribution throughput",
                    case=f"{architecture} {name}",
                    value=ours,
                    unit="images/s",
                    baseline=baseline,
                    ratio=ours / baseline,
                    target=f">= {target:g}x",
                    met=ours / baseline >= target,
                    note=f"{data_name}; batches of {batched_count} against {single_count} "
                    f"single images; batch_size {settings.batch_size}, internal_batch_size "
                    f"{settings.internal_batch_size}",
                )
            )
    slowest = min(rows, key=lambda row: row.ratio)
    rows.append(
        Row(
            benchmark="attribution throughput",
            case="batched >= per image, every method and architecture",
            value=slowest.ratio,
            unit="x (lowest ratio)",
            target=f">= {EVERY_METHOD_TARGET:g}x",
            met=slowest.ratio >= EVERY_METHOD_TARGET,
            note=f"the lowest batched / per-image ratio of the {len(rows)} cases above: "
            f"{slowest.case}",
        )
    )
    return rows
