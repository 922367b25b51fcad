"""Masking: how many coordinates are kept (diffroar.units), which ones, and the masked store."""

from __future__ import annotations

import numpy as np
import pytest
from diffroar.data import read_images
from diffroar.imputation import impute, noise_rng
from diffroar.mask import (
    keep_mask,
    keep_masks,
    masked_splits,
    rank,
    run_mask,
    tiebreak_rng,
)
from diffroar.store import SPLITS, create_store, open_store, read_split, write_array
from diffroar.units import keep_count, ranked_units


@pytest.mark.parametrize(
    ("keep_fraction", "coordinates", "expected"),
    [
        (0.05, 64, 3),  # 3.2
        (0.1, 64, 6),  # 6.4
        (0.2, 64, 13),  # 12.8
        (0.5, 64, 32),
        (0.9, 64, 58),  # 57.6
        (0.9, 128, 115),  # 115.2
        (1.0, 64, 64),
        (0.001, 64, 1),  # rounds to 0: at least one coordinate is kept
        (1e-9, 10, 1),
        (0.15, 20, 3),  # 3.0000000000000004
        (0.3, 10, 3),
        (0.7, 10, 7),
        (1.0, 1, 1),
    ],
)
def test_keep_count(keep_fraction, coordinates, expected):
    count = keep_count(keep_fraction, coordinates)
    assert count == expected
    assert type(count) is int


@pytest.mark.parametrize("coordinates", [1, 7, 64, 128, 1000])
def test_keep_count_bounds(coordinates):
    counts = [keep_count(k, coordinates) for k in np.linspace(1e-6, 1, 101)]
    assert all(1 <= c <= coordinates for c in counts)
    assert counts == sorted(counts)
    assert counts[-1] == coordinates


def test_ranked_units_are_coordinates_or_pixels():
    assert ranked_units((3, 32, 32), "coordinate") == 3072
    assert ranked_units([3, 32, 32], "pixel") == 1024
    assert ranked_units(np.array([1, 8, 8]), "pixel") == 64
    assert type(ranked_units(np.array([1, 8, 8]), "coordinate")) is int
    with pytest.raises(ValueError, match="ranking 'channel': must be one of coordinate, pixel"):
        ranked_units((1, 8, 8), "channel")


def test_rank_orders_by_descending_magnitude():
    scores = np.array([[0.1, -0.9, 0.5, 0.0, 0.3], [2.0, 1.0, -3.0, 0.5, -0.25]])
    ranking = rank(scores, np.random.default_rng(0))
    np.testing.assert_array_equal(ranking, [[1, 2, 4, 0, 3], [2, 0, 1, 3, 4]])


def test_rank_breaks_ties_with_the_rng():
    scores = np.zeros((1, 50))
    first = rank(scores, np.random.default_rng(0))
    again = rank(scores, np.random.default_rng(0))
    other = rank(scores, np.random.default_rng(1))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(np.sort(first[0]), np.arange(50))
    np.testing.assert_array_equal(np.sort(other[0]), np.arange(50))


def test_rank_ties_only_reorder_tied_entries():
    # |-5| first, then 3, then the four tied 1s (sign ignored) in a seed-dependent order, then 0.
    scores = np.array([[1.0, 3.0, -1.0, 0.0, 1.0, -5.0, -1.0]])
    orders = set()
    for seed in range(20):
        ranking = rank(scores, np.random.default_rng(seed))[0]
        assert list(ranking[:2]) == [5, 1]
        assert set(ranking[2:6]) == {0, 2, 4, 6}
        assert ranking[6] == 3
        orders.add(tuple(ranking[2:6]))
    assert len(orders) > 1


def test_keep_mask_hand_example():
    attributions = np.array([[[[0.1, -0.9], [0.5, 0.0]]], [[[-0.2, 0.05], [0.0, 0.7]]]])
    top = keep_mask(attributions, 0.5, "top", np.random.default_rng(0))
    bottom = keep_mask(attributions, 0.5, "bottom", np.random.default_rng(0))
    assert top.shape == attributions.shape and top.dtype == bool
    np.testing.assert_array_equal(top[0, 0], [[False, True], [True, False]])
    np.testing.assert_array_equal(top[1, 0], [[True, False], [False, True]])
    np.testing.assert_array_equal(bottom, ~top)
    top_one = keep_mask(attributions, 0.25, "top", np.random.default_rng(0))
    np.testing.assert_array_equal(top_one[0, 0], [[False, True], [False, False]])
    np.testing.assert_array_equal(top_one[1, 0], [[False, False], [False, True]])


