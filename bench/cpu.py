"""6. CPU efficiency: training a wide MLP, in FLOP/s, against this machine's matrix multiply.

The reference is torch's float32 matrix multiply of two 2048x2048 matrices (2n^3 FLOP each), on
the same threads, measured in the same run. The wide MLP (784-4096-4096-10 on 1x28x28 images,
batch 256) is trained for one epoch by diffroar.train.train; its FLOP count is that of its
linear layers, forward (2 per weight per sample) and backward (4: the input and the weight
gradients), so 6 per weight per sample; ReLUs, the loss and Adam are left out of the count but
not out of the time.
"""

from __future__ import annotations

import numpy as np
import torch
from diffroar.train import train

from .common import Row, alternate, fashion_or_digits
from .models import bench_model

WIDTH = 4096
BATCH_SIZE = 256
MATRIX = 2048


def run(quick: bool) -> list[Row]:
    count = 256 if quick else 4096  # quick: one epoch is one batch
    images, labels, pixel_max, data_name = fashion_or_digits(count)
    x = torch.from_numpy(images.astype(np.float32) / np.float32(pixel_max))
    y = torch.from_numpy(labels)
    model = bench_model("mlp", images, pixel_max, hidden_sizes=[WIDTH, WIDTH])
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    a, b = torch.randn(MATRIX, MATRIX), torch.randn(MATRIX, MATRIX)
    multiplies = 1 if quick else 16

    def matmul():
        for _ in range(multiplies):
            torch.mm(a, b)

    def epoch():
        train(
            model,
            (x, y),
            {},
            epochs=1,
            batch_size=BATCH_SIZE,
            learning_rate=1e-4,
            weight_decay=0.0,
            seed=0,
        )

    times = alternate({"matmul": matmul, "train": epoch}, 1 if quick else 3)
    peak = multiplies * 2 * MATRIX**3 / times["matmul"]
    achieved = 6 * weights * count / times["train"]
    return [
        Row(
            "CPU efficiency",
            f"wide MLP training ({WIDTH}-{WIDTH}, batch {BATCH_SIZE})",
            achieved / 1e9,
            "GFLOP/s",
            baseline=peak / 1e9,
            ratio=achieved / peak,
            note=f"against {MATRIX}x{MATRIX} float32 matmul on {torch.get_num_threads()} "
            f"threads; {count} {data_name} images",
        )
    ]
