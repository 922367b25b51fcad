"""Stage `retrain`: train a fresh model on one masked dataset, of the base model's architecture
unless the config's `retraining.model` names another.

Always standard training. The model is evaluated on the equally masked validation and test sets
after every epoch; the reported accuracy is the test accuracy at the epoch of best validation
accuracy (the earliest, on ties), and the last epoch's beside it. With `retraining.group_seeds`
one job trains every retrain seed of a masked dataset, one after another; one job retrains the
top-k and the bottom-k copy of a mask pair.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .checks import expect_inputs
from .data import read_attributes
from .models import build_model, model_spec, save_checkpoint
from .plugins import named
from .runtime import device, log, package_version, write_json
from .store import SPLITS
from .train import load_tensors, train, training_mode


def select_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The record of the epoch with the highest validation accuracy (the earliest on ties)."""
    return max(history, key=lambda record: (record["val_accuracy"], -record["epoch"]))


def run_retrain(
    masked_paths: dict[str, str],
    outputs: dict[str, list[tuple[str, str]]],
    *,
    base_model_cfg: dict[str, Any],
    model_cfg: dict[str, Any],
    retraining_cfg: dict[str, Any],
    retrain_seeds: list[int],
    config_fingerprints: dict[str, list[str]],
    attribution_fingerprint: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Retrain a `model_cfg` model on each masked store of `masked_paths` (order -> path: the
    top-k and bottom-k copies of one mask pair) once per seed of `retrain_seeds`, one after
    another, writing each seed's (checkpoint, metrics JSON) paths of `outputs[order]` with its
    fingerprint of `config_fingerprints[order]`. With `expected` (input path -> identity), every
    masked store is checked before any training (retrain_store)."""
    for masked_path in masked_paths.values():
        expect_inputs(expected, [masked_path])
    for order, masked_path in masked_paths.items():
        retrain_store(
            masked_path,
            outputs[order],
            base_model_cfg=base_model_cfg,
            model_cfg=model_cfg,
            retraining_cfg=retraining_cfg,
            retrain_seeds=retrain_seeds,
            config_fingerprints=config_fingerprints[order],
            attribution_fingerprint=attribution_fingerprint,
            expected=expected,
        )


def retrain_store(
    masked_path: str,
    outputs: list[tuple[str, str]],
    *,
    base_model_cfg: dict[str, Any],
    model_cfg: dict[str, Any],
    retraining_cfg: dict[str, Any],
    retrain_seeds: list[int],
    config_fingerprints: list[str],
    attribution_fingerprint: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Retrain a `model_cfg` model on the masked store at `masked_path` once per seed of
    `retrain_seeds`, one after another, writing each seed's (checkpoint, metrics JSON) paths of
    `outputs`; the metrics describe the base model, `base_model_cfg`, and the retrained one.
    `attribution_fingerprint` identifies the attributions the masks came from (equal for runs
    whose masks are the same, e.g. of a control that ignores the model): the tables count such
    runs once. With `expected` (input path -> the identity the rule expects: dataset, model,
    base seed, method, imputation, order, k, ...), a masked store that records another is refused.

    The store is read once. Every seed starts from the same state as in a job of its own (torch
    seeded, then a fresh model), so grouping seeds or orders in one job changes no number."""
    expect_inputs(expected, [masked_path])
    on = device()
    attributes = read_attributes(masked_path)
    retraining = f"retraining {attributes['dataset']}/{attributes['masking']['model']}"
    with named(retraining):
        spec = model_spec(model_cfg, attributes)
    splits = {split: load_tensors(masked_path, split, on) for split in SPLITS}
    masking = attributes["masking"]
    for (checkpoint_path, metrics_path), retrain_seed, fingerprint in zip(
        outputs, retrain_seeds, config_fingerprints, strict=True
    ):
        started = time.perf_counter()
        torch.manual_seed(retrain_seed)
        with named(retraining):
            model = build_model(spec).to(on)
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
            "config_fingerprint": fingerprint,
            "attribution_fingerprint": attribution_fingerprint,
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
