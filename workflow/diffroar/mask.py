"""Stage `mask`: keep the top-k or bottom-k attributed coordinates of every image, impute the rest.

Rankings are per coordinate (every channel of every pixel ranked on its own, as in the paper) or
per pixel (attributions summed over channels, all channels of a pixel kept or removed together,
as in ROAD). The removed coordinates are filled by an imputation of diffroar.imputation.

A masked store holds, per split, `images` (N, C, H, W) float32 already scaled to [0, 1] (its
`pixel_max` is 1) and `labels`; its attributes are the dataset's plus how it was masked. Read it
with diffroar.data.read_images.

`noisy_linear` stores are filled on read: their `images` hold the kept coordinates and 0 where a
coordinate was removed, a `keep` array (bool, same shape) says which, and `masking.fill_on_read`
records the blocks whose noise streams the fill draws from. read_images then recomputes the fill
with the same function, inputs and noise streams as the mask job would have stored, so the
images it returns are bit-identical to stored ones; the noise, four incompressible bytes per
removed coordinate, is never stored (3.47x the raw bytes at k = 0.1 before, bench/storage.py).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import numpy as np

from .checks import expect_inputs
from .data import read_attributes
from .imputation import FILLED_ON_READ, impute, noise_rng
from .runtime import log, package_version
from .store import (
    SPLITS,
    create_empty,
    new_store,
    open_store,
    read_block,
    sample_blocks,
    stored_array,
    write_array,
)

ORDERS = ("top", "bottom")
RANKINGS = ("coordinate", "pixel")


def keep_count(keep_fraction: float, coordinates: int) -> int:
    """Coordinates kept per image: round(k * d), at least 1 and at most d."""
    return int(min(coordinates, max(1, round(keep_fraction * coordinates))))


def rank(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coordinate indices (N, d) of each row of `scores` (N, d), largest |score| first; equal
    scores are ordered by a random key drawn from `rng`."""
    tiebreak = rng.random(scores.shape)
    return np.lexsort((tiebreak, -np.abs(scores)), axis=-1)


def ranked_units(shape: tuple[int, ...] | list[int], ranking: str) -> int:
    """Number of ranked units of one image (C, H, W): C*H*W coordinates or H*W pixels."""
    if ranking not in RANKINGS:
        raise ValueError(f"ranking {ranking!r}: must be one of {', '.join(RANKINGS)}")
    return int(np.prod(shape if ranking == "coordinate" else shape[1:]))


def keep_masks(
    attributions: np.ndarray,
    keep_fraction: float,
    orders: list[str] | tuple[str, ...],
    rng: np.random.Generator,
    ranking: str = "coordinate",
) -> dict[str, np.ndarray]:
    """Per order of `orders`, a bool mask shaped like `attributions` (N, C, H, W) that keeps, per
    image, the round(k * d) highest-ranked units (order 'top') or the lowest-ranked ones (order
    'bottom'), from one ranking; units are coordinates (d = C*H*W) or pixels (d = H*W, scored by
    the sum over channels)."""
    for order in orders:
        if order not in ORDERS:
            raise ValueError(f"order {order!r}: must be one of {', '.join(ORDERS)}")
    units = ranked_units(attributions.shape[1:], ranking)
    scores = attributions if ranking == "coordinate" else attributions.sum(axis=1)
    flat = scores.reshape(len(scores), units)
    count = keep_count(keep_fraction, units)
    ranks = rank(flat, rng)
    masks = {}
    for order in orders:
        chosen = ranks[:, :count] if order == "top" else ranks[:, units - count :]
        mask = np.zeros(flat.shape, dtype=bool)
        np.put_along_axis(mask, chosen, True, axis=1)
        if ranking == "pixel":
            mask = np.broadcast_to(mask.reshape(scores.shape)[:, None], attributions.shape)
        masks[order] = mask.reshape(attributions.shape)
    return masks


def keep_mask(
    attributions: np.ndarray,
    keep_fraction: float,
    order: str,
    rng: np.random.Generator,
    ranking: str = "coordinate",
) -> np.ndarray:
    """The mask of `keep_masks` for one order."""
    return keep_masks(attributions, keep_fraction, [order], rng, ranking)[order]


def tiebreak_rng(seed: int, split: str, start: int) -> np.random.Generator:
    """The tie-breaking RNG of the block of `split` starting at sample `start`: the same for
    both orders and every k, so top-k and bottom-k come from one ranking."""
    return np.random.default_rng([seed, SPLITS.index(split), start])


