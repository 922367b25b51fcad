"""1. Training throughput: diffroar's training loop against a textbook DataLoader loop.

The textbook loop is the one PyTorch's tutorials teach: a Dataset that returns one (image, label)
pair at a time, made the way torchvision's MNIST and FashionMNIST datasets make it (a PIL image of
the stored uint8 pixels through `transforms.ToTensor()`), torch's default collate, a shuffling
DataLoader in the main process, Adam. diffroar.train.train keeps the whole split as one tensor and
cuts batches by index. Both run one epoch on the same images, model (same initial weights) and
batch size; samples/s is the median over rounds that alternate them. A third loop, the model's
float32 steps alone on batches cut beforehand (per-tensor Adam, as the textbook's), bounds what
a float32 loop with that optimizer could reach. On a CPU diffroar's loop runs at
`training.precision` `auto` (float32, the textbook's arithmetic) and at `bfloat16` (bf16
autocast, channels-last, fused Adam); on a GPU at `auto`.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from diffroar.train import native_bf16, resolve_precision, train
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from .common import Row, alternate, fashion_or_digits
from .models import bench_model

BATCH_SIZE = 64
CUDA_BATCH_SIZE = 512  # a GPU needs larger batches to be busy; both loops use it there
LEARNING_RATE = 1e-3


class OneImage(Dataset):
    """(image float32 in [0, 1], label) per index, as torchvision's MNIST datasets return them:
    `Image.fromarray` of the uint8 plane, then `ToTensor()` (which divides by 255)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images[:, 0], labels
        self.transform = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index], mode="L")
        return self.transform(image), int(self.labels[index])


def textbook_epoch(model, images, labels, pixel_max, on, batch_size) -> None:
    cuda = on.type == "cuda"
    loader = DataLoader(
        OneImage(images, labels),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        pin_memory=cuda,  # the tutorials' advice for a GPU
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for batch, target in loader:
        batch, target = batch.to(on, non_blocking=cuda), target.to(on, non_blocking=cuda)
        loss = F.cross_entropy(model(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def diffroar_epoch(model, images, labels, pixel_max, on, batch_size, precision="auto") -> None:
    # as a training job: the split moved to the device once, then index slices of it
    split = (
        torch.from_numpy(images.astype(np.float32) / np.float32(pixel_max)).to(on),
        torch.from_numpy(labels.astype(np.int64)).to(on),
    )
    train(
        model,
        split,
        {},
        epochs=1,
        batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        weight_decay=0.0,
        seed=0,
        precision=precision,
    )


def compute_epoch(model, images, labels, pixel_max, on, batch_size) -> None:
    """The model's share of an epoch alone: the textbook loop's steps on batches cut before the
    clock starts (see `run`). No loop that feeds the same model can beat it."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for batch, target in images:
        loss = F.cross_entropy(model(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def epoch_seconds(
    architecture: str,
    count: int,
    repeats: int,
    on: torch.device,
    batch_size: int,
    precisions: tuple[str, ...] = ("auto",),
) -> tuple[dict[str, float], str]:
    """Median seconds of one epoch of each loop on `count` images on device `on` (diffroar's at
    each of `precisions`, keyed `diffroar <precision>`), and the data's name."""
    images, labels, pixel_max, data_name = fashion_or_digits(count)
    state = bench_model(architecture, images, pixel_max).state_dict()
    scaled = torch.from_numpy(images.astype(np.float32) / np.float32(pixel_max)).to(on)
    batches = list(
        zip(
            scaled.split(batch_size),
            torch.from_numpy(labels.astype(np.int64)).to(on).split(batch_size),
            strict=True,
        )
    )

    def epoch(loop, data):
        def go():
            model = bench_model(architecture, images, pixel_max).to(on)
            model.load_state_dict(state)
            loop(model, data, labels, pixel_max, on, batch_size)
            if on.type == "cuda":
                torch.cuda.synchronize(on)

        return go

    loops = {
        f"diffroar {precision}": epoch(partial(diffroar_epoch, precision=precision), images)
        for precision in precisions
    } | {
        "textbook": epoch(textbook_epoch, images),
        "compute": epoch(compute_epoch, batches),
    }
    return alternate(loops, repeats), data_name


def run(quick: bool, on: torch.device | None = None) -> list[Row]:
    """The rows on the CPU (the targets: diffroar's loop at its default precision and at
    `precision: bfloat16`), or on device `on` (`python -m bench --device cuda`: the GPU
    path, samples/s against the textbook loop on the same GPU, no target)."""
    on = on or torch.device("cpu")
    cuda = on.type == "cuda"
    batch_size = CUDA_BATCH_SIZE if cuda else BATCH_SIZE
    if cuda:
        where = f"{torch.cuda.get_device_name(on)}, precision auto: {resolve_precision('auto', on)}"
    else:
        bf16 = "with" if native_bf16(on) else "without"
        where = f"{torch.get_num_threads()} threads, a CPU {bf16} bf16 arithmetic"
    rows = []
    precisions = ("auto",) if cuda else ("auto", "bfloat16")
    for architecture, count, target in (
        ("mlp", 2048 if quick else 16384, 3.0),
        ("cnn", 512 if quick else 4096, 1.5),
    ):
        if cuda:
            count, target = count * 4, None
        times, data_name = epoch_seconds(
            architecture, count, 3 if quick else 5, on, batch_size, precisions
        )
        textbook = count / times["textbook"]
        bound = times["textbook"] / times["compute"]
        for precision in precisions:
            ours = count / times[f"diffroar {precision}"]
            setting = "" if precision == "auto" else f", precision {precision}"
            rows.append(
                Row(
                    benchmark="training throughput",
                    case=f"{architecture}, batch {batch_size}{setting}"
                    + (f", {on.type}" if cuda else ""),
                    value=ours,
                    unit="samples/s",
                    baseline=textbook,
                    ratio=ours / textbook,
                    target=None if target is None else f">= {target:g}x",
                    met=None if target is None else ours / textbook >= target,
                    note=f"{count} {data_name} images, {where}; diffroar at training.precision "
                    f"{precision} ({resolve_precision(precision, on)}), the textbook loop in "
                    f"float32, whose forward, backward and Adam steps alone on ready batches run "
                    f"{bound:.2f}x it",
                )
            )
    return rows
