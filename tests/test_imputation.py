"""Imputation of removed coordinates: training means and ROAD's noisy linear imputation."""

from __future__ import annotations

import numpy as np
import pytest
from diffroar import imputation
from diffroar.imputation import IMPUTATIONS, impute

CHANNEL_MEAN = [0.25, 0.75]


def batch(shape=(2, 2, 5, 6), removed_fraction=0.5, seed=0):
    """Random images in [0, 1] and a random keep mask, different for every channel."""
    rng = np.random.default_rng(seed)
    images = rng.random(shape, dtype=np.float32)
    keep = rng.random(shape) >= removed_fraction
    return images, keep


def run(images, keep, name="noisy_linear", noise=0.0, seed=0, channel_mean=None):
    if channel_mean is None:
        channel_mean = CHANNEL_MEAN[: images.shape[1]]
    return impute(
        images,
        keep,
        name,
        pixel_mean=0.4,
        channel_mean=channel_mean,
        noise=noise,
        rng=np.random.default_rng(seed),
    )


def dense_reference(plane: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The noisy-linear solution of one plane without noise, built pixel by pixel as a dense
    system: every removed pixel is the weighted mean of its neighbours inside the plane."""
    height, width = plane.shape
    removed = [(r, c) for r in range(height) for c in range(width) if not keep[r, c]]
    index = {pixel: i for i, pixel in enumerate(removed)}
    matrix = np.zeros((len(removed), len(removed)))
    rhs = np.zeros(len(removed))
    for i, (r, c) in enumerate(removed):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr, dc) == (0, 0) or not (0 <= rr < height and 0 <= cc < width):
                    continue
                weight = 1 / 12 if dr and dc else 1 / 6
                matrix[i, i] += weight
                if (rr, cc) in index:
                    matrix[i, index[rr, cc]] -= weight
                else:
                    rhs[i] += weight * plane[rr, cc]
    solution = plane.astype(np.float64)
    for (r, c), value in zip(removed, np.linalg.solve(matrix, rhs), strict=True):
        solution[r, c] = value
    return solution


def dense_batch(images, keep):
    return np.stack(
        [
            np.stack([dense_reference(p, k) for p, k in zip(image, mask, strict=True)])
            for image, mask in zip(images, keep, strict=True)
        ]
    )


def test_mean_fills_the_removed_coordinates():
    images, keep = batch()
    out = run(images, keep, "mean")
    assert out.dtype == np.float32 and out.shape == images.shape
    assert np.array_equal(out[keep], images[keep])
    assert np.all(out[~keep] == np.float32(0.4))


def test_channel_mean_fills_each_channel_with_its_mean():
    images, keep = batch()
    out = run(images, keep, "channel_mean")
    assert out.dtype == np.float32
    assert np.array_equal(out[keep], images[keep])
    for channel, mean in enumerate(CHANNEL_MEAN):
        removed = ~keep[:, channel]
        assert removed.any()
        assert np.all(out[:, channel][removed] == np.float32(mean))


@pytest.mark.parametrize("name", [name for name in IMPUTATIONS if name != "mask_only"])
def test_nothing_removed_returns_the_images(name):
    images, _ = batch()
    out = run(images, np.ones(images.shape, dtype=bool), name, noise=0.1)
    assert np.array_equal(out, images)
    assert out is not images


@pytest.mark.parametrize(("removed_fraction", "seed"), [(0.3, 0), (0.5, 1), (0.5, 2), (0.9, 3)])
def test_noisy_linear_matches_a_dense_solve(removed_fraction, seed):
    images, keep = batch(removed_fraction=removed_fraction, seed=seed)
    assert not np.array_equal(keep[:, 0], keep[:, 1])
    assert (~keep).any(axis=(2, 3)).all() and keep.any(axis=(2, 3)).all()
    out = run(images, keep)
    assert out.dtype == np.float32
    assert np.array_equal(out[keep], images[keep])
    np.testing.assert_allclose(out, dense_batch(images, keep), rtol=0, atol=1e-5)


def test_noisy_linear_solves_planes_in_several_systems(monkeypatch):
    images, keep = batch(shape=(6, 2, 5, 6), seed=4)
    expected = dense_batch(images, keep)
    for unknowns in (1, 20, 10**9):
        monkeypatch.setattr(imputation, "UNKNOWNS_PER_SOLVE", unknowns)
        np.testing.assert_allclose(run(images, keep), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_noisy_linear_keeps_a_constant_image_constant(seed):
    _, keep = batch(removed_fraction=0.7, seed=seed)
    keep[:, :, 0, 0] = True  # no plane fully removed: that one would get the channel mean
    images = np.full(keep.shape, 0.3, dtype=np.float32)
    np.testing.assert_allclose(run(images, keep), images, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_noisy_linear_reproduces_a_ramp_away_from_the_borders_it_runs_into(seed):
    # The stencil is symmetric, so a linear function equals the weighted mean of its neighbours
    # wherever the neighbours inside the image are symmetric about the pixel along the ramp: any
    # pixel not in the first or last column for a ramp along the columns.
    shape = (2, 2, 7, 8)
    ramp = np.broadcast_to(np.linspace(0.1, 0.9, shape[3], dtype=np.float32), shape).copy()
    _, keep = batch(shape=shape, removed_fraction=0.8, seed=seed)
    keep[..., [0, -1]] = True
    out = run(ramp, keep)
    np.testing.assert_allclose(out, ramp, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out, dense_batch(ramp, keep), rtol=0, atol=1e-6)

    keep[..., 0] = False  # removed pixels on the border the ramp runs into are not on the ramp
    out = run(ramp, keep)
    np.testing.assert_allclose(out, dense_batch(ramp, keep), rtol=0, atol=1e-5)
    assert np.abs(out[..., 0] - ramp[..., 0]).min() > 1e-3


def test_noisy_linear_fills_a_fully_removed_plane_with_the_channel_mean():
    images, keep = batch(seed=5)
    keep[1, 0] = False
    out = run(images, keep)
    assert np.all(out[1, 0] == np.float32(CHANNEL_MEAN[0]))
    rest = np.ones(keep.shape, dtype=bool)
    rest[1, 0] = False
    expected = dense_batch(np.where(rest, images, 0), np.where(rest, keep, True))
    np.testing.assert_allclose(out[rest], expected[rest], rtol=0, atol=1e-5)

    noisy = run(images, keep, noise=0.05, seed=1)
    assert not np.all(noisy[1, 0] == np.float32(CHANNEL_MEAN[0]))
    assert abs(noisy[1, 0].mean() - CHANNEL_MEAN[0]) < 0.05


def test_noisy_linear_adds_the_noise_to_the_imputed_values_only():
    images, keep = batch(shape=(20, 2, 16, 16), seed=6)
    solved = run(images, keep, noise=0.0)
    noise = 0.05
    noisy = run(images, keep, noise=noise, seed=7)
    assert np.array_equal(noisy[keep], images[keep])
    difference = noisy[~keep].astype(np.float64) - solved[~keep]
    assert difference.size > 5000
    assert abs(difference.std() - noise) < 0.05 * noise
    assert abs(difference.mean()) < 5 * noise / np.sqrt(difference.size)
    assert np.abs(np.corrcoef(difference[:-1], difference[1:])[0, 1]) < 0.05


def test_noisy_linear_is_deterministic_given_the_rng():
    images, keep = batch(seed=8)
    first = run(images, keep, noise=0.01, seed=3)
    assert np.array_equal(first, run(images, keep, noise=0.01, seed=3))
    assert not np.array_equal(first, run(images, keep, noise=0.01, seed=4))


def test_unknown_imputation():
    images, keep = batch()
    with pytest.raises(ValueError, match="'median'") as error:
        run(images, keep, "median")
    assert all(name in str(error.value) for name in IMPUTATIONS)


def test_shape_mismatch():
    images, keep = batch()
    with pytest.raises(ValueError, match=r"\(2, 2, 5, 6\).*\(2, 2, 6, 5\)"):
        run(images, keep.transpose(0, 1, 3, 2))
