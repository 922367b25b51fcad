"""Stage `noretrain`: a base model's accuracy on masked test images, without retraining.

For every method x imputation x k of one base model, the accuracy of the unchanged model on the
masked test sets the retrained models are evaluated on: with the top-k kept, the least relevant
1 - k are removed (LeRF); with the bottom-k kept, the most relevant 1 - k are removed (MoRF).
LeRF - MoRF accuracy at the same k is the retrain-free counterpart of DiffROAR (ROAD's setting).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from .checks import expect_inputs
from .mask import masked_splits
from .models import load_checkpoint
from .runtime import device, log, package_version, write_parquet
from .train import accuracy, load_tensors, training_mode

CURVES = {"top": "LeRF", "bottom": "MoRF"}


def run_noretrain(
    dataset_path: str,
    checkpoint_path: str,
    saliency_paths: list[str],
    out_path: str,
    *,
    imputations: list[str],
    keep_fractions: list[float],
    masking_cfg: dict[str, Any],
    model_cfg: dict[str, Any],
    config_fingerprint: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write one row per attribution store x imputation x k x order: the base model's test
    accuracy on that masked copy of the test split (diffroar.mask.masked_splits with the ranking,
    tie-break seed and noise of `masking_cfg`: the very images the retrained models are tested
    on). The checkpoint must have been trained under `config_fingerprint`, and every attribution
    store must be of it; with `expected` (input path -> the identity the rule expects), inputs
    that record another identity are refused before any work."""
    expect_inputs(expected, [dataset_path, checkpoint_path, *saliency_paths])
    model, checkpoint = load_checkpoint(checkpoint_path, config_fingerprint)
    on = device()
    model = model.to(on)
    unmasked = accuracy(model, *load_tensors(dataset_path, "test", on))
    log.info(
        "%s/%s seed %s: test accuracy %.4f unmasked, on %s",
        checkpoint["dataset"],
        checkpoint["model"],
        checkpoint["seed"],
        unmasked,
        on,
    )
    rows = []
    for path in saliency_paths:
        for imputation in imputations:
            # masked per k (one ranking gives both orders), rows per order, then k: as before
            measured = {}
            for keep_fraction in keep_fractions:
                masking, masked = masked_splits(
                    dataset_path,
                    path,
                    CURVES,
                    keep_fraction=keep_fraction,
                    imputation=imputation,
                    splits=("test",),
                    **masking_cfg,
                )
                if (masking["model"], masking["base_seed"]) != (
                    checkpoint["model"],
                    checkpoint["seed"],
                ):
                    raise ValueError(
                        f"{path} holds attributions of {masking['model']} seed "
                        f"{masking['base_seed']}, not of {checkpoint_path}"
                    )
                for order in CURVES:
                    images, labels = (torch.from_numpy(a).to(on) for a in masked[order]["test"])
                    measured[order, keep_fraction] = masking, accuracy(model, images, labels)
            for order in CURVES:
                for keep_fraction in keep_fractions:
                    masking, test_accuracy = measured[order, keep_fraction]
                    rows.append(
                        {
                            "dataset": checkpoint["dataset"],
                            "model": checkpoint["model"],
                            "architecture": model_cfg["architecture"],
                            "training_mode": training_mode(model_cfg),
                            "base_seed": checkpoint["seed"],
                            "method": masking["method"],
                            "imputation": imputation,
                            "ranking": masking["ranking"],
                            "order": order,
                            "curve": CURVES[order],
                            "keep_fraction": keep_fraction,
                            "removed_fraction": 1 - masking["kept_units"] / masking["units"],
                            "test_accuracy": test_accuracy,
                            "unmasked_test_accuracy": unmasked,
                            "config_fingerprint": config_fingerprint,
                            "package_version": package_version(),
                        }
                    )
                    log.info(
                        "%s %s %s-%g (%s): %.4f",
                        masking["method"],
                        imputation,
                        order,
                        keep_fraction,
                        CURVES[order],
                        test_accuracy,
                    )
    write_parquet(pd.DataFrame(rows), out_path)
