"""Stage `saliency`: attributions of a base model for every train, validation and test image.

Every method has one signature,

    method(model, images, labels, settings: Settings, *, seeds: np.ndarray) -> torch.Tensor

taking images (N, C, H, W) float32 in [0, 1] and labels (N,) int64 on the model's device (the
model in eval mode) and one seed per image (N,) (see `image_seeds`), and returns signed
attributions (N, C, H, W) float32 on the CPU, computed in chunks of `settings.batch_size`
images. A stochastic method draws image i's randomness from `seeds[i]` alone, so attributions do
not depend on `batch_size`, `internal_batch_size` or how the stage splits a split into blocks
(up to the last bits of floating point where the batch shape changes the kernels). The methods
neither change the model nor leave hooks on it. `METHODS` maps config names to methods; every
gradient is Captum's:

- `gradient`: Saliency (signed, abs=False)
- `gradient_x_input`: InputXGradient
- `integrated_gradients`: IntegratedGradients (`steps`, `baseline`, `internal_batch_size`)
- `smoothgrad`, `smoothgrad_sq`, `vargrad`: the signed Saliency of `noise_samples` noisy copies
  x + N(0, noise_std^2) of each image, reduced as Captum's NoiseTunnel does for that nt_type
  (mean, mean of squares, mean of squares less the squared mean); the noise of image i is drawn
  from `seeds[i]` (NoiseTunnel would draw it from the global RNG, in batch order): the noise
  tunnel of diffroar.modifiers over `gradient`, the one implementation of it
- `guided_backprop`: GuidedBackprop
- `gradcam`: LayerGradCam on the layer `settings.layer` of `model.network` (ReLU applied),
  upsampled bilinearly to (H, W) and repeated over the C channels
- `deeplift`: DeepLift (`baseline`); target `loss` is refused (see `deeplift`)
- model-independent controls: `random` (uniform scores, image i's from `seeds[i]`) and `sobel`
  (the per-channel Sobel edge magnitude of the image)

A config name may add modifiers to any of them (`integrated_gradients+smoothgrad+blur1`, see
diffroar.methodnames): `resolve_method` wraps the registry's method in diffroar.modifiers.

`Settings.target` picks what is explained: `logit`, the logit of the class in `labels`, or
`loss`, the per-sample cross-entropy of that class (Captum explains the `CrossEntropy` wrapper,
with the labels passed as an additional forward argument so that it expands them with the
inputs); `predicted` is a logit target whose classes are the model's predictions on the unmasked
images: `run_saliency` passes the methods `explained_classes(...)`, the true labels for `logit`
and `loss` and the predictions for `predicted`, so that with `predicted` no label enters the
attributions. gradcam and guided_backprop refuse `loss`: they keep only positive evidence
(ReLU), which for the loss is what raises it.

User methods (the config's `methods` section) sit behind the same signature: `resolve_method`
turns a config name into the built-in of METHODS or, from its entry, a user function
`fn(model, inputs, targets, **params)` (plus `seeds=` when it has that parameter) or a Captum
class by name, called per chunk of `batch_size` images; their output is checked (shape, real
floating dtype, finite) and a failure names the method (UserMethodError). Precomputed
attributions are not computed: `precomputed_attributions` checks them in full and the stage
copies them into the saliency store.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import zarr
from captum import attr as captum_attr
from captum.attr import (
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Saliency,
)
from scipy import ndimage
from torch import nn

from .checks import expect_inputs
from .data import read_attributes
from .methodnames import method_base, parse_method
from .models import load_checkpoint
from .modifiers import GOLDEN, noise_tunnel, splitmix64, with_modifiers
from .plugins import PluginError, content_sha256, load_callable, source_sha256
from .runtime import device, log, package_version
from .store import (
    SPLITS,
    create_empty,
    new_store,
    open_store,
    read_block,
    sample_blocks,
    stored_array,
)

# Images attributed per block read from the dataset store: bounds memory for large datasets.
BLOCK_IMAGES = 8192
TARGETS = ("logit", "loss", "predicted")
BASELINES = ("zero", "mean")
# What `batch_size` and `internal_batch_size` "auto" mean on each device type (images per call,
# model inputs per forward pass). Results do not depend on them, only speed. On a CPU, passes of
# 32 inputs, what one image's 32 integration steps make: a 28x28 cnn's activations (about 0.65 MB
# per input) then stay near the caches; passes of 256 inputs made integrated gradients and
# SmoothGrad slower than image by image (0.6-0.8x, python -m bench --only attribution, one
# thread), and 64 images per call amortise the per-call cost of an mlp. On a GPU, passes large
# enough to fill the device.
AUTO_BATCH_SIZES = {
    "cpu": {"batch_size": 64, "internal_batch_size": 32},
    "cuda": {"batch_size": 512, "internal_batch_size": 4096},
}


@dataclass(frozen=True)
class Settings:
    """How the attribution methods run; each method reads only the fields it needs."""

    batch_size: int = AUTO_BATCH_SIZES["cpu"]["batch_size"]  # images per call of the explainer
    # most model inputs in one forward pass (integration steps, noisy samples)
    internal_batch_size: int = AUTO_BATCH_SIZES["cpu"]["internal_batch_size"]
    # "logit": the logit of the class in `labels`; "loss": its per-sample cross-entropy;
    # "predicted": a logit target whose `labels` are the model's predictions (explained_classes)
    target: str = "logit"
    baseline: str = "zero"  # integrated_gradients, deeplift: "zero" or "mean" (channel mean)
    steps: int = 32  # integrated_gradients: integration steps
    noise_std: float = 0.15  # smoothgrad, smoothgrad_sq, vargrad: noise std in [0, 1] pixels
    noise_samples: int = 16  # smoothgrad, smoothgrad_sq, vargrad: noisy samples per image
    layer: str | None = None  # gradcam: name of a layer inside model.network
    channel_mean: tuple[float, ...] = ()  # per-channel training mean ([0, 1]), baseline "mean"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"saliency target {self.target!r} is not one of {TARGETS}")
        if self.baseline not in BASELINES:
            raise ValueError(f"saliency baseline {self.baseline!r} is not one of {BASELINES}")
        for name in ("batch_size", "internal_batch_size", "steps", "noise_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"saliency {name} must be at least 1, got {getattr(self, name)}")
        if not self.noise_std >= 0:
            raise ValueError(f"saliency noise_std must be >= 0, got {self.noise_std}")
        object.__setattr__(self, "channel_mean", tuple(float(v) for v in self.channel_mean))


class Method(Protocol):
    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        settings: Settings,
        *,
        seeds: np.ndarray,
    ) -> torch.Tensor: ...


class CrossEntropy(nn.Module):
    """forward(x, labels): the per-sample cross-entropy of `model(x)` with the true `labels`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x), labels, reduction="none")


