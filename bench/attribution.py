"""2. Attribution throughput: each method on a batch against the same method image by image.

Both call diffroar.saliency's method with its default settings (32 integration steps, 16 noisy
samples) on the same model and images; the batched call is what the saliency rule runs, the
per-image loop is the baseline. The models are diffroar's default mlp (every method but Grad-CAM,
which needs a convolution) and cnn, freshly initialised: attribution cost does not depend on the
weights' values.
"""

from __future__ import annotations

import numpy as np
import torch
from diffroar.saliency import METHODS, Settings

from .common import Row, alternate, fashion_or_digits
from .models import bench_model

TARGETS = {"gradient": 10.0}


def run(quick: bool) -> list[Row]:
    batched_count, single_count = (64, 8) if quick else (256, 16)
    images, labels, pixel_max, data_name = fashion_or_digits(batched_count)
    x = torch.from_numpy(images.astype(np.float32) / np.float32(pixel_max))
    y = torch.from_numpy(labels)
    rows = []
    for architecture in ("mlp", "cnn"):
        model = bench_model(architecture, images, pixel_max).eval()
        # Grad-CAM on the cnn's last convolution; the mlp has none
        settings = Settings(layer="conv2" if architecture == "cnn" else None)
        for name, method in METHODS.items():
            if name == "gradcam" and architecture == "mlp":
                continue

            def batched(method=method, model=model, settings=settings):
                method(model, x, y, settings, seed=0)

            def one_by_one(method=method, model=model, settings=settings):
                for index in range(single_count):
                    method(model, x[index : index + 1], y[index : index + 1], settings, seed=0)

            times = alternate({"batched": batched, "per_image": one_by_one}, 3)
            ours = batched_count / times["batched"]
            baseline = single_count / times["per_image"]
            target = TARGETS.get(name)
            rows.append(
                Row(
                    benchmark="attribution throughput",
                    case=f"{architecture} {name}",
                    value=ours,
                    unit="images/s",
                    baseline=baseline,
                    ratio=ours / baseline,
                    target=None if target is None else f">= {target:g}x",
                    met=None if target is None else ours / baseline >= target,
                    note=f"{data_name}; batches of {batched_count} against {single_count} "
                    "single images",
                )
            )
    return rows
