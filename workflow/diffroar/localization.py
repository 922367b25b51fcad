"""Stage `localization`: where attributions put their mass on BlockMNIST-style test images.

Two measures per base model (model x base seed) x method, each with a 95% t-interval over that
base model's test images (column `interval_over` = "test_images": it covers the variation between
images, not between base seeds or retrainings):
- `signal_mass_share`: sum |A| over the signal block / sum |A| over the image (1 is perfect, 0.5
  is what a uniform attribution gets);
- `null_topk_share` at every k: the share of the top-k attributed coordinates that lie in the null
  block (0 is perfect; a random ranking gets 0.5). Rankings are those of the mask stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .checks import expect_inputs
from .data import read_attributes
from .mask import keep_mask, tiebreak_rng
from .metrics import interval95
from .provenance import config_fingerprint
from .runtime import log, package_version, write_parquet
from .store import StoreError, open_store, read_block, sample_blocks, stored_array


def signal_rows(signal_on_top: np.ndarray, block_height: int) -> np.ndarray:
    """Bool (N, 2 * block_height): which image rows belong to the signal block."""
    top = np.arange(2 * block_height) < block_height
    return np.where(signal_on_top[:, None], top[None, :], ~top[None, :])


def signal_mass_share(attributions: np.ndarray, in_signal: np.ndarray) -> np.ndarray:
    """Per image (N,): share of sum |A| on the signal rows; `in_signal` is (N, H) bool."""
    magnitude = np.abs(attributions).sum(axis=(1, 3))  # (N, H)
    total = magnitude.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (magnitude * in_signal).sum(axis=1) / total, np.nan)


def null_topk_share(keep: np.ndarray, in_signal: np.ndarray) -> np.ndarray:
    """Per image (N,): share of kept coordinates (`keep`, (N, C, H, W) bool) in the null rows."""
    kept_per_row = keep.sum(axis=(1, 3))  # (N, H)
    return (kept_per_row * ~in_signal).sum(axis=1) / kept_per_row.sum(axis=1)


def _summary(values: np.ndarray) -> dict[str, float | int | str]:
    """Mean, std and 95% t-interval of per-image `values` (NaN dropped), the number of images
    and what the interval is over (`interval_over`: "test_images")."""
    values = pd.Series(values).dropna()
    low, high = interval95(values)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)),
        "ci_low": low,
        "ci_high": high,
        "n_images": len(values),
        "interval_over": "test_images",
    }


def localization_rows(
    dataset_path: str,
    saliency_path: str,
    keep_fractions: list[float],
    tiebreak_seed: int,
    ranking: str = "coordinate",
) -> list[dict]:
    """Rows of the localization table for one saliency store (test split)."""
    dataset = read_attributes(dataset_path)
    if "block" not in dataset:
        raise ValueError(f"{dataset_path}: {dataset['dataset']} is not a BlockMNIST-style dataset")
    block_height = int(dataset["block"]["height"])
    saliency = open_store(saliency_path, ("model", "base_seed", "method"))
    attributions_array = stored_array(saliency, "test", "attributions", saliency_path)
    on_top = stored_array(open_store(dataset_path), "test", "signal_on_top", dataset_path)
    signal_on_top = read_block(on_top, dataset_path)
    if attributions_array.shape[0] != len(signal_on_top) or attributions_array.shape[2] != (
        2 * block_height
    ):
        raise StoreError(
            f"{saliency_path}: test attributions of shape {attributions_array.shape} do not fit "
            f"the {len(signal_on_top)} test images of height {2 * block_height} of {dataset_path}"
        )
    mass, null_share = [], {k: [] for k in keep_fractions}
    for block in sample_blocks(attributions_array):
        attributions = read_block(attributions_array, saliency_path, block)
        in_signal = signal_rows(signal_on_top[block], block_height)
        mass.append(signal_mass_share(attributions, in_signal))
        for k in keep_fractions:
            rng = tiebreak_rng(tiebreak_seed, "test", block.start)
            keep = keep_mask(attributions, k, "top", rng, ranking)
            null_share[k].append(null_topk_share(keep, in_signal))
    identity = {
        "dataset": dataset["dataset"],
        "model": saliency.attrs["model"],
        "base_seed": saliency.attrs["base_seed"],
        "method": saliency.attrs["method"],
    }
    # what the rows depend on: the base model's config (its fingerprint in the saliency store),
    # the method's settings and the ranking
    provenance = {
        "config_fingerprint": config_fingerprint(
            saliency.attrs.get("checkpoint_fingerprint"),
            saliency.attrs["method"],
            saliency.attrs.get("settings"),
            ranking,
            tiebreak_seed,
        ),
        "package_version": package_version(),
    }
    rows = [
        identity
        | {"measure": "signal_mass_share", "keep_fraction": np.nan}
        | _summary(np.concatenate(mass))
        | provenance
    ]
    for k in keep_fractions:
        rows.append(
            identity
            | {"measure": "null_topk_share", "keep_fraction": k}
            | _summary(np.concatenate(null_share[k]))
            | provenance
        )
    return rows


def run_localization(
    dataset_path: str,
    saliency_paths: list[str],
    out_path: str,
    *,
    keep_fractions: list[float],
    tiebreak_seed: int,
    ranking: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write the localization table of one dataset's saliency stores; with `expected` (input
    path -> the identity the rule expects), inputs that record another identity are refused."""
    expect_inputs(expected, [dataset_path, *saliency_paths])
    rows = []
    for path in saliency_paths:
        rows += localization_rows(dataset_path, path, keep_fractions, tiebreak_seed, ranking)
        log.info("%s: signal mass share %.3f", path, rows[-len(keep_fractions) - 1]["mean"])
    write_parquet(pd.DataFrame(rows), out_path)