def _explained(model: nn.Module, settings: Settings) -> nn.Module:
    """The module whose (per-sample scalar) output Captum explains."""
    return CrossEntropy(model) if settings.target == "loss" else model


def predicted_classes(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The class (N,) int64 that `model`, in eval mode, predicts for each image (N, C, H, W) (the
    argmax of its logits), computed in batches of `batch_size` on the images' device."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        classes = [
            model(images[start : start + batch_size]).argmax(1)
            for start in range(0, len(images), batch_size)
        ]
    model.train(was_training)
    if not classes:
        return torch.zeros(0, dtype=torch.int64, device=images.device)
    return torch.cat(classes)


def explained_classes(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: Settings
) -> torch.Tensor:
    """The classes (N,) int64 whose logit or loss the methods explain: the true `labels` for
    targets `logit` and `loss`, the model's predictions on `images` (the unmasked images) for
    target `predicted`, so that no label enters its attributions."""
    if settings.target == "predicted":
        return predicted_classes(model, images, settings.batch_size)
    return labels


def _targets(labels: torch.Tensor, settings: Settings) -> dict[str, Any]:
    """Captum's keyword arguments that pick the explained output of each image of a batch."""
    if settings.target != "loss":  # logit and predicted: the logit of the class in `labels`
        return {"target": labels}
    return {"target": None, "additional_forward_args": (labels,)}


def _in_chunks(
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    attribute: Callable[..., torch.Tensor],
    chunk: int | None = None,
) -> torch.Tensor:
    """attribute(batch, target=..., additional_forward_args=...) per chunk of images (default
    `settings.batch_size`), gathered on the CPU as float32."""
    chunk = settings.batch_size if chunk is None else chunk
    # gathered by numpy, on one thread: torch's copies of this size wait for its thread pool,
    # which costs milliseconds per copy on a loaded machine (measured: more than the Sobel filter)
    gathered = np.zeros(images.shape, dtype=np.float32)
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk].detach()
        targets = _targets(labels[start : start + chunk], settings)
        gathered[start : start + chunk] = attribute(batch, **targets).detach().cpu().numpy()
    return torch.from_numpy(gathered)


