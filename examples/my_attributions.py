"""Example user attribution methods for diffroar's `methods:` config section.

A user method is a function

    fn(model, inputs, targets, **params) -> attributions

that the saliency stage calls on chunks of `saliency.batch_size` images:

- `model`: the base model (a torch nn.Module) in eval mode, on the job's device; it maps pixels in
  [0, 1] to logits (its input normalisation is inside it);
- `inputs`: float32 tensor (N, C, H, W), pixels in [0, 1], on the model's device;
- `targets`: int64 tensor (N,), the class to explain per image (the true label for
  `saliency.target: logit`, the model's prediction for `predicted`);
- `params`: the entry's `params` mapping, as keyword arguments;
- `seeds` (only if the function has a parameter of that name): uint64 numpy array (N,), one seed
  per image that depends on the image alone (not on the batch), so a stochastic method is
  reproducible and independent of the batch size;

and returns signed attributions of the inputs' shape (N, C, H, W): a torch tensor or numpy array
of any real floating dtype, finite. Use it from a config as

    methods:
      edge_grad:
        function: my_attributions:edge_gradient
        params: {sigma: 1.0}
    experiment:
      methods: [gradient, edge_grad, random]

with this file in the working directory of the run (or on PYTHONPATH). Editing it reruns the
saliency of the methods it defines and everything after them, nothing else.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def _target_gradient(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d logit_{targets[i]}(x_i) / d x_i for every image: (N, C, H, W) float32."""
    inputs = inputs.detach().clone().requires_grad_(True)
    logits = model(inputs)
    chosen = logits.gather(1, targets.view(-1, 1)).sum()
    (gradient,) = torch.autograd.grad(chosen, inputs)
    return gradient


def edge_gradient(model, inputs: torch.Tensor, targets: torch.Tensor, sigma: float = 1.0):
    """The gradient of each image's target logit times the image's edge strength: the Gaussian
    gradient magnitude of each channel (scipy.ndimage, std `sigma` pixels), scaled to a maximum
    of 1 per image plane. Gradients at flat regions are damped, those at edges kept; signed.

    inputs (N, C, H, W) float32 in [0, 1] -> attributions (N, C, H, W) float32 (a tensor on the
    inputs' device)."""
    gradient = _target_gradient(model, inputs, targets)
    planes = inputs.detach().cpu().numpy().astype(np.float64)
    edges = np.stack(
        [
            [ndimage.gaussian_gradient_magnitude(plane, sigma=sigma) for plane in image]
            for image in planes
        ]
    )
    peak = edges.max(axis=(2, 3), keepdims=True)
    weights = np.divide(edges, peak, out=np.zeros_like(edges), where=peak > 0)
    return gradient * torch.from_numpy(weights.astype(np.float32)).to(gradient.device)


def noisy_gradient(
    model,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    seeds: np.ndarray,
    samples: int = 4,
    std: float = 0.1,
):
    """SmoothGrad by hand: the mean gradient of the target logit over `samples` copies
    x + N(0, std^2) of each image, the noise of image i drawn from `seeds[i]` alone (a stochastic
    method that does not depend on how the images are batched).

    inputs (N, C, H, W) float32 in [0, 1], seeds uint64 (N,) -> attributions (N, C, H, W)."""
    generator = torch.Generator()
    noise = torch.stack(
        [
            torch.randn((samples, *inputs.shape[1:]), generator=generator.manual_seed(int(seed)))
            for seed in seeds
        ]
    ).to(inputs.device)  # (N, samples, C, H, W)
    noisy = (inputs.detach().unsqueeze(1) + std * noise).flatten(0, 1)
    gradient = _target_gradient(model, noisy, targets.repeat_interleave(samples))
    return gradient.view(len(inputs), samples, *inputs.shape[1:]).mean(dim=1)
