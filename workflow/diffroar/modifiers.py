"""Method modifiers: wrappers that take an attribution method and return one.

Each wrapper takes a `Method` (diffroar.saliency's signature: model, images (N, C, H, W) float32 in
[0, 1], labels (N,) int64, settings, keyword `seeds` (N,) uint64 -> attributions (N, C, H, W)
float32 on the CPU) and returns a `Method`, so a modifier composes with any method, built-in or
the user's, and with other modifiers. diffroar.methodnames says how a derived method is named
(`integrated_gradients+smoothgrad+blur1`); `with_modifiers` applies a parsed name's modifiers
left to right.

- `absolute`: |A|.
- `blurred(sigma)`: scipy.ndimage.gaussian_filter of each (H, W) plane of the map (no smoothing
  across images or channels), sigma in pixels, reflected borders.
- `noise_tunnel(nt_type)`: S = `settings.noise_samples` copies x + N(0, noise_std^2) of each image
  (image i's noise drawn from `seeds[i]` exactly as diffroar.saliency's built-in SmoothGrad draws
  it), the method applied to the N*S noisy images (the labels repeated; the noisy copy s of image
  i gets its own seed, a SplitMix64 output of (`seeds[i]`, s), for a stochastic method), then
  reduced over the S copies as Captum's NoiseTunnel reduces: smoothgrad mean, smoothgrad_sq mean
  of squares, vargrad mean of squares less the squared mean. Over `gradient` it gives the
  built-in smoothgrad, smoothgrad_sq and vargrad (the same noise, the same passes of
  `internal_batch_size` noisy inputs), which is why the config names those by their built-in
  names only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage

from .methodnames import NOISE_TUNNELS, Modifier

if TYPE_CHECKING:
    from .saliency import Method

# SplitMix64's increment (the golden ratio): consecutive counters give unrelated outputs
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 `values` (arithmetic modulo 2**64)."""
    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


def sample_seeds(seeds: np.ndarray, samples: int) -> np.ndarray:
    """(N * samples,) uint64, image-major: the seed of noisy copy s of image i, SplitMix64 output
    s + 1 started from `seeds[i]` (a function of the image's seed and s alone)."""
    counters = np.arange(1, samples + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        keys = np.asarray(seeds, dtype=np.uint64)[:, None] + counters[None, :] * GOLDEN
    return splitmix64(keys).reshape(-1)


def absolute(method: Method) -> Method:
    """`method`'s attributions, absolute."""

    def modified(model, images, labels, settings, *, seeds):
        return method(model, images, labels, settings, seeds=seeds).abs()

    return modified


def blurred(method: Method, sigma: float) -> Method:
    """`method`'s attributions smoothed per (H, W) plane by a Gaussian of `sigma` pixels."""

    def modified(model, images, labels, settings, *, seeds):
        values = method(model, images, labels, settings, seeds=seeds).numpy()
        smooth = ndimage.gaussian_filter(values, sigma=(0, 0, sigma, sigma), mode="reflect")
        return torch.from_numpy(smooth.astype(np.float32, copy=False))

    return modified


def noise_tunnel(method: Method, nt_type: str) -> Method:
    """The noise tunnel `nt_type` (smoothgrad, smoothgrad_sq, vargrad) over `method`, computed
    in chunks of `settings.batch_size` images; `method` runs on each chunk's noisy copies with
    `batch_size` = `internal_batch_size`, so that its passes hold at most that many inputs."""
    if nt_type not in NOISE_TUNNELS:
        raise ValueError(f"noise tunnel {nt_type!r} is not one of {NOISE_TUNNELS}")

    def modified(model, images, labels, settings, *, seeds):
        if len(seeds) != len(images):
            raise ValueError(f"got {len(seeds)} seeds for {len(images)} images: one per image")
        samples, shape = settings.noise_samples, images.shape[1:]
        inner = replace(settings, batch_size=settings.internal_batch_size)
        gathered = np.zeros(images.shape, dtype=np.float32)
        for start in range(0, len(images), settings.batch_size):
            rows = slice(start, start + settings.batch_size)
            batch, count = images[rows].detach(), len(seeds[rows])
            # the noise of diffroar.saliency._noise_tunnel: image i's from seeds[i]
            generator = torch.Generator(device=batch.device)
            noise = torch.empty((count, samples, *shape), device=batch.device)
            for row, seed in zip(noise, seeds[rows], strict=True):
                torch.randn(row.shape, generator=generator.manual_seed(int(seed)), out=row)
            noisy = (batch.unsqueeze(1) + float(settings.noise_std) * noise).flatten(0, 1)
            values = method(
                model,
                noisy,
                labels[rows].repeat_interleave(samples),
                inner,
                seeds=sample_seeds(seeds[rows], samples),
            ).view(count, samples, *shape)
            mean = values.sum(dim=1) / samples
            if nt_type == "smoothgrad":
                reduced = mean
            else:
                mean_square = values.pow(2).sum(dim=1) / samples
                reduced = mean_square if nt_type == "smoothgrad_sq" else mean_square - mean * mean
            gathered[rows] = reduced.numpy()
        return torch.from_numpy(gathered)

    return modified


def with_modifiers(method: Method, modifiers: list[Modifier]) -> Method:
    """`method` with `modifiers` ((kind, parameter) from diffroar.methodnames.parse_method)
    applied left to right: `gradient+abs+blur1` blurs the absolute gradient."""
    for kind, parameter in modifiers:
        if kind == "abs":
            method = absolute(method)
        elif kind == "blur":
            method = blurred(method, float(parameter))
        else:
            method = noise_tunnel(method, kind)
    return method