def run_mask(
    dataset_path: str,
    saliency_path: str,
    out_paths: dict[str, str],
    *,
    keep_fraction: float,
    imputation: str,
    ranking: str,
    tiebreak_seed: int,
    noise: float = 0.0,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write the masked copies of all splits of a dataset for one attribution store, k and
    imputation, one per order of `out_paths` (order -> path), from one ranking (`noise`: the std
    of noisy_linear's noise). Each order's store is the one a job of its own would write. With
    `expected` (input path -> the identity the rule expects), inputs that record another
    identity are refused."""
    expect_inputs(expected, [dataset_path, saliency_path])
    dataset = read_attributes(dataset_path)
    saliency = open_store(saliency_path, ("model", "base_seed", "method"))
    units = ranked_units(dataset["shape"], ranking)
    kept = keep_count(keep_fraction, units)
    masking = {
        "model": saliency.attrs["model"],
        "base_seed": saliency.attrs["base_seed"],
        "method": saliency.attrs["method"],
        "keep_fraction": keep_fraction,
        "ranking": ranking,
        "kept_units": kept,
        "units": units,
        "kept_coordinates": kept * int(np.prod(dataset["shape"])) // units,
        "coordinates": int(np.prod(dataset["shape"])),
        "imputation": imputation,
        "noise": noise if imputation == "noisy_linear" else None,
        "tiebreak_seed": tiebreak_seed,
        "checkpoint_fingerprint": saliency.attrs.get("checkpoint_fingerprint"),
    }
    fill_on_read = imputation in FILLED_ON_READ
    if fill_on_read:  # the noise streams are per block (below): read_images needs the blocks
        masking["fill_on_read"] = {
            split: {
                "block_rows": int(
                    stored_array(saliency, split, "attributions", saliency_path).chunks[0]
                )
            }
            for split in SPLITS
        }
    source = open_store(dataset_path)
    pixel_max = np.float32(dataset["pixel_max"])
    with ExitStack() as stack:
        roots = {
            order: stack.enter_context(
                new_store(
                    path,
                    {
                        **dataset,
                        "pixel_max": 1.0,
                        "source_pixel_max": dataset["pixel_max"],
                        "masking": {**masking, "order": order},
                        "package_version": package_version(),
                    },
                )
            )
            for order, path in out_paths.items()
        }
        for split in SPLITS:
            stored = stored_array(source, split, "images", dataset_path)
            attributions = stored_array(saliency, split, "attributions", saliency_path)
            if attributions.shape != stored.shape:
                raise ValueError(
                    f"{saliency_path}: {split} attributions have shape {attributions.shape}, "
                    f"the images of {dataset_path} {stored.shape}"
                )
            labels = read_block(stored_array(source, split, "labels", dataset_path), dataset_path)
            masked, kept_arrays = {}, {}
            for order, root in roots.items():
                group = root.create_group(split)
                # Kept values are float32 copies of a few hundred pixel levels and a constant
                # fill repeats one value: zstd finds those 4-byte words whole, and shuffling bits
                # or bytes would break them up (bench/storage.py: 1.74x -> 0.93x the raw uint8
                # bytes for mean imputation at k = 0.9 on Fashion-MNIST; noisy_linear 2.39x ->
                # 1.33x).
                masked[order] = create_empty(
                    group, "images", stored.shape, "float32", shuffle="noshuffle"
                )
                if fill_on_read:
                    kept_arrays[order] = create_empty(group, "keep", stored.shape, "bool")
                write_array(group, "labels", labels)
            for block in sample_blocks(attributions):
                keeps = keep_masks(
                    read_block(attributions, saliency_path, block),
                    keep_fraction,
                    list(out_paths),
                    tiebreak_rng(tiebreak_seed, split, block.start),
                    ranking,
                )
                pixels = read_block(stored, dataset_path, block).astype(np.float32) / pixel_max
                for order, keep in keeps.items():
                    if fill_on_read:
                        masked[order][block] = np.where(keep, pixels, np.float32(0))
                        kept_arrays[order][block] = keep
                        continue
                    masked[order][block] = impute(
                        pixels,
                        keep,
                        imputation,
                        pixel_mean=float(dataset["pixel_mean"]),
                        channel_mean=list(dataset["channel_mean"]),
                        noise=noise,
                        # each order's own stream, as in a job of its own
                        rng=noise_rng(tiebreak_seed, split, block.start),
                    )
            log.info("%s: %d images masked", split, stored.shape[0])
    log.info(
        "%s-%g masked copies of %s with %s attributions of %s, %s imputation: %d of %d %ss kept",
        "/".join(out_paths),
        keep_fraction,
        dataset["dataset"],
        saliency.attrs["method"],
        saliency.attrs["model"],
        imputation,
        kept,
        units,
        ranking,
    )
