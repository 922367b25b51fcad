"""Stage `train`: fit a base model, standard or PGD adversarial, on a dataset store.

`train()` is the one training loop of diffroar; `retrain` uses it too. Data sits in memory as
tensors on the device and batches are index slices of them.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import expect_inputs
from .data import read_attributes, read_images
from .models import build_model, model_spec, save_checkpoint
from .plugins import named
from .runtime import device, log, package_version, write_json
from .store import SPLITS

EVAL_BATCH = 1024


def attack_settings(model_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """PGD settings of a model's training config (None for standard training)."""
    training = model_cfg["training"]
    if training["mode"] == "standard":
        return None
    eps, steps = float(training["eps"]), int(training["steps"])
    step_size = training.get("step_size") or 2.5 * eps / steps
    return {"norm": training["norm"], "eps": eps, "steps": steps, "step_size": float(step_size)}


def training_mode(model_cfg: dict[str, Any]) -> str:
    """'standard', 'pgd_linf' or 'pgd_l2': the name used in tables."""
    training = model_cfg["training"]
    return "standard" if training["mode"] == "standard" else f"pgd_{training['norm']}"


def _l2_norms(t: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norms shaped to broadcast against `t` (N, 1, 1, ...)."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


def _project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta * (eps / _l2_norms(delta)).clamp(max=1.0)


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
) -> torch.Tensor:
    """Worst-case images within the `norm` ball of radius `eps` around `images` (values kept in
    [0, 1]), found by `steps` projected gradient ascent steps on the cross-entropy from a random
    start. Uses torch's global RNG for the start."""
    was_training = model.training
    model.eval()
    if norm == "linf":
        delta = torch.empty_like(images).uniform_(-eps, eps)
    else:
        delta = torch.randn_like(images)
        delta = delta / _l2_norms(delta)
        radius = torch.rand(len(images), device=images.device) * eps
        delta = delta * radius.view(-1, *[1] * (images.dim() - 1))
    delta = (images + delta).clamp(0, 1) - images
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(images + delta), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "linf":
                delta = (delta + step_size * grad.sign()).clamp(-eps, eps)
            else:
                delta = _project_l2(delta + step_size * grad / _l2_norms(grad), eps)
            delta = (images + delta).clamp(0, 1) - images
    model.train(was_training)
    return (images + delta).detach()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of `images` classified correctly (clean; diffroar.robust measures it under attack)."""
    model.eval()
    correct = 0
    for start in range(0, len(images), EVAL_BATCH):
        batch, target = images[start : start + EVAL_BATCH], labels[start : start + EVAL_BATCH]
        with torch.no_grad():
            correct += int((model(batch).argmax(1) == target).sum())
    return correct / len(images)


PRECISIONS = ("auto", "float32", "bfloat16")
DEFAULT_PRECISION = "auto"  # the schema's default of training.precision and retraining.precision


def native_bf16(on: torch.device) -> bool:
    """Whether device `on` has bf16 arithmetic in hardware: a CUDA GPU of compute capability 8.0
    or later, or a CPU with AVX512-BF16 or AMX. Elsewhere torch emulates bf16 (on an AVX2 CPU the
    cnn's bf16 steps measured 9x slower than its float32 ones)."""
    if on.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if on.type == "cpu":
        cpu = torch.cpu
        return any(
            getattr(cpu, probe, lambda: False)()
            for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
    return False


def resolve_precision(setting: str, on: torch.device) -> str:
    """The precision `training.precision` / `retraining.precision` `setting` trains in on device
    `on`: `float32` and `bfloat16` as written; `auto` is `bfloat16` on a CUDA GPU with bf16
    arithmetic and `float32` everywhere else (on every CPU, so a CPU run does not depend on the
    CPU's instruction set)."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision {setting!r} is not one of {', '.join(PRECISIONS)}")
    if setting == "auto":
        return "bfloat16" if on.type == "cuda" and native_bf16(on) else "float32"
    return setting


def trained_precision(settings: dict[str, Any], on: torch.device) -> str:
    """What a model trained with the `training` / `retraining` `settings` on device `on` records
    as its precision (`resolve_precision` of their `precision`, `auto` where they have none)."""
    return resolve_precision(settings.get("precision", DEFAULT_PRECISION), on)


def precision_settings(
    model: nn.Module, images: torch.Tensor, precision: str
) -> tuple[nn.Module, torch.Tensor, contextlib.AbstractContextManager]:
    """The model, the (N, C, H, W) images and the context the steps run in for `precision` (as
    `resolve_precision` returns it). `bfloat16`: model and images in channels-last memory (the
    layout bf16 convolutions are fast in, on Tensor Cores and on a CPU's oneDNN) and bf16 autocast
    (bf16 keeps float32's range, so no loss scaling; weights, Adam's state and the loss stay
    float32). `float32`: all three unchanged. (`train` also takes Adam's fused kernel for
    `bfloat16`: the same float32 update rounded differently, 1.5x the mlp's Adam steps on a CPU;
    `float32` keeps the per-tensor update, so a float32 run is bit for bit what it was.)"""
    if precision == "float32":
        return model, images, contextlib.nullcontext()
    if images.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    return model, images, torch.autocast(images.device.type, dtype=torch.bfloat16)


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """`order` cut into batches of `batch_size`; a last batch of one sample joins the one before
    (batch norm cannot train on a single sample)."""
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def train(
    model: nn.Module,
    train_split: tuple[torch.Tensor, torch.Tensor],
    eval_splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
    precision: str = DEFAULT_PRECISION,
    attack: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Fit `model` in place with Adam; with `attack`, on PGD images instead of the clean batch;
    in `precision` (a `resolve_precision` value; `auto` resolved here on the images' device).

    Returns one record per epoch: mean training `loss`, `train_accuracy` (on the batches trained
    on) and `<split>_accuracy` for every split of `eval_splits` (clean). Raises FloatingPointError
    when the loss stops being finite.
    """
    images, labels = train_split
    precision = resolve_precision(precision, images.device)
    if precision == "bfloat16" and not native_bf16(images.device):
        log.warning(
            "training in bfloat16 on %s, which has no bf16 arithmetic: torch emulates it, far "
            "slower than float32 (precision: float32 is the fast choice here)",
            images.device,
        )
    model, images, steps_context = precision_settings(model, images, precision)
    shuffle = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=learning_rate,
        weight_decay=weight_decay,
        fused=precision == "bfloat16" or None,
    )
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(images), generator=shuffle).to(images.device)
        loss_sum = torch.zeros((), device=images.device)
        correct = torch.zeros((), device=images.device, dtype=torch.long)
        for index in _batches(order, batch_size):
            batch, target = images[index], labels[index]
            with steps_context:
                if attack is not None:
                    batch = pgd(model, batch, target, **attack)
                logits = model(batch)
                loss = F.cross_entropy(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(index)
            correct += (logits.argmax(1) == target).sum()
        mean_loss = float(loss_sum) / len(images)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"training diverged at epoch {epoch}: mean loss {mean_loss}")
        record = {"epoch": epoch, "loss": mean_loss, "train_accuracy": int(correct) / len(images)}
        for name, (split_images, split_labels) in eval_splits.items():
            record[f"{name}_accuracy"] = accuracy(model, split_images, split_labels)
        history.append(record)
        log.info(
            "epoch %d/%d %s",
            epoch,
            epochs,
            " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"),
        )
    return history


