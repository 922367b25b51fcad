"""3. Masking throughput and the bytes on disk of every artifact.

A real dataset store is written by the data stage's `prepare` (a Fashion-MNIST subset, or the
digits where Fashion-MNIST is not installed); an MLP is trained on it for one epoch and its
`gradient` attributions written by the saliency stage. The mask stage then writes top-k masked
copies of all splits for each imputation and k, timed: images/s includes ranking, imputation and
the compressed zarr write. Sizes are the files on disk, against the raw dataset bytes (one byte
per uint8 pixel of every split, no header).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from diffroar.config import validate_config
from diffroar.data import prepare, read_attributes
from diffroar.datafiles import SOURCES, files_problem
from diffroar.mask import run_mask
from diffroar.models import save_checkpoint
from diffroar.saliency import run_saliency
from diffroar.store import SPLITS, open_store
from diffroar.train import start_training, train

from .common import Row

IMPUTATIONS = ("mean", "noisy_linear")
KEEP_FRACTIONS = (0.1, 0.5, 0.9)
TARGET_RATIO = 2.0


def disk_bytes(path: Path) -> int:
    """Bytes of the file at `path`, or of every file under the folder `path`."""
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def dataset_config(quick: bool) -> dict:
    """The data section of a small real dataset: Fashion-MNIST where installed, else digits."""
    fashion = SOURCES["fashion_mnist"].default_root
    if files_problem(SOURCES["fashion_mnist"], fashion) is None:
        sizes = (1000, 250) if quick else (6000, 1000)
        dataset = {"loader": "fashion_mnist", "train_size": sizes[0], "test_size": sizes[1]}
    else:
        dataset = {"loader": "digits"}
    config = validate_config(
        {
            "experiment": {
                "datasets": ["bench"],
                "models": ["mlp"],
                "methods": ["gradient"],
                "keep_fractions": [0.1],
            },
            "datasets": {"bench": dataset},
            "models": {"mlp": {"architecture": "mlp"}},
        }
    )
    return config


def run(quick: bool) -> list[Row]:
    config = dataset_config(quick)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data, checkpoint, saliency = root / "data.zarr", root / "model.safetensors", root / "s.zarr"
        prepare("bench", config["datasets"]["bench"], data)
        attributes = read_attributes(data)
        model, spec, splits, _ = start_training(
            str(data), config["models"]["mlp"], 0, torch.device("cpu")
        )
        train(
            model,
            splits["train"],
            {},
            epochs=1,
            batch_size=64,
            learning_rate=1e-3,
            weight_decay=0.0,
            seed=0,
        )
        info = {"dataset": "bench", "model": "mlp", "seed": 0, "config_fingerprint": "bench"}
        save_checkpoint(checkpoint, model, spec, info)
        run_saliency(str(data), str(checkpoint), str(saliency), method="gradient", settings={})
        store = open_store(data)
        raw = sum(store[split]["images"].nbytes for split in SPLITS)
        images = sum(store[split]["images"].shape[0] for split in SPLITS)
        name = f"{attributes['config']['loader']} {images} images {tuple(attributes['shape'])}"
        for artifact, path in (
            ("dataset store", data),
            ("checkpoint (mlp 256-256)", checkpoint),
            ("saliency store (gradient)", saliency),
        ):
            size = disk_bytes(path)
            rows.append(Row("bytes on disk", artifact, size, "bytes", raw, size / raw, note=name))
        for imputation in IMPUTATIONS:
            for keep_fraction in KEEP_FRACTIONS:
                masked = root / f"{imputation}-{keep_fraction}.zarr"
                started = time.perf_counter()
                run_mask(
                    str(data),
                    str(saliency),
                    {"top": str(masked)},
                    keep_fraction=keep_fraction,
                    imputation=imputation,
                    ranking="coordinate",
                    tiebreak_seed=0,
                    noise=config["masking"]["noise"],
                )
                elapsed = time.perf_counter() - started
                case = f"{imputation}, k = {keep_fraction:g}"
                rows.append(
                    Row(
                        "masking throughput",
                        case,
                        images / elapsed,
                        "images/s",
                        note=f"{name}, all splits, zarr write included",
                    )
                )
                size = disk_bytes(masked)
                rows.append(
                    Row(
                        "bytes on disk",
                        f"masked store ({case})",
                        size,
                        "bytes",
                        raw,
                        size / raw,
                        target=f"<= {TARGET_RATIO:g}x raw",
                        met=size / raw <= TARGET_RATIO,
                        note=name,
                    )
                )
    return rows
