"""Stage `mask`: keep the top-k or bottom-k attributed coordinates of every image, replace the rest.

A masked store holds, per split, `images` (N, C, H, W) float32 already scaled to [0, 1] (its
`pixel_max` is 1) and `labels`; its attributes are the dataset's plus how it was masked.
"""

from __future__ import annotations

import numpy as np

from .data import read_attributes
from .runtime import log, package_version
from .store import SPLITS, create_empty, create_store, open_store, sample_blocks, write_array

ORDERS = ("top", "bottom")


def keep_count(keep_fraction: float, coordinates: int) -> int:
    """Coordinates kept per image: round(k * d), at least 1 and at most d."""
    return int(min(coordinates, max(1, round(keep_fraction * coordinates))))


def rank(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coordinate indices (N, d) of each row of `scores` (N, d), largest |score| first; equal
    scores are ordered by a random key drawn from `rng`."""
    tiebreak = rng.random(scores.shape)
    return np.lexsort((tiebreak, -np.abs(scores)), axis=-1)


def keep_mask(
    attributions: np.ndarray, keep_fraction: float, order: str, rng: np.random.Generator
) -> np.ndarray:
    """Bool mask shaped like `attributions` (N, ...) that keeps, per image, the round(k * d)
    highest-ranked coordinates (order 'top') or the lowest-ranked ones (order 'bottom')."""
    if order not in ORDERS:
        raise ValueError(f"order {order!r}: must be one of {', '.join(ORDERS)}")
    flat = attributions.reshape(len(attributions), -1)
    coordinates = flat.shape[1]
    count = keep_count(keep_fraction, coordinates)
    ranking = rank(flat, rng)
    chosen = ranking[:, :count] if order == "top" else ranking[:, coordinates - count :]
    mask = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(mask, chosen, True, axis=1)
    return mask.reshape(attributions.shape)


def tiebreak_rng(seed: int, split: str, start: int) -> np.random.Generator:
    """The tie-breaking RNG of the block of `split` starting at sample `start`: the same for
    both orders and every k, so top-k and bottom-k come from one ranking."""
    return np.random.default_rng([seed, SPLITS.index(split), start])


def run_mask(
    dataset_path: str,
    saliency_path: str,
    out_path: str,
    *,
    keep_fraction: float,
    order: str,
    tiebreak_seed: int,
) -> None:
    """Write the masked copy of all splits of a dataset for one attribution store, k and order."""
    dataset = read_attributes(dataset_path)
    saliency = open_store(saliency_path)
    fill_value = float(dataset["pixel_mean"])
    coordinates = int(np.prod(dataset["shape"]))
    root = create_store(
        out_path,
        {
            **dataset,
            "pixel_max": 1.0,
            "source_pixel_max": dataset["pixel_max"],
            "masking": {
                "model": saliency.attrs["model"],
                "base_seed": saliency.attrs["base_seed"],
                "method": saliency.attrs["method"],
                "keep_fraction": keep_fraction,
                "order": order,
                "kept_coordinates": keep_count(keep_fraction, coordinates),
                "coordinates": coordinates,
                "fill_value": fill_value,
                "fill": "dataset mean of the training split, in [0, 1] pixel scale",
                "tiebreak_seed": tiebreak_seed,
            },
            "package_version": package_version(),
        },
    )
    source = open_store(dataset_path)
    pixel_max = np.float32(dataset["pixel_max"])
    for split in SPLITS:
        stored, attributions = source[split]["images"], saliency[split]["attributions"]
        if attributions.shape != stored.shape:
            raise ValueError(
                f"{saliency_path}: {split} attributions have shape {attributions.shape}, "
                f"the images of {dataset_path} {stored.shape}"
            )
        group = root.create_group(split)
        masked = create_empty(group, "images", stored.shape, "float32")
        write_array(group, "labels", source[split]["labels"][...])
        for block in sample_blocks(attributions):
            keep = keep_mask(
                attributions[block],
                keep_fraction,
                order,
                tiebreak_rng(tiebreak_seed, split, block.start),
            )
            images = stored[block].astype(np.float32) / pixel_max
            masked[block] = np.where(keep, images, np.float32(fill_value))
    log.info(
        "%s-%g masked copy of %s with %s attributions of %s: %d of %d coordinates kept",
        order,
        keep_fraction,
        dataset["dataset"],
        saliency.attrs["method"],
        saliency.attrs["model"],
        keep_count(keep_fraction, coordinates),
        coordinates,
    )