def load_tensors(path: str | Path, split: str, on: torch.device) -> tuple[torch.Tensor, ...]:
    """(images float32 in [0, 1], labels int64) of one split of a store, on device `on`."""
    images, labels = read_images(path, split)
    return torch.from_numpy(images).to(on), torch.from_numpy(labels).to(on)


def start_training(
    store_path: str, model_cfg: dict[str, Any], seed: int, on: torch.device
) -> tuple[nn.Module, dict[str, Any], dict[str, tuple[torch.Tensor, ...]], dict[str, Any]]:
    """A fresh model initialised from `seed` for the dataset (or masked) store at `store_path`,
    its spec, the store's splits as tensors on `on`, and the store's attributes."""
    attributes = read_attributes(store_path)
    spec = model_spec(model_cfg, attributes)
    torch.manual_seed(seed)
    model = build_model(spec).to(on)
    splits = {split: load_tensors(store_path, split, on) for split in SPLITS}
    return model, spec, splits, attributes


def run_train(
    dataset_path: str,
    checkpoint_path: str,
    metrics_path: str,
    *,
    dataset: str,
    model_name: str,
    model_cfg: dict[str, Any],
    training_cfg: dict[str, Any],
    seed: int,
    config_fingerprint: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Train base model `model_name` with `seed` and write its checkpoint and metrics JSON (with
    the training `attack`; the robust test accuracy is the `robust` stage's, measured under
    `training.eval_attack`). With `expected` (input path -> the identity the rule expects), a
    dataset store that records another dataset or dataset config is refused."""
    expect_inputs(expected, [dataset_path])
    started = time.perf_counter()
    on = device()
    with named(f"model {model_name!r}"):
        model, spec, splits, _ = start_training(dataset_path, model_cfg, seed, on)
    attack = attack_settings(model_cfg)
    log.info("training %s on %s (seed %d, %s) on %s", model_name, dataset, seed, attack, on)
    history = train(
        model, splits["train"], {"val": splits["val"]}, seed=seed, attack=attack, **training_cfg
    )
    test_accuracy = accuracy(model, *splits["test"])
    log.info("test accuracy %.4f", test_accuracy)
    info = model_info(dataset, model_name, seed, config_fingerprint, source="trained") | {
        "precision": trained_precision(training_cfg, on)
    }
    results = {
        "attack": attack,
        "config": {"model": model_cfg, "training": training_cfg},
        "history": history,
        "test_accuracy": test_accuracy,
    }
    write_base_model(checkpoint_path, metrics_path, model, spec, info, model_cfg, results, started)


def model_info(
    dataset: str, model_name: str, seed: int, config_fingerprint: str, **source: Any
) -> dict[str, Any]:
    """What a base model's checkpoint records of where it came from (its metrics JSON starts
    with it too): `source` is {"source": "trained"} or "imported" with the imported file's
    details, between the run's identity and the versions."""
    return {
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        "config_fingerprint": config_fingerprint,
        **source,
        "package_version": package_version(),
        "torch_version": torch.__version__,
    }


def write_base_model(
    checkpoint_path: str,
    metrics_path: str,
    model: nn.Module,
    spec: dict[str, Any],
    info: dict[str, Any],
    model_cfg: dict[str, Any],
    results: dict[str, Any],
    started: float,
) -> None:
    """Write a base model's checkpoint (its weights on the CPU, `spec`, `info`) and its metrics
    JSON: `info`, the architecture and training mode, `results`, and the seconds since
    `started` (time.perf_counter)."""
    save_checkpoint(checkpoint_path, model.cpu(), spec, info)
    write_json(
        metrics_path,
        {
            **info,
            "architecture": model_cfg["architecture"],
            "training_mode": training_mode(model_cfg),
            **results,
            "wall_seconds": time.perf_counter() - started,
        },
    )