def _baselines(batch: torch.Tensor, settings: Settings) -> torch.Tensor:
    """The reference image per `settings.baseline`, one per image of `batch`."""
    if settings.baseline == "zero":
        return torch.zeros_like(batch)
    if len(settings.channel_mean) != batch.shape[1]:
        raise ValueError(
            f"baseline 'mean' needs settings.channel_mean with one value per channel "
            f"({batch.shape[1]}), got {settings.channel_mean}"
        )
    mean = torch.tensor(settings.channel_mean, dtype=batch.dtype, device=batch.device)
    return torch.zeros_like(batch) + mean.view(1, -1, 1, 1)


def _check_seeds(images: torch.Tensor, seeds: np.ndarray) -> None:
    if len(seeds) != len(images):
        raise ValueError(f"got {len(seeds)} seeds for {len(images)} images: one per image")


def gradient(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """The gradient of the target with respect to the input (Captum's Saliency, signed)."""
    explainer = Saliency(_explained(model, settings))
    return _in_chunks(
        images, labels, settings, lambda batch, **kw: explainer.attribute(batch, abs=False, **kw)
    )


def gradient_x_input(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """Input times gradient (Captum's InputXGradient)."""
    explainer = InputXGradient(_explained(model, settings))
    return _in_chunks(images, labels, settings, explainer.attribute)


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """Captum's IntegratedGradients from `settings.baseline` in `settings.steps` steps; chunks of
    at most `internal_batch_size` images so that no forward pass exceeds that many inputs."""
    explainer = IntegratedGradients(_explained(model, settings))

    def attribute(batch: torch.Tensor, **targets: Any) -> torch.Tensor:
        return explainer.attribute(
            batch,
            baselines=_baselines(batch, settings),
            n_steps=settings.steps,
            internal_batch_size=settings.internal_batch_size,
            **targets,
        )

    chunk = min(settings.batch_size, settings.internal_batch_size)
    return _in_chunks(images, labels, settings, attribute, chunk)


def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """SmoothGrad: the mean gradient over `noise_samples` noisy copies of each image."""
    return noise_tunnel(gradient, "smoothgrad")(model, images, labels, settings, seeds=seeds)


def smoothgrad_sq(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """SmoothGrad-squared: the mean squared gradient over noisy copies of each image."""
    return noise_tunnel(gradient, "smoothgrad_sq")(model, images, labels, settings, seeds=seeds)


def vargrad(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """VarGrad: the variance of the gradient over noisy copies of each image."""
    return noise_tunnel(gradient, "vargrad")(model, images, labels, settings, seeds=seeds)


def _refuse_loss(method: str, settings: Settings) -> None:
    """Raise ValueError when `method`, which keeps only positive evidence (a ReLU on its
    attributions or on the gradients it passes back), is asked to explain the loss."""
    if settings.target == "loss":
        raise ValueError(
            f"{method} supports only targets 'logit' and 'predicted', not 'loss': it keeps "
            "positive evidence (ReLU), which for the loss is what raises it"
        )


def guided_backprop(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """Captum's GuidedBackprop: only positive gradients pass back through the ReLU modules.
    Target `loss` is refused (_refuse_loss)."""
    _refuse_loss("guided_backprop", settings)
    explainer = GuidedBackprop(_explained(model, settings))
    return _in_chunks(images, labels, settings, explainer.attribute)


def _conv_children(network: nn.Module) -> list[str]:
    """The layers of `network` (its direct children) that are or contain a convolution."""
    return [
        name
        for name, child in network.named_children()
        if any(isinstance(module, nn.Conv2d) for module in child.modules())
    ]


def _gradcam_layer(model: nn.Module, name: str | None) -> nn.Module:
    network = getattr(model, "network", None)
    if not isinstance(network, nn.Module):
        raise ValueError("gradcam needs a model from diffroar.models.build_model (`network`)")
    layer = None
    if name:
        try:
            layer = network.get_submodule(name)
        except AttributeError:
            layer = None
    if layer is None:
        choices = _conv_children(network)
        known = (
            f"its convolutional layers are {', '.join(choices)}"
            if choices
            else "it has no convolutional layers"
        )
        raise ValueError(f"gradcam layer {name!r} is not a layer of the model's network: {known}")
    return layer


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """Grad-CAM of the layer `settings.layer` of `model.network` (Captum's LayerGradCam with
    relu_attributions), upsampled bilinearly to (H, W) and repeated over the C channels. Target
    `loss` is refused (_refuse_loss)."""
    _refuse_loss("gradcam", settings)
    layer = _gradcam_layer(model, settings.layer)
    explainer = LayerGradCam(_explained(model, settings), layer)
    channels, height, width = images.shape[1:]

    def attribute(batch: torch.Tensor, **targets: Any) -> torch.Tensor:
        cam = explainer.attribute(batch, relu_attributions=True, **targets)
        if cam.dim() != 4:
            raise ValueError(
                f"gradcam layer {settings.layer!r} outputs no feature map (N, K, h, w): "
                f"choose one of {', '.join(_conv_children(model.network)) or 'none'}"
            )
        upsampled = LayerAttribution.interpolate(cam, (height, width), interpolate_mode="bilinear")
        return upsampled.repeat(1, channels, 1, 1)

    return _in_chunks(images, labels, settings, attribute)


def deeplift(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """Captum's DeepLift (rescale rule) from `settings.baseline`.

    Target `loss` is refused: Captum applies DeepLift's rules only to nonlinearity modules it
    knows (ReLU, Tanh, Sigmoid, Softmax, max pooling, ...), so the cross-entropy on top of the
    logits would be linearised at the input and the attributions would not sum to
    loss(x) - loss(baseline), DeepLift's defining property.
    """
    if settings.target == "loss":
        raise ValueError(
            "deeplift supports only targets 'logit' and 'predicted', not 'loss': Captum's "
            "DeepLift cannot propagate through the cross-entropy (not a nonlinearity module it "
            "knows)"
        )
    explainer = DeepLift(model)
    return _in_chunks(
        images,
        labels,
        settings,
        lambda batch, **kw: explainer.attribute(batch, baselines=_baselines(batch, settings), **kw),
    )


def random(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """The control: uniform random scores in [0, 1), those of image i drawn (on the CPU) from
    `seeds[i]` alone; independent of the model and of the image's values."""
    _check_seeds(images, seeds)
    generator, scores = torch.Generator(), torch.empty(images.shape, dtype=torch.float32)
    for row, seed in zip(scores, seeds, strict=True):
        torch.rand(row.shape, generator=generator.manual_seed(int(seed)), out=row)
    return scores


def _sobel(planes: np.ndarray, axis: int) -> np.ndarray:
    """scipy.ndimage.sobel of every 2-D plane of `planes` (P, H, W) at once: the same two
    correlations, along the spatial axes only (ndimage.sobel on the stack would also smooth
    across planes)."""
    derivative = ndimage.correlate1d(planes, [-1, 0, 1], axis=axis, mode="reflect")
    return ndimage.correlate1d(derivative, [1, 2, 1], axis=3 - axis, mode="reflect")


def sobel(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """The control: the edge magnitude sqrt(sobel_x^2 + sobel_y^2) of each channel of each image
    (scipy.ndimage's Sobel filter, reflected borders); the model is not used."""

    def attribute(batch: torch.Tensor, **targets: Any) -> torch.Tensor:
        planes = batch.cpu().numpy().astype(np.float64).reshape(-1, *batch.shape[2:])
        magnitude = np.hypot(_sobel(planes, axis=1), _sobel(planes, axis=2))
        return torch.from_numpy(magnitude.reshape(batch.shape).astype(np.float32))

    return _in_chunks(images, labels, settings, attribute)


METHODS: dict[str, Method] = {
    "gradient": gradient,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "smoothgrad_sq": smoothgrad_sq,
    "vargrad": vargrad,
    "guided_backprop": guided_backprop,
    "gradcam": gradcam,
    "deeplift": deeplift,
    "random": random,
    "sobel": sobel,
}


# --- user methods: the `methods` section of the config, resolved in the job -------------------


class UserMethodError(ValueError):
    """A user method that cannot run or gave unusable attributions; the message names it."""


def resolve_method(name: str, user: dict[str, Any] | None = None) -> Method:
    """The method that the config name `name` stands for: the built-in METHODS[base], or, with
    `user` (the base's entry as diffroar.config.user_method_settings passes it), a user function
    (`function`) or a Captum class by name (`captum`), behind the same signature; wrapped in the
    name's modifiers (`integrated_gradients+blur1`, diffroar.methodnames) by diffroar.modifiers.
    Precomputed attributions (`attributions`) are read, not computed: see
    `precomputed_attributions`."""
    base, modifiers = parse_method(name)
    if user is None:
        if base not in METHODS:
            raise ValueError(f"no attribution method {base!r}; built-in: {', '.join(METHODS)}")
        return with_modifiers(METHODS[base], modifiers)
    if "function" in user:
        function = _user_callable(base, user["function"], user.get("source_sha256"))
        params = user.get("params", {})
        method = functools.partial(_user_function, base, user["function"], function, params)
    elif "captum" in user:
        explainer = _captum_class(base, user["captum"])
        method = functools.partial(
            _captum_method, base, explainer, user.get("init", {}), user.get("params", {})
        )
    else:
        raise ValueError(f"method {name!r}: {user!r} is not a function or captum method")
    return with_modifiers(method, modifiers)


def _user_callable(name: str, spec: str, expected_sha256: str | None) -> Callable[..., Any]:
    """The callable of `spec` ('module:callable'), imported from the working directory and
    PYTHONPATH (diffroar.plugins.load_callable); UserMethodError naming the method when it
    cannot be imported, is missing or is not callable, or when its module is not the file the
    workflow fingerprinted."""
    where = f"user method {name!r} (function {spec!r})"
    try:
        if expected_sha256 is not None and source_sha256(spec) != expected_sha256:
            raise UserMethodError(
                f"{where}: its module changed after the workflow hashed it; run again"
            )
        function, _ = load_callable(spec)
    except PluginError as error:
        raise UserMethodError(f"{where}: {error}") from error
    return function


def _checked(name: str, values: Any, batch: torch.Tensor) -> np.ndarray:
    """A user method's attributions of `batch` as float32 (N, C, H, W) on the CPU; a
    UserMethodError naming the method unless they are a torch tensor or numpy array of real
    floating dtype, of the batch's shape, and finite."""
    where = f"user method {name!r}"
    if isinstance(values, torch.Tensor):
        if values.is_complex() or not values.is_floating_point():
            raise UserMethodError(f"{where} returned dtype {values.dtype}: must be real floating")
        values = values.detach().to("cpu", torch.float32).numpy()
    elif isinstance(values, np.ndarray):
        if values.dtype.kind != "f":
            raise UserMethodError(f"{where} returned dtype {values.dtype}: must be real floating")
        with np.errstate(over="ignore"):  # beyond float32: infinite, refused below
            values = values.astype(np.float32)
    else:
        raise UserMethodError(
            f"{where} returned a {type(values).__name__}: must be a torch tensor or numpy array"
        )
    if values.shape != tuple(batch.shape):
        raise UserMethodError(
            f"{where} returned shape {values.shape} for inputs of shape {tuple(batch.shape)}: "
            "must be the inputs' shape (N, C, H, W)"
        )
    if not np.isfinite(values).all():
        raise UserMethodError(f"{where} returned NaN or infinite attributions (as float32)")
    return values


def _takes_seeds(function: Callable[..., Any]) -> bool:
    try:
        return "seeds" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature (a builtin): nothing to pass seeds to
        return False


def _user_function(
    name: str,
    spec: str,
    function: Callable[..., Any],
    params: dict[str, Any],
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """function(model, inputs, targets, **params) per chunk of `settings.batch_size` images,
    plus seeds=(the chunk's image seeds, uint64 (n,)) when the function has a `seeds`
    parameter; the model is put back in eval mode after each call."""
    _check_seeds(images, seeds)
    takes_seeds = _takes_seeds(function)

    def call(rows: slice, batch: torch.Tensor) -> Any:
        keywords = dict(params) | ({"seeds": seeds[rows]} if takes_seeds else {})
        try:
            return function(model, batch, labels[rows], **keywords)
        finally:
            model.eval()

    return _user_chunks(name, f"user method {name!r} ({spec})", images, settings, call)


def _user_chunks(
    name: str,
    where: str,
    images: torch.Tensor,
    settings: Settings,
    call: Callable[[slice, torch.Tensor], Any],
) -> torch.Tensor:
    """call(rows, the images of rows) per chunk of `settings.batch_size` images, each output
    checked (`_checked`), gathered on the CPU as float32 (N, C, H, W); what the call raises
    becomes a UserMethodError "`where` raised ..."."""
    gathered = np.zeros(images.shape, dtype=np.float32)  # by numpy: see _in_chunks
    for start in range(0, len(images), settings.batch_size):
        rows = slice(start, start + settings.batch_size)
        batch = images[rows].detach()
        try:
            values = call(rows, batch)
        except Exception as error:  # noqa: BLE001 - the user's code can raise anything
            raise UserMethodError(f"{where} raised {type(error).__name__}: {error}") from error
        gathered[rows] = _checked(name, values, batch)
    return torch.from_numpy(gathered)


def _captum_class(name: str, class_name: str) -> type:
    """The class `class_name` of captum.attr; UserMethodError naming the method unless it is an
    attribution method."""
    found = getattr(captum_attr, class_name, None)
    if not (isinstance(found, type) and issubclass(found, captum_attr.Attribution)):
        raise UserMethodError(
            f"user method {name!r}: captum {class_name!r} is not an attribution class of "
            "captum.attr"
        )
    return found


def _tuples(value: Any) -> Any:
    """`value` with every list turned into a tuple, recursively: Captum wants tuples where a
    config (YAML, JSON) has lists (Occlusion's sliding_window_shapes, strides)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    return value


@contextlib.contextmanager
def _seeded(seed: int, on: torch.device) -> Iterator[None]:
    """torch's and numpy's global generators seeded from `seed` inside the block (where Captum's
    stochastic methods draw) and restored after it."""
    state = np.random.get_state()
    devices = [on.index or 0] if on.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        np.random.seed(int(seed) % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


def _captum_method(
    name: str,
    explainer_class: type,
    init: dict[str, Any],
    params: dict[str, Any],
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    *,
    seeds: np.ndarray,
) -> torch.Tensor:
    """explainer_class(model explained per `settings.target`, **init).attribute(chunk,
    target=..., **params) per chunk of `settings.batch_size` images; `baselines: zero | mean`
    becomes the built-ins' baseline tensor. Captum's stochastic methods draw from the global
    generators, which are seeded per chunk from the seed of its first image: reproducible, and
    independent of the blocks, but not of `batch_size` (a function method with `seeds` is)."""
    _check_seeds(images, seeds)
    where = f"user method {name!r} (captum {explainer_class.__name__})"
    try:
        explainer = explainer_class(_explained(model, settings), **_tuples(init))
    except Exception as error:  # noqa: BLE001
        raise UserMethodError(
            f"{where}: cannot be constructed with init {init!r}: {type(error).__name__}: {error}"
        ) from error
    params = _tuples(params)
    baseline = params.pop("baselines") if params.get("baselines") in BASELINES else None

    def call(rows: slice, batch: torch.Tensor) -> Any:
        keywords = params | _targets(labels[rows], settings)
        if baseline is not None:
            keywords["baselines"] = _baselines(batch, replace(settings, baseline=baseline))
        with _seeded(seeds[rows.start], batch.device):
            return explainer.attribute(batch, **keywords)

    return _user_chunks(name, where, images, settings, call)


def _open_precomputed(name: str, path: str, split: str) -> Any:
    """The precomputed attributions of `split` at `path` (a zarr array or a read-only memory
    map of the .npy file), unread; UserMethodError naming the method when missing."""
    where = f"user method {name!r} (attributions {path!r})"
    try:
        if not _is_zarr(path):
            return np.load(Path(path) / f"{split}.npy", mmap_mode="r", allow_pickle=False)
        array = zarr.open_group(path, mode="r")[f"{split}/attributions"]
    except Exception as error:  # noqa: BLE001 - OSError, KeyError, ValueError, garbled JSON
        raise UserMethodError(
            f"{where}: no readable {split} attributions: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(array, zarr.Array):
        raise UserMethodError(f"{where}: {split}/attributions is a group, not an array")
    if array.nchunks_initialized < array.nchunks:  # zarr would read missing chunks as zeros
        raise UserMethodError(
            f"{where}: {split}/attributions has {array.nchunks_initialized} of its "
            f"{array.nchunks} chunks (the store is incomplete)"
        )
    return array


def _is_zarr(path: str | Path) -> bool:
    """Whether `path` is a zarr store (v3 or v2), not a directory of .npy files."""
    return (Path(path) / "zarr.json").is_file() or (Path(path) / ".zgroup").is_file()


def precomputed_attributions(
    name: str, user: dict[str, Any], source: zarr.Group, dataset_path: str
) -> dict[str, Any]:
    """Split -> the precomputed attributions of user method `name` (`user`: path `attributions`
    and, when given, the `sha256` of its files), each checked before any is used: the files are
    those the workflow hashed, and each split holds one real floating, finite attribution per
    image of the dataset store's split, of the images' shape (N, C, H, W), in store order.
    UserMethodError naming the method, the file and the problem."""
    path = user["attributions"]
    where = f"user method {name!r} (attributions {path!r})"
    if not Path(path).exists():
        raise UserMethodError(f"{where}: does not exist")
    if "sha256" in user:
        names = None if _is_zarr(path) else [f"{split}.npy" for split in SPLITS]
        try:
            changed = content_sha256(path, names) != user["sha256"]
        except OSError as error:
            raise UserMethodError(f"{where}: cannot be read: {error}") from error
        if changed:
            raise UserMethodError(f"{where}: changed after the workflow hashed it; run again")
    arrays = {}
    for split in SPLITS:
        values = _open_precomputed(name, path, split)
        expected = stored_array(source, split, "images", dataset_path).shape
        if values.ndim != 4 or tuple(values.shape[1:]) != tuple(expected[1:]):
            raise UserMethodError(
                f"{where}: {split} attributions have shape {tuple(values.shape)}: must be "
                f"(N, C, H, W) = {tuple(expected)}, one per image of the dataset's {split} split"
            )
        if values.shape[0] != expected[0]:
            raise UserMethodError(
                f"{where}: {values.shape[0]} {split} attributions for the {expected[0]} {split} "
                "images of the dataset: must be one per image, in the dataset store's order"
            )
        if np.dtype(values.dtype).kind != "f":
            raise UserMethodError(
                f"{where}: {split} attributions have dtype {values.dtype}: must be real floating"
            )
        for start in range(0, values.shape[0], BLOCK_IMAGES):
            rows = slice(start, start + BLOCK_IMAGES)
            try:
                finite = np.isfinite(np.asarray(values[rows], dtype=np.float32)).all()
            except Exception as error:  # noqa: BLE001 - a truncated .npy or chunk
                raise UserMethodError(
                    f"{where}: cannot read {split} attributions {start}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            if not finite:
                raise UserMethodError(
                    f"{where}: {split} attributions {rows.start}:{min(rows.stop, values.shape[0])}"
                    " hold NaN or infinite values (as float32)"
                )
        arrays[split] = values
    return arrays


def image_seeds(
    seed: int,
    base_seed: int,
    split: str,
    indices: np.ndarray | range,
    draw: tuple[int, ...] = (),
) -> np.ndarray:
    """The seeds (uint64, one per index) of the images at `indices` of `split`, for the methods'
    `seeds`: output i + 1 of the SplitMix64 generator (a counter-based one: output i is a function
    of i alone) started from a SeedSequence of (`seed`, `base_seed`, split). An image's seed
    depends on nothing else: not on the block or batch it is attributed in, nor on the model
    beyond its base seed (so `random` masks differ between base seeds and agree between the
    models trained from one base seed). `draw` (integers >= 0) joins the SeedSequence for fresh
    draws of the same images (diffroar.sanity's randomised models); () gives the stage's seeds."""
    words = [seed, base_seed, SPLITS.index(split), *draw]
    (key,) = np.random.SeedSequence(words).generate_state(1, np.uint64)
    counters = np.asarray(indices, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        return splitmix64(key + counters * GOLDEN)


def batch_sizes(settings: dict[str, Any], on: torch.device) -> dict[str, int]:
    """`batch_size` and `internal_batch_size` from `settings` (integers, or "auto" or absent for
    AUTO_BATCH_SIZES of the device type of `on`)."""
    auto = AUTO_BATCH_SIZES["cuda" if on.type == "cuda" else "cpu"]
    resolved = {}
    for key, default in auto.items():
        value = settings.get(key, "auto")
        if value != "auto" and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"saliency {key} must be 'auto' or an integer >= 1, got {value!r}")
        resolved[key] = default if value == "auto" else value
    return resolved


def run_saliency(
    dataset_path: str,
    checkpoint_path: str,
    out_path: str,
    *,
    method: str,
    settings: dict[str, Any],
    expected_fingerprint: str | None = None,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Attribute every image of every split with `method` and write the saliency store.

    `settings` holds `Settings` fields (not `channel_mean`, which comes from the dataset; the
    batch sizes may be "auto" or absent, see `batch_sizes`) and the saliency `seed` (default 0)
    from which, with the checkpoint's base seed, every image gets its own seed (`image_seeds`),
    and, for a user method, `user_method` (diffroar.config.user_method_settings): `method` is
    then resolved by `resolve_method`, or its precomputed attributions are checked in full
    (`precomputed_attributions`) and copied. With `expected_fingerprint`, a checkpoint trained
    under another config is refused.
    """
    expect_inputs(expected, [dataset_path, checkpoint_path])  # identities the rule expects
    seed = int(settings.get("seed", 0))
    model, checkpoint = load_checkpoint(checkpoint_path, expected_fingerprint)
    if method_base(method) == "gradcam":  # a user architecture's layer is first known here
        try:
            _gradcam_layer(model, settings.get("layer"))
        except ValueError as error:
            what = f"model {checkpoint['model']!r} ({checkpoint_path})"
            raise ValueError(f"{what}: {error}") from error
    on = device()
    model = model.to(on)
    dataset = read_attributes(dataset_path)
    fields = {key: value for key, value in settings.items() if key not in ("seed", "user_method")}
    resolved = Settings(
        **(fields | batch_sizes(settings, on)), channel_mean=tuple(dataset["channel_mean"])
    )
    user = settings.get("user_method")
    source = open_store(dataset_path)
    precomputed = None
    if user is not None and "attributions" in user:  # checked in full before any is used
        precomputed = precomputed_attributions(method, user, source, dataset_path)
    else:
        explain = resolve_method(method, user)
    attributes = {
        "dataset": checkpoint["dataset"],
        "model": checkpoint["model"],
        "base_seed": checkpoint["seed"],
        "method": method,
        "seed": seed,
        "target": None if precomputed is not None else resolved.target,
        "settings": dict(settings),
        "input_space": "pixels scaled to [0, 1], before the model's normalisation",
        "values": "signed attributions; rankings use their absolute value per coordinate or, "
        "per pixel, that of their sum over channels",
        "checkpoint_fingerprint": checkpoint["config_fingerprint"],
        "package_version": package_version(),
    }
    pixel_max = np.float32(dataset["pixel_max"])
    with new_store(out_path, attributes) as root:
        for split in SPLITS:
            stored = stored_array(source, split, "images", dataset_path)
            attributions = create_empty(
                root.create_group(split), "attributions", stored.shape, "float32"
            )
            labels = read_block(stored_array(source, split, "labels", dataset_path), dataset_path)
            for block in sample_blocks(stored, BLOCK_IMAGES):
                if precomputed is not None:
                    attributions[block] = np.asarray(precomputed[split][block], dtype=np.float32)
                    continue
                pixels = read_block(stored, dataset_path, block).astype(np.float32) / pixel_max
                images = torch.from_numpy(pixels).to(on)
                true_labels = torch.from_numpy(labels[block]).to(on)
                target = explained_classes(model, images, true_labels, resolved)
                seeds = image_seeds(seed, checkpoint["seed"], split, range(block.start, block.stop))
                values = explain(model, images, target, resolved, seeds=seeds).numpy()
                if not np.isfinite(values).all():
                    raise FloatingPointError(
                        f"{method} attributions of {split} images {block.start}:{block.stop} "
                        f"with {checkpoint_path} are NaN or infinite: not written to {out_path}"
                    )
                attributions[block] = values
            log.info(
                "%s/%s seed %s: %s attributions (target %s) of %d %s images on %s "
                "(batch_size %d, internal_batch_size %d)",
                checkpoint["dataset"],
                checkpoint["model"],
                checkpoint["seed"],
                method,
                "none, precomputed" if precomputed is not None else resolved.target,
                len(labels),
                split,
                on,
                resolved.batch_size,
                resolved.internal_batch_size,
            )
