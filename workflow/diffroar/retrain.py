"""Stage `retrain`: train a fresh model on one masked dataset, of the base model's architecture
unless the config's `retraining.model` names another.

Always standard training. The model is evaluated on the equally masked validation and test sets
after every epoch; the reported accuracy is the test accuracy at the epoch of best validation
accuracy (the earliest, on ties), and the last epoch's beside it.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .models import save_checkpoint
from .runtime import device, log, package_version, write_json
from .train import start_training, train, training_mode


def select_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The record of the epoch with the highest validation accuracy (the earliest on ties)."""
    return max(history, key=lambda record: (record["val_accuracy"], -record["epoch"]))


def run_retrain(
    masked_path: str,
    checkpoint_path: str,
    metrics_path: str,
    *,
    base_model_cfg: dict[str, Any],
    model_cfg: dict[str, Any],
    retraining_cfg: dict[str, Any],
    retrain_seed: int,
    config_fingerprint: str,
) -> None:
    """Retrain a `model_cfg` model on the masked store at `masked_path` and write checkpoint and
    metrics JSON (which describe the base model, `base_model_cfg`, and the retrained one)."""
    started = time.perf_counter()
    on = device()
    model, spec, splits, attributes = start_training(masked_path, model_cfg, retrain_seed, on)
    masking = attributes["masking"]
    log.info(
        "retraining %s on %s %s-%g masked by %s with %s imputation (retrain seed %d) on %s",
        model_cfg["architecture"],
        attributes["dataset"],
        masking["order"],
        masking["keep_fraction"],
        masking["method"],
        masking["imputation"],
        retrain_seed,
        on,
    )
    history = train(
        model,
        splits["train"],
        {"val": splits["val"], "test": splits["test"]},
        seed=retrain_seed,
        **retraining_cfg,
    )
    selected = select_epoch(history)
    info = {
        "dataset": attributes["dataset"],
        "model": masking["model"],
        "base_seed": masking["base_seed"],
        "method": masking["method"],
        "imputation": masking["imputation"],
        "ranking": masking["ranking"],
        "order": masking["order"],
        "keep_fraction": masking["keep_fraction"],
        "retrain_seed": retrain_seed,
        "config_fingerprint": config_fingerprint,
        "package_version": package_version(),
        "torch_version": torch.__version__,
    }
    save_checkpoint(checkpoint_path, model.cpu(), spec, info)
    write_json(
        metrics_path,
        {
            **info,
            "architecture": base_model_cfg["architecture"],
            "training_mode": training_mode(base_model_cfg),
            "retrain_architecture": model_cfg["architecture"],
            "kept_coordinates": masking["kept_coordinates"],
            "test_accuracy": selected["test_accuracy"],
            "test_accuracy_last_epoch": history[-1]["test_accuracy"],
            "selected_epoch": selected["epoch"],
            "epochs": len(history),
            "history": history,
            "config": {"retraining": retraining_cfg},
            "wall_seconds": time.perf_counter() - started,
        },
    )
    log.info(
        "test accuracy %.4f at selected epoch %d, %.4f at the last",
        selected["test_accuracy"],
        selected["epoch"],
        history[-1]["test_accuracy"],
    )