@pytest.mark.parametrize("keep_fraction", [0.05, 0.1, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("order", ["top", "bottom"])
def test_keep_mask_keeps_keep_count_per_image(keep_fraction, order):
    rng = np.random.default_rng(0)
    # integer scores: many ties
    attributions = rng.integers(-3, 4, size=(10, 2, 4, 5)).astype(np.float32)
    mask = keep_mask(attributions, keep_fraction, order, np.random.default_rng(1))
    expected = keep_count(keep_fraction, 40)
    np.testing.assert_array_equal(mask.reshape(10, -1).sum(axis=1), expected)


@pytest.mark.parametrize("keep_fraction", [0.05, 0.1, 0.2, 0.4, 0.5])
def test_top_and_bottom_are_disjoint(keep_fraction):
    attributions = np.random.default_rng(2).integers(-2, 3, size=(20, 1, 8, 8)).astype(float)
    top = keep_mask(attributions, keep_fraction, "top", np.random.default_rng(7))
    bottom = keep_mask(attributions, keep_fraction, "bottom", np.random.default_rng(7))
    assert not (top & bottom).any()
    if keep_fraction == 0.5:
        assert (top | bottom).all()


def test_top_keeps_the_largest_magnitudes():
    attributions = np.random.default_rng(3).normal(size=(5, 1, 6, 6))
    count = keep_count(0.2, 36)
    top = keep_mask(attributions, 0.2, "top", np.random.default_rng(0))
    bottom = keep_mask(attributions, 0.2, "bottom", np.random.default_rng(0))
    magnitude = np.abs(attributions).reshape(5, -1)
    for index in range(5):
        ordered = np.sort(magnitude[index])
        kept_top = magnitude[index][top[index].ravel()]
        kept_bottom = magnitude[index][bottom[index].ravel()]
        np.testing.assert_array_equal(np.sort(kept_top), ordered[-count:])
        np.testing.assert_array_equal(np.sort(kept_bottom), ordered[:count])


def test_tiebreak_rng_differs_by_block_and_split():
    draws = {
        (split, start): tiebreak_rng(0, split, start).random()
        for split in SPLITS
        for start in (0, 100)
    }
    assert len(set(draws.values())) == len(draws)
    assert tiebreak_rng(0, "val", 100).random() == draws[("val", 100)]


# --- run_mask end to end on tiny stores ----------------------------------------------------------

SHAPE = (1, 2, 3)
PIXEL_MAX = 4.0
PIXEL_MEAN = 0.3  # not a multiple of 1/4, so filled coordinates are recognisable
SIZES = {"train": 6, "val": 3, "test": 4}


def _write_stores(tmp_path, attribution_shape=SHAPE):
    rng = np.random.default_rng(0)
    dataset_path, saliency_path = tmp_path / "dataset.zarr", tmp_path / "saliency.zarr"
    dataset = create_store(
        dataset_path,
        {
            "dataset": "tiny",
            "shape": list(SHAPE),
            "classes": ["a", "b"],
            "num_classes": 2,
            "pixel_max": PIXEL_MAX,
            "pixel_mean": PIXEL_MEAN,
            "channel_mean": [PIXEL_MEAN],
            "channel_std": [0.2],
        },
    )
    saliency = create_store(
        saliency_path, {"model": "tiny_mlp", "base_seed": 0, "method": "gradient", "seed": 0}
    )
    for split, count in SIZES.items():
        group = dataset.create_group(split)
        write_array(group, "images", rng.integers(0, 5, size=(count, *SHAPE), dtype=np.uint8))
        write_array(group, "labels", (np.arange(count) % 2).astype(np.int64))
        # distinct magnitudes: the kept set does not depend on tie-breaking
        values = rng.permutation(count * 6).reshape(count, *SHAPE) + 1.0
        signs = rng.choice([-1.0, 1.0], size=values.shape)
        attributions = (values * signs).astype(np.float32)
        write_array(
            saliency.create_group(split),
            "attributions",
            attributions.reshape(count, *attribution_shape),
        )
    return dataset_path, saliency_path


@pytest.mark.parametrize("order", ["top", "bottom"])
def test_run_mask_end_to_end(tmp_path, order):
    dataset_path, saliency_path = _write_stores(tmp_path)
    out_path = tmp_path / "masked.zarr"
    run_mask(
        str(dataset_path),
        str(saliency_path),
        {order: str(out_path)},
        keep_fraction=0.5,
        imputation="mean",
        ranking="coordinate",
        tiebreak_seed=0,
    )
    attributes = dict(open_store(out_path).attrs)
    assert attributes["pixel_max"] == 1.0
    assert attributes["source_pixel_max"] == PIXEL_MAX
    assert attributes["dataset"] == "tiny"
    assert attributes["shape"] == list(SHAPE)
    masking = attributes["masking"]
    assert masking["order"] == order
    assert masking["keep_fraction"] == 0.5
    assert masking["kept_coordinates"] == 3
    assert masking["coordinates"] == 6
    assert masking["method"] == "gradient"
    assert masking["model"] == "tiny_mlp"
    assert masking["imputation"] == "mean" and masking["ranking"] == "coordinate"
    assert masking["noise"] is None

    for split in SPLITS:
        source, saliency, masked = (
            read_split(dataset_path, split),
            read_split(saliency_path, split),
            read_split(out_path, split),
        )
        assert masked["images"].dtype == np.float32
        assert masked["images"].shape == source["images"].shape
        np.testing.assert_array_equal(masked["labels"], source["labels"])
        magnitude = np.abs(saliency["attributions"]).reshape(SIZES[split], -1)
        ranks = np.argsort(np.argsort(-magnitude, axis=1), axis=1)  # 0 = largest
        kept = (ranks < 3) if order == "top" else (ranks >= 3)
        kept = kept.reshape(source["images"].shape)
        expected = np.where(
            kept, source["images"].astype(np.float32) / np.float32(PIXEL_MAX), PIXEL_MEAN
        ).astype(np.float32)
        np.testing.assert_array_equal(masked["images"], expected)
        assert (masked["images"] == np.float32(PIXEL_MEAN)).reshape(SIZES[split], -1).sum(
            axis=1
        ).tolist() == [3] * SIZES[split]


def test_run_mask_rejects_attributions_of_another_shape(tmp_path):
    dataset_path, saliency_path = _write_stores(tmp_path, attribution_shape=(1, 3, 2))
    with pytest.raises(ValueError, match="shape"):
        run_mask(
            str(dataset_path),
            str(saliency_path),
            {"top": str(tmp_path / "masked.zarr")},
            keep_fraction=0.5,
            imputation="mean",
            ranking="coordinate",
            tiebreak_seed=0,
        )


def test_pixel_ranking_keeps_or_removes_all_channels_of_a_pixel_together():
    rng = np.random.default_rng(3)
    attributions = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
    for order in ("top", "bottom"):
        keep = keep_mask(attributions, 0.25, order, np.random.default_rng(0), "pixel")
        assert keep.shape == attributions.shape
        assert (keep == keep[:, :1]).all()  # the same decision for every channel
        assert (keep[:, 0].reshape(5, -1).sum(axis=1) == 4).all()  # round(0.25 * 16) pixels
        summed = np.abs(attributions.sum(axis=1)).reshape(5, -1)
        kept_scores = np.where(keep[:, 0].reshape(5, -1), summed, np.nan)
        removed_scores = np.where(keep[:, 0].reshape(5, -1), np.nan, summed)
        if order == "top":
            assert (np.nanmin(kept_scores, axis=1) >= np.nanmax(removed_scores, axis=1)).all()
        else:
            assert (np.nanmax(kept_scores, axis=1) <= np.nanmin(removed_scores, axis=1)).all()


def test_pixel_ranking_ranks_the_sum_over_channels_not_the_largest_channel():
    # pixel 0: channels +3 and -3 (sum 0); pixel 1: channels 1 and 1 (sum 2)
    attributions = np.array([[[[3.0, 1.0]], [[-3.0, 1.0]]]], dtype=np.float32)  # (1, 2, 1, 2)
    keep = keep_mask(attributions, 0.5, "top", np.random.default_rng(0), "pixel")
    assert keep[0, :, 0].tolist() == [[False, True], [False, True]]
    coordinate = keep_mask(attributions, 0.5, "top", np.random.default_rng(0), "coordinate")
    assert coordinate[0, :, 0, 0].tolist() == [True, True]


def test_unknown_ranking_is_refused():
    with pytest.raises(ValueError, match="'superpixel'.*coordinate, pixel"):
        keep_mask(np.ones((1, 1, 2, 2)), 0.5, "top", np.random.default_rng(0), "superpixel")


def _noisy_linear(dataset_path, saliency_path, paths, *, ranking, tiebreak_seed, noise):
    """run_mask with the noisy_linear fill at k = 0.5 into `paths` (order -> path)."""
    run_mask(
        str(dataset_path),
        str(saliency_path),
        {order: str(path) for order, path in paths.items()},
        keep_fraction=0.5,
        imputation="noisy_linear",
        ranking=ranking,
        tiebreak_seed=tiebreak_seed,
        noise=noise,
    )


def test_run_mask_with_noisy_linear_imputation(tmp_path):
    dataset_path, saliency_path = _write_stores(tmp_path)
    out_path = tmp_path / "masked.zarr"
    _noisy_linear(
        dataset_path, saliency_path, {"top": out_path}, ranking="pixel", tiebreak_seed=0, noise=0.01
    )
    masking = open_store(out_path).attrs["masking"]
    assert masking["imputation"] == "noisy_linear" and masking["noise"] == 0.01
    assert masking["ranking"] == "pixel" and masking["kept_units"] == 3 and masking["units"] == 6
    source = read_split(dataset_path, "test")
    images = source["images"].astype(np.float32) / np.float32(PIXEL_MAX)
    masked, _ = read_images(out_path, "test")  # filled on read
    changed = masked != images
    assert changed.reshape(SIZES["test"], -1).sum(axis=1).max() <= 3  # only removed pixels
    filled = masked[changed]
    assert not np.allclose(filled, PIXEL_MEAN)  # neighbours, not a constant
    assert np.abs(filled - 0.5).max() < 0.6  # weighted means of [0, 1] values plus small noise


@pytest.mark.parametrize("imputation", ["mean", "noisy_linear", "mask_only"])
def test_one_job_for_both_orders_writes_what_a_job_per_order_writes(tmp_path, imputation):
    dataset_path, saliency_path = _write_stores(tmp_path)
    settings = dict(keep_fraction=0.5, imputation=imputation, ranking="coordinate", noise=0.01)
    both = {order: str(tmp_path / f"both-{order}.zarr") for order in ("top", "bottom")}
    run_mask(str(dataset_path), str(saliency_path), both, tiebreak_seed=3, **settings)
    for order in ("top", "bottom"):
        alone = str(tmp_path / f"alone-{order}.zarr")
        run_mask(str(dataset_path), str(saliency_path), {order: alone}, tiebreak_seed=3, **settings)
        assert dict(open_store(alone).attrs) == dict(open_store(both[order]).attrs)
        assert open_store(alone).attrs["masking"]["order"] == order
        for split in SPLITS:
            for name, values in read_split(alone, split).items():
                np.testing.assert_array_equal(read_split(both[order], split)[name], values)
    top, bottom = (read_split(both[order], "train")["images"] for order in ("top", "bottom"))
    assert not np.array_equal(top, bottom)


@pytest.mark.parametrize("ranking", ["coordinate", "pixel"])
def test_a_noisy_linear_store_holds_no_noise_and_reads_as_the_imputed_images(tmp_path, ranking):
    """The store keeps the kept coordinates, zeros and the keep mask; read_images recomputes the
    fill bit for bit as an imputation at write time (same blocks, same noise streams)."""
    dataset_path, saliency_path = _write_stores(tmp_path)
    paths = {order: str(tmp_path / f"{order}.zarr") for order in ("top", "bottom")}
    _noisy_linear(dataset_path, saliency_path, paths, ranking=ranking, tiebreak_seed=4, noise=0.05)
    dataset = open_store(dataset_path).attrs
    for split in SPLITS:
        pixels = read_split(dataset_path, split)["images"].astype(np.float32) / PIXEL_MAX
        attributions = read_split(saliency_path, split)["attributions"]
        keeps = keep_masks(attributions, 0.5, ["top", "bottom"], tiebreak_rng(4, split, 0), ranking)
        for order, path in paths.items():
            stored = read_split(path, split)
            np.testing.assert_array_equal(stored["keep"], keeps[order])
            np.testing.assert_array_equal(stored["images"], np.where(keeps[order], pixels, 0))
            expected = impute(
                pixels,
                keeps[order],
                "noisy_linear",
                pixel_mean=dataset["pixel_mean"],
                channel_mean=dataset["channel_mean"],
                noise=0.05,
                rng=noise_rng(4, split, 0),
            )
            images, labels = read_images(path, split)
            np.testing.assert_array_equal(images, expected)  # bit-identical
            assert not np.array_equal(images, stored["images"])  # the fill is there on read
            np.testing.assert_array_equal(labels, read_split(dataset_path, split)["labels"])


def test_a_noisy_linear_store_with_a_damaged_keep_mask_is_refused(tmp_path):
    import zarr
    from diffroar.store import StoreError

    dataset_path, saliency_path = _write_stores(tmp_path)
    path = tmp_path / "top.zarr"
    _noisy_linear(
        dataset_path,
        saliency_path,
        {"top": path},
        ranking="coordinate",
        tiebreak_seed=0,
        noise=0.05,
    )
    keep = zarr.open_array(str(path / "test" / "keep"), mode="r+")
    keep.resize((keep.shape[0] - 1, *keep.shape[1:]))
    with pytest.raises(StoreError, match="do not match the metadata_sha256"):
        read_images(path, "test")


# --- masked_splits: what the retrain and noretrain jobs train and test on -----------------------


@pytest.mark.parametrize("ranking", ["coordinate", "pixel"])
@pytest.mark.parametrize("imputation", ["mean", "channel_mean", "noisy_linear", "mask_only"])
def test_masked_splits_are_bit_for_bit_the_images_read_from_run_masks_stores(
    tmp_path, monkeypatch, imputation, ranking
):
    """Several blocks per split (chunks of two images), so block-wise tie-breaking and noise
    streams are exercised; both orders from one call, as a retrain job makes them."""
    import diffroar.store

    monkeypatch.setattr(diffroar.store, "CHUNK_BYTES", 2 * 6 * 4)
    dataset_path, saliency_path = _write_stores(tmp_path)
    assert open_store(saliency_path)["train"]["attributions"].chunks[0] == 2
    settings = dict(
        keep_fraction=0.5, imputation=imputation, ranking=ranking, tiebreak_seed=5, noise=0.05
    )
    paths = {order: str(tmp_path / f"{order}.zarr") for order in ("top", "bottom")}
    run_mask(str(dataset_path), str(saliency_path), paths, **settings)
    masking, splits = masked_splits(
        str(dataset_path), str(saliency_path), ("top", "bottom"), **settings
    )
    for order, path in paths.items():
        recorded = dict(open_store(path).attrs["masking"])
        recorded.pop("fill_on_read", None)
        assert recorded == masking | {"order": order}
        assert list(splits[order]) == list(SPLITS)
        for split in SPLITS:
            images, labels = splits[order][split]
            stored_images, stored_labels = read_images(path, split)
            assert images.dtype == stored_images.dtype == np.float32
            np.testing.assert_array_equal(images, stored_images)
            np.testing.assert_array_equal(labels, stored_labels)
            assert labels.dtype == np.int64
    assert not np.array_equal(splits["top"]["train"][0], splits["bottom"]["train"][0])


def test_masked_splits_of_the_test_split_alone_equal_those_of_all_splits(tmp_path):
    dataset_path, saliency_path = _write_stores(tmp_path)
    settings = dict(keep_fraction=0.3, imputation="noisy_linear", ranking="coordinate",
                    tiebreak_seed=1, noise=0.1)  # fmt: skip
    _, alone = masked_splits(
        str(dataset_path), str(saliency_path), ["bottom"], splits=("test",), **settings
    )
    _, every = masked_splits(str(dataset_path), str(saliency_path), ["top", "bottom"], **settings)
    assert list(alone["bottom"]) == ["test"]
    for got, want in zip(alone["bottom"]["test"], every["bottom"]["test"], strict=True):
        np.testing.assert_array_equal(got, want)


def test_masked_splits_refuse_attributions_of_another_shape(tmp_path):
    dataset_path, saliency_path = _write_stores(tmp_path, attribution_shape=(1, 3, 2))
    with pytest.raises(ValueError, match="attributions have shape"):
        masked_splits(str(dataset_path), str(saliency_path), ["top"], keep_fraction=0.5,
                      imputation="mean", ranking="coordinate", tiebreak_seed=0)  # fmt: skip
