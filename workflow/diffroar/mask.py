"""Masking: keep the top-k or bottom-k attributed coordinates of every image, impute the rest.

The retrain and noretrain jobs mask in memory (`masked_splits`); the `mask` rule writes the same
images as stores (`run_mask`) only when a store is asked for by its path.

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

from collections.abc import Iterator
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
from .units import keep_count, ranked_units

ORDERS = ("top", "bottom")


def rank(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coordinate indices (N, d) of each row of `scores` (N, d), largest |score| first; equal
    scores are ordered by a random key drawn from `rng`."""
    tiebreak = rng.random(scores.shape)
    return np.lexsort((tiebreak, -np.abs(scores)), axis=-1)


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


def masking_record(
    dataset: dict[str, Any],
    saliency: dict[str, Any],
    *,
    keep_fraction: float,
    imputation: str,
    ranking: str,
    tiebreak_seed: int,
    noise: float = 0.0,
) -> dict[str, Any]:
    """How a masked copy of the dataset with attributes `dataset` was made from the attribution
    store with attributes `saliency` (without its order): what a masked store records under
    `masking` and what a retrained model's metrics take from it."""
    units = ranked_units(dataset["shape"], ranking)
    kept = keep_count(keep_fraction, units)
    coordinates = int(np.prod(dataset["shape"]))
    return {
        "model": saliency["model"],
        "base_seed": saliency["base_seed"],
        "method": saliency["method"],
        "keep_fraction": keep_fraction,
        "ranking": ranking,
        "kept_units": kept,
        "units": units,
        "kept_coordinates": kept * coordinates // units,
        "coordinates": coordinates,
        "imputation": imputation,
        "noise": noise if imputation == "noisy_linear" else None,
        "tiebreak_seed": tiebreak_seed,
        "checkpoint_fingerprint": saliency.get("checkpoint_fingerprint"),
    }


class _Masking:
    """One attribution store, k and imputation applied to one dataset: the inputs opened, the
    masking record (without order), and the functions both masked_splits and run_mask mask
    with, so that a store and an in-memory copy hold the same images."""

    def __init__(self, dataset_path: str, saliency_path: str, **settings: Any):
        """`settings`: masking_record's keep fraction, imputation, ranking, tie-break seed and
        noise."""
        self.dataset_path, self.saliency_path = dataset_path, saliency_path
        self.dataset = read_attributes(dataset_path)
        self.saliency = open_store(saliency_path, ("model", "base_seed", "method"))
        self.source = open_store(dataset_path)
        self.record = masking_record(self.dataset, self.saliency.attrs.asdict(), **settings)

    def split(self, split: str):
        """(images, attributions, labels) of one split: the two stored arrays, checked to match
        in shape, and the labels read."""
        stored = stored_array(self.source, split, "images", self.dataset_path)
        attributions = stored_array(self.saliency, split, "attributions", self.saliency_path)
        if attributions.shape != stored.shape:
            raise ValueError(
                f"{self.saliency_path}: {split} attributions have shape {attributions.shape}, "
                f"the images of {self.dataset_path} {stored.shape}"
            )
        labels = read_block(
            stored_array(self.source, split, "labels", self.dataset_path), self.dataset_path
        )
        return stored, attributions, labels

    def blocks(
        self, split: str, stored, attributions, orders: list[str]
    ) -> Iterator[tuple[slice, np.ndarray, dict[str, np.ndarray]]]:
        """(block, its pixels as float32 in [0, 1], order -> keep mask) per block of one split,
        blocks as the attributions are chunked: every order from one ranking, ties broken by
        the block's own stream (tiebreak_rng)."""
        record, pixel_max = self.record, np.float32(self.dataset["pixel_max"])
        for block in sample_blocks(attributions):
            keeps = keep_masks(
                read_block(attributions, self.saliency_path, block),
                record["keep_fraction"],
                orders,
                tiebreak_rng(record["tiebreak_seed"], split, block.start),
                record["ranking"],
            )
            pixels = read_block(stored, self.dataset_path, block).astype(np.float32) / pixel_max
            yield block, pixels, keeps

    def fill(self, pixels: np.ndarray, keep: np.ndarray, split: str, start: int) -> np.ndarray:
        """One block's masked images: `pixels` where `keep`, the imputation's fill elsewhere
        (each block and order with its own noise stream, as a job of its own would draw it)."""
        return impute(
            pixels,
            keep,
            self.record["imputation"],
            pixel_mean=float(self.dataset["pixel_mean"]),
            channel_mean=list(self.dataset["channel_mean"]),
            noise=self.record["noise"] or 0.0,
            rng=noise_rng(self.record["tiebreak_seed"], split, start),
        )


def masked_splits(
    dataset_path: str,
    saliency_path: str,
    orders: list[str] | tuple[str, ...],
    *,
    keep_fraction: float,
    imputation: str,
    ranking: str,
    tiebreak_seed: int,
    noise: float = 0.0,
    splits: tuple[str, ...] = SPLITS,
) -> tuple[dict[str, Any], dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """The masked copies of `splits` of a dataset for one attribution store, k and imputation, in
    memory: (the masking record, without order; order -> split -> (images float32 (N, C, H, W)
    in [0, 1], labels int64)). The images are bit for bit those that read_images returns from
    the store run_mask writes for the same inputs (tested): the retrain and noretrain jobs mask
    this way, so no masked store has to be written and read back."""
    masking = _Masking(
        dataset_path,
        saliency_path,
        keep_fraction=keep_fraction,
        imputation=imputation,
        ranking=ranking,
        tiebreak_seed=tiebreak_seed,
        noise=noise,
    )
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {order: {} for order in orders}
    for split in splits:
        stored, attributions, labels = masking.split(split)
        images = {order: np.empty(stored.shape, np.float32) for order in orders}
        for block, pixels, keeps in masking.blocks(split, stored, attributions, list(orders)):
            for order, keep in keeps.items():
                images[order][block] = masking.fill(pixels, keep, split, block.start)
        for order in orders:
            out[order][split] = (images[order], labels.astype(np.int64))
    return masking.record, out


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
    masker = _Masking(
        dataset_path,
        saliency_path,
        keep_fraction=keep_fraction,
        imputation=imputation,
        ranking=ranking,
        tiebreak_seed=tiebreak_seed,
        noise=noise,
    )
    dataset, saliency, masking = masker.dataset, masker.saliency, dict(masker.record)
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
            stored, attributions, labels = masker.split(split)
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
            for block, pixels, keeps in masker.blocks(split, stored, attributions, list(roots)):
                for order, keep in keeps.items():
                    if fill_on_read:
                        masked[order][block] = np.where(keep, pixels, np.float32(0))
                        kept_arrays[order][block] = keep
                    else:
                        masked[order][block] = masker.fill(pixels, keep, split, block.start)
            log.info("%s: %d images masked", split, stored.shape[0])
    log.info(
        "%s-%g masked copies of %s with %s attributions of %s, %s imputation: %d of %d %ss kept",
        "/".join(out_paths),
        keep_fraction,
        dataset["dataset"],
        saliency.attrs["method"],
        saliency.attrs["model"],
        imputation,
        masking["kept_units"],
        masking["units"],
        ranking,
    )
