"""Stage `retrain`: train a fresh model on one masked dataset, of the base model's architecture
unless the config's `retraining.model` names another.

Always standard training. The model is evaluated on the equally masked validation and test sets
after every epoch; the reported accuracy is the test accuracy at the epoch of best validation
accuracy (the earliest, on ties), and the last epoch's beside it. With `retraining.group_seeds`
one job trains every retrain seed of a masked dataset, one after another; one job retrains the
top-k and the bottom-k copy of a mask pair, which it makes in memory from the dataset and the
attributions (diffroar.mask.masked_splits: no masked store is written and read back).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .checks import expect_inputs
from .data import read_attributes
from .mask import masked_splits
from .models import build_model, model_spec, save_checkpoint
from .plugins import named
from .runtime import device, log, package_version, write_json
from .train import train, trained_precision, training_mode


def select_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The record of the epoch with the highest validation accuracy (the earliest on ties)."""
    return max(history, key=lambda record: (record["val_accuracy"], -record["epoch"]))


def run_retrain(
    dataset_path: str,
    saliency_path: str,
    outputs: dict[str, list[tuple[str, str]]],
    *,
    keep_fraction: float,
    imputation: str,
    masking_cfg: dict[str, Any],
    base_model_cfg: dict[str, Any],
    model_cfg: dict[str, Any],
    retraining_cfg: dict[str, Any],
    retrain_seeds: list[int],
    config_fingerprints: dict[str, list[str]],
    attribution_fingerprint: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Mask the dataset at `dataset_path` with the attributions at `saliency_path` (keep
    fraction `keep_fraction`, `imputation`, the ranking, tie-break seed and noise of
    `masking_cfg`; diffroar.mask.masked_splits) and retrain a `model_cfg` model on the copy of
    each order of `outputs` (order -> that order's (checkpoint, metrics JSON) paths, one per seed
    of `retrain_seeds`, written with its fingerprint of `config_fingerprints[order]`). The
    top-k and bottom-k copies come from one ranking, as the mask stage's stores do. With
    `expected` (input path -> the identity the rule expects), inputs that record another
    identity are refused before any work."""
    expect_inputs(expected, [dataset_path, saliency_path])
    masking, splits = masked_splits(
        dataset_path,
        saliency_path,
        list(outputs),
        keep_fraction=keep_fraction,
        imputation=imputation,
        **masking_cfg,
    )
    attributes = read_attributes(dataset_path)
    log.info(
        "%s-%g masked copies of %s with %s attributions of %s seed %s, %s imputation: %d of %d "
        "%ss kept",
        "/".join(outputs),
        keep_fraction,
        attributes["dataset"],
        masking["method"],
        masking["model"],
        masking["base_seed"],
        imputation,
        masking["kept_units"],
        masking["units"],
        masking["ranking"],
    )
    for order, order_outputs in outputs.items():
        retrain_masked(
            attributes,
            masking | {"order": order},
            splits.pop(order),  # frees each order's copy once it has trained
            order_outputs,
            base_model_cfg=base_model_cfg,
            model_cfg=model_cfg,
            retraining_cfg=retraining_cfg,
            retrain_seeds=retrain_seeds,
            config_fingerprints=config_fingerprints[order],
            attribution_fingerprint=attribution_fingerprint,
        )


def retrain_masked(
    attributes: dict[str, Any],
    masking: dict[str, Any],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    outputs: list[tuple[str, str]],
    *,
    base_model_cfg: dict[str, Any],
    model_cfg: dict[str, Any],
    retraining_cfg: dict[str, Any],
    retrain_seeds: list[int],
    config_fingerprints: list[str],
    attribution_fingerprint: str,
) -> None:
    """Retrain a `model_cfg` model on one masked copy of a dataset (`splits`: split -> (images,
    labels); `attributes`: the dataset's; `masking`: how it was masked, with its order) once per
    seed of `retrain_seeds`, one after another, writing each seed's (checkpoint, metrics JSON)
    paths of `outputs`; the metrics describe the base model, `base_model_cfg`, and the retrained
    one. `attribution_fingerprint` identifies the attributions the masks came from (equal for
    runs whose masks are the same, e.g. of a control that ignores the model): the tables count
    such runs once.

    Every seed starts from the same state as in a job of its own (torch seeded, then a fresh
    model), so grouping seeds or orders in one job changes no number."""
    on = device()
    precision = trained_precision(retraining_cfg, on)
    retraining = f"retraining {attributes['dataset']}/{masking['model']}"
    with named(retraining):
        spec = model_spec(model_cfg, attributes)
    splits = {
        split: (torch.from_numpy(images).to(on), torch.from_numpy(labels).to(on))
        for split, (images, labels) in splits.items()
    }
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
            "precision": precision,
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
