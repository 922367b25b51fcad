"""Stage `noretrain`: a base model's accuracy on masked test images, without retraining.

For every method x imputation x k of one base model, the accuracy of the unchanged model on the
masked test sets the retrained models are evaluated on: with the top-k kept, the least relevant
1 - k are removed (LeRF); with the bottom-k kept, the most relevant 1 - k are removed (MoRF).
LeRF - MoRF accuracy at the same k is the retrain-free counterpart of DiffROAR (ROAD's setting).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .checks import expect_inputs
from .data import read_attributes
from .models import load_checkpoint
from .runtime import device, log, package_version, write_parquet
from .train import accuracy, load_tensors, training_mode

CURVES = {"top": "LeRF", "bottom": "MoRF"}


def run_noretrain(
    dataset_path: str,
    checkpoint_path: str,
    masked_paths: list[str],
    out_path: str,
    *,
    model_cfg: dict[str, Any],
    config_fingerprint: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write one row per masked store: the base model's test accuracy on it. The checkpoint must
    have been trained under `config_fingerprint`; with `expected` (input path -> the identity the
    rule expects), inputs that record another identity are refused."""
    expect_inputs(expected, [dataset_path, checkpoint_path, *masked_paths])
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
    for path in masked_paths:
        masking = read_attributes(path)["masking"]
        if (masking["model"], masking["base_seed"]) != (checkpoint["model"], checkpoint["seed"]):
            raise ValueError(
                f"{path} was masked with attributions of {masking['model']} seed "
                f"{masking['base_seed']}, not of {checkpoint_path}"
            )
        test_accuracy = accuracy(model, *load_tensors(path, "test", on))
        rows.append(
            {
                "dataset": checkpoint["dataset"],
                "model": checkpoint["model"],
                "architecture": model_cfg["architecture"],
                "training_mode": training_mode(model_cfg),
                "base_seed": checkpoint["seed"],
                "method": masking["method"],
                "imputation": masking["imputation"],
                "ranking": masking["ranking"],
                "order": masking["order"],
                "curve": CURVES[masking["order"]],
                "keep_fraction": masking["keep_fraction"],
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
            masking["imputation"],
            masking["order"],
            masking["keep_fraction"],
            CURVES[masking["order"]],
            test_accuracy,
        )
    write_parquet(pd.DataFrame(rows), out_path)
