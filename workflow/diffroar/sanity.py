"""Stage `sanity`: the model-parameter randomisation check (Adebayo et al. 2018, "Sanity checks
for saliency maps"), without retraining.

For one base model and every method of the experiment, the model's layers (its modules with
parameters of their own, Linear, Conv, BatchNorm, ..., in the order the forward pass runs them:
`parameter_layers`) are re-initialised by each module's own `reset_parameters()`, seeded per layer
(`layer_seed`: the sanity seed, the base seed and the layer's position), in two ways
(`randomisations`):

- cascading: from the output down, step j re-initialising the last j layers;
- independent: one layer at a time, step j re-initialising the j-th layer from the output alone.

A layer gets the same weights in both, so cascading step 1 is independent step 1. Each randomised
model attributes a seeded subset of the test images (`image_subset`), and per image the Spearman
rank correlation of its map with the trained model's is taken over the C*H*W coordinates
(`rank_correlations`), of |A| (`spearman_abs`: what the masks rank) and of the signed A
(`spearman_signed`). A method whose maps depend on the learned weights falls towards 0 as layers
are randomised; one whose curve stays near 1 explains the image more than the model.

Stochastic methods and the controls. A random attribution is not a function of the model: asked
about another model (a randomised one), the method draws afresh, as Quantus calls the explanation
function anew for every randomised model. So the trained model's maps use the saliency stage's
seeds (`image_seeds`: the maps the masks were made from) and each randomised model's maps use
fresh ones (`image_seeds(..., draw=(sanity seed, index of the randomisation))`). Then

- `random` stays near 0 (independent draws) and `sobel` at 1 (it ignores the model and draws
  nothing): the two ends between which a method sits;
- noise-tunnel methods (smoothgrad, `+smoothgrad`, ...) get fresh noise too, so their curves
  include how far two noise draws disagree. The row of mode `trained` (0 randomised layers)
  measures that alone: the trained model with fresh draws, 1 for a deterministic method and the
  agreement of two draws for a stochastic one. Every curve starts there.

The explained classes are the trained model's for every randomised model (the true labels for
targets `logit` and `loss`, its predictions for `predicted`), so that only the weights change.

One row per base model x method x randomisation x measure: the mean of the per-image correlations,
their std and 95% Student-t interval over the images (`interval_over` = "test_images"). An image
whose correlation is undefined (a constant map, e.g. a gradient that is 0 everywhere on a
randomised model) is left out of the mean and counted in `n_undefined`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from .checks import expect_inputs
from .data import read_attributes, read_images
from .metrics import interval95
from .models import load_checkpoint
from .provenance import config_fingerprint
from .runtime import device, log, package_version, write_parquet
from .saliency import Settings, batch_sizes, explained_classes, image_seeds, resolve_method
from .train import training_mode

MEASURES = ("spearman_abs", "spearman_signed")


@dataclass(frozen=True)
class Randomisation:
    """One randomised model: `mode` (trained, cascading, independent), `step` (the number of
    layers from the output it reaches down to; 0 for trained), `positions` (forward positions,
    0-based, of the re-initialised layers) and `draw` (its fresh draws' index)."""

    mode: str
    step: int
    positions: tuple[int, ...]
    draw: int


def parameter_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names (as model.named_modules gives them) of the modules with parameters of their own, in
    the order their forward passes end on `example` (N >= 1 images, one pass without gradients).
    A module that the pass does not run is left out: its weights change no output."""
    owners = {
        module: name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    }
    order: list[str] = []

    def record(module, inputs, output):
        if owners[module] not in order:
            order.append(owners[module])

    hooks = [module.register_forward_hook(record) for module in owners]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return order


def randomisations(layers: int) -> list[Randomisation]:
    """The trained model with fresh draws, then cascading steps 1..layers (the last j layers),
    then independent steps 1..layers (the j-th layer from the output alone)."""
    plans = [Randomisation("trained", 0, (), 0)]
    for step in range(1, layers + 1):
        plans.append(Randomisation("cascading", step, tuple(range(layers - step, layers)), 0))
    for step in range(1, layers + 1):
        plans.append(Randomisation("independent", step, (layers - step,), 0))
    return [
        Randomisation(plan.mode, plan.step, plan.positions, draw)
        for draw, plan in enumerate(plans, start=1)
    ]


def layer_seed(seed: int, base_seed: int, position: int) -> int:
    """The torch seed that re-initialises the layer at forward `position` of a base model."""
    return int(np.random.SeedSequence([seed, base_seed, position]).generate_state(1)[0])


def randomised(
    model: nn.Module, layers: list[str], positions: tuple[int, ...], seed: int, base_seed: int
) -> nn.Module:
    """A copy of `model` (in eval mode) whose layers at `positions` of `layers` (names from
    `parameter_layers`) are re-initialised by their own reset_parameters(), each under
    `layer_seed` (torch's global generator is restored afterwards)."""
    variant = copy.deepcopy(model)
    for position in positions:
        module = variant.get_submodule(layers[position])
        if not callable(getattr(module, "reset_parameters", None)):
            raise ValueError(
                f"layer {layers[position]!r} ({type(module).__name__}) has parameters but no "
                "reset_parameters(): the randomisation check cannot re-initialise it; give the "
                "module a reset_parameters() method"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(layer_seed(seed, base_seed, position))
            module.reset_parameters()
    return variant.eval()


def rank_correlations(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per image (N,) float64: the Spearman rank correlation of `reference[i]` and `other[i]`
    (N, ...) over all their values (the Pearson correlation of their ranks, ties given their
    average rank); NaN where either map is constant."""
    count = len(reference)
    ranks = [
        stats.rankdata(values.reshape(count, -1), axis=1).astype(np.float64)
        for values in (reference, other)
    ]
    first, second = (rank - rank.mean(axis=1, keepdims=True) for rank in ranks)
    scale = np.sqrt((first * first).sum(axis=1) * (second * second).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (first * second).sum(axis=1) / scale, np.nan)


def image_subset(test_images: int, images: int, seed: int) -> np.ndarray:
    """Sorted indices (int64) of `images` test images drawn without replacement with `seed`;
    every index when the split has no more than `images`."""
    if test_images <= images:
        return np.arange(test_images)
    return np.sort(np.random.default_rng(seed).choice(test_images, images, replace=False))


def summary(values: np.ndarray) -> dict[str, Any]:
    """Mean, std, 95% t-interval of per-image correlations (NaN left out), the number of images
    with a correlation and of those without (`n_undefined`)."""
    defined = pd.Series(values).dropna()
    low, high = interval95(defined)
    return {
        "mean": float(defined.mean()) if len(defined) else float("nan"),
        "std": float(defined.std(ddof=1)) if len(defined) > 1 else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "n_images": len(defined),
        "n_undefined": len(values) - len(defined),
        "interval_over": "test_images",
    }


def _finite(values: np.ndarray, method: str, what: str) -> np.ndarray:
    if not np.isfinite(values).all():
        raise FloatingPointError(f"{method} attributions of {what} are NaN or infinite")
    return values


def run_sanity(
    dataset_path: str,
    checkpoint_path: str,
    out_path: str,
    *,
    methods: dict[str, dict[str, Any]],
    sanity: dict[str, Any],
    batch: dict[str, Any],
    model_cfg: dict[str, Any],
    checkpoint_fingerprint: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write the randomisation-check table of one base model.

    `methods` maps every method name (derived ones included) to its settings (the saliency
    rule's params, diffroar.config.method_settings); `sanity` holds `images` and `seed`; `batch`
    the saliency `batch_size` and `internal_batch_size` (integers or "auto"). The checkpoint must
    have been trained under `checkpoint_fingerprint`; with `expected` (input path -> the identity
    the rule expects), inputs that record another identity are refused."""
    expect_inputs(expected, [dataset_path, checkpoint_path])
    model, checkpoint = load_checkpoint(checkpoint_path, checkpoint_fingerprint)
    base_seed, seed = int(checkpoint["seed"]), int(sanity["seed"])
    dataset = read_attributes(dataset_path)
    all_images, all_labels = read_images(dataset_path, "test")
    indices = image_subset(len(all_images), int(sanity["images"]), seed)
    on = device()
    images = torch.from_numpy(all_images[indices]).to(on)
    labels = torch.from_numpy(all_labels[indices]).to(on)
    layers = parameter_layers(model, images[:1].cpu())
    types = {name: type(model.get_submodule(name)).__name__ for name in layers}
    trained = copy.deepcopy(model).to(on)
    prepared = {}
    for name, settings in methods.items():
        fields = {k: v for k, v in settings.items() if k not in ("seed", "user_method")}
        resolved = Settings(
            **(fields | batch_sizes(batch, on)), channel_mean=tuple(dataset["channel_mean"])
        )
        method = resolve_method(name, settings.get("user_method"))  # a user method: its entry
        classes = explained_classes(trained, images, labels, resolved)
        method_seed = int(settings.get("seed", 0))
        seeds = image_seeds(method_seed, base_seed, "test", indices)
        reference = method(trained, images, classes, resolved, seeds=seeds).numpy()
        prepared[name] = (
            method,
            resolved,
            classes,
            method_seed,
            _finite(reference, name, "the trained model"),
        )
    identity = {
        "dataset": checkpoint["dataset"],
        "model": checkpoint["model"],
        "architecture": model_cfg["architecture"],
        "training_mode": training_mode(model_cfg),
        "base_seed": base_seed,
    }
    rows = []
    for plan in randomisations(len(layers)):
        variant = (
            trained
            if plan.mode == "trained"
            else randomised(model, layers, plan.positions, seed, base_seed).to(on)
        )
        layer = layers[len(layers) - plan.step] if plan.step else "none"
        for name, (method, resolved, classes, method_seed, reference) in prepared.items():
            seeds = image_seeds(method_seed, base_seed, "test", indices, draw=(seed, plan.draw))
            values = method(variant, images, classes, resolved, seeds=seeds).numpy()
            what = f"the {plan.mode} randomisation to layer {layer}"
            _finite(values, name, what)
            correlations = {
                "spearman_abs": rank_correlations(np.abs(reference), np.abs(values)),
                "spearman_signed": rank_correlations(reference, values),
            }
            fingerprint = config_fingerprint(
                checkpoint["config_fingerprint"], name, methods[name], sanity
            )
            for measure in MEASURES:
                rows.append(
                    identity
                    | {
                        "method": name,
                        "mode": plan.mode,
                        "layer_from_output": plan.step,
                        "layer": layer,
                        "layer_type": types.get(layer, "none"),
                        "randomised_layers": len(plan.positions),
                        "layers": len(layers),
                        "measure": measure,
                    }
                    | summary(correlations[measure])
                    | {"config_fingerprint": fingerprint, "package_version": package_version()}
                )
        log.info(
            "%s step %d (%s): %s",
            plan.mode,
            plan.step,
            layer,
            ", ".join(
                f"{row['method']} {row['mean']:.3f}"
                for row in rows[-2 * len(prepared) :]
                if row["measure"] == "spearman_abs"
            ),
        )
    log.info(
        "%s/%s seed %d: %d layers (%s), %d methods, %d test images on %s",
        checkpoint["dataset"],
        checkpoint["model"],
        base_seed,
        len(layers),
        ", ".join(layers),
        len(methods),
        len(indices),
        on,
    )
    write_parquet(pd.DataFrame(rows), out_path)
