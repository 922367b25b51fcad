"""1. Training throughput: diffroar's training loop against a textbook DataLoader loop.

The textbook loop is the one PyTorch's tutorials teach: a Dataset that returns one (image, label)
pair at a time, made the way torchvision's MNIST and FashionMNIST datasets make it (a PIL image of
the stored uint8 pixels through `transforms.ToTensor()`), torch's default collate, a shuffling
DataLoader in the main process, Adam. diffroar.train.train keeps the whole split as one tensor and
cuts batches by index. Both run one epoch on the same images, model (same initial weights) and
batch size; samples/s is the median over rounds that alternate them. A third loop, the model's
steps alone on batches cut beforehand, bounds what any loop could reach.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffroar.train import train
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from .common import Row, alternate, fashion_or_digits
from .models import bench_model

BATCH_SIZE = 64
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


def textbook_epoch(model, images, labels, pixel_max) -> None:
    loader = DataLoader(
        OneImage(images, labels),
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for batch, target in loader:
        loss = F.cross_entropy(model(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def diffroar_epoch(model, images, labels, pixel_max) -> None:
    split = (
        torch.from_numpy(images.astype(np.float32) / np.float32(pixel_max)),
        torch.from_numpy(labels.astype(np.int64)),
    )
    train(
        model,
        split,
        {},
        epochs=1,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        weight_decay=0.0,
        seed=0,
    )


def compute_epoch(model, images, labels, pixel_max) -> None:
    """The model's share of an epoch alone: the textbook loop's steps on batches cut before the
    clock starts (see `run`). No loop that feeds the same model can beat it."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for batch, target in images:
        loss = F.cross_entropy(model(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def epoch_seconds(architecture: str, count: int, repeats: int) -> tuple[dict[str, float], str]:
    """Median seconds of one epoch of each loop on `count` images, and the data's name."""
    images, labels, pixel_max, data_name = fashion_or_digits(count)
    state = bench_model(architecture, images, pixel_max).state_dict()
    scaled = torch.from_numpy(images.astype(np.float32) / np.float32(pixel_max))
    batches = list(
        zip(scaled.split(BATCH_SIZE), torch.from_numpy(labels).split(BATCH_SIZE), strict=True)
    )

    def epoch(loop, data):
        def go():
            model = bench_model(architecture, images, pixel_max)
            model.load_state_dict(state)
            loop(model, data, labels, pixel_max)

        return go

    loops = {
        "diffroar": epoch(diffroar_epoch, images),
        "textbook": epoch(textbook_epoch, images),
        "compute": epoch(compute_epoch, batches),
    }
    return alternate(loops, repeats), data_name


def run(quick: bool) -> list[Row]:
    rows = []
    for architecture, count, target in (
        ("mlp", 2048 if quick else 16384, 3.0),
        ("cnn", 512 if quick else 4096, None),
    ):
        times, data_name = epoch_seconds(architecture, count, 3 if quick else 5)
        ours, textbook = count / times["diffroar"], count / times["textbook"]
        bound = times["textbook"] / times["compute"]
        rows.append(
            Row(
                benchmark="training throughput",
                case=f"{architecture}, batch {BATCH_SIZE}",
                value=ours,
                unit="samples/s",
                baseline=textbook,
                ratio=ours / textbook,
                target=None if target is None else f">= {target:g}x",
                met=None if target is None else ours / textbook >= target,
                note=f"{count} {data_name} images, {torch.get_num_threads()} threads; the "
                f"model's own forward, backward and Adam steps on ready batches run {bound:.2f}x "
                "the textbook loop, the most any loop feeding this model could reach",
            )
        )
    return rows
