"""Model architectures and safetensors checkpoints.

Every model takes images scaled to [0, 1] (N, C, H, W) and normalises them itself with the
training split's per-channel mean and std, so attributions and attacks live in pixel space.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .architectures import ARCHITECTURE_OPTIONS, is_user_architecture
from .checks import METADATA_CHECKSUM
from .checks import checkpoint_metadata_digest as metadata_digest
from .plugins import PluginError, file_sha256, find_module_file, load_callable, source_sha256
from .runtime import atomic_output


class Normalize(nn.Module):
    """(x - mean) / std per channel; the statistics are buffers, saved with the weights."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def mlp(input_shape: list[int], num_classes: int, hidden_sizes: list[int]) -> nn.Sequential:
    """Flatten, then Linear + ReLU per hidden width, then a Linear classifier."""
    widths = [int(torch.tensor(input_shape).prod()), *hidden_sizes]
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


def cnn(
    input_shape: list[int], num_classes: int, channels: list[int], hidden_sizes: list[int]
) -> nn.Sequential:
    """3x3 convolutions `conv1`, `conv2`, ... (padding 1, each followed by a ReLU), one 2x2 max
    pool, then a fully connected head like the mlp's."""
    in_channels, height, width = input_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, out_channels in enumerate(channels, start=1):
        layers[f"conv{index}"] = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        layers[f"relu{index}"] = nn.ReLU()
        in_channels = out_channels
    layers["pool"] = nn.MaxPool2d(2)
    layers["flatten"] = nn.Flatten()
    features = in_channels * (height // 2) * (width // 2)
    for index, hidden in enumerate(hidden_sizes, start=1):
        layers[f"fc{index}"] = nn.Linear(features, hidden)
        layers[f"fc_relu{index}"] = nn.ReLU()
        features = hidden
    layers["classifier"] = nn.Linear(features, num_classes)
    return nn.Sequential(layers)


@cache
def _resnet_parts() -> tuple[Any, type[nn.Module]]:
    """torchvision's resnet module and our basic block. Imported on first use: importing
    torchvision takes over a second, which every training job would pay."""
    from torchvision.models import resnet

    class BasicBlock(resnet.BasicBlock):
        """torchvision's ResNet basic block with its two ReLUs as separate modules that do not
        work in place: Captum's DeepLift and guided backprop hook every ReLU module once per
        forward."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.relu = nn.ReLU()
            self.relu_out = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu_out(out + identity)

    return resnet, BasicBlock


def resnet18(input_shape: list[int], num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with a stem for small images: a 3x3 stride-1 first convolution
    taking the dataset's channels and no max pool (as usual for CIFAR-sized inputs)."""
    resnet, basic_block = _resnet_parts()
    network = resnet.ResNet(basic_block, [2, 2, 2, 2], num_classes=num_classes)
    network.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    network.relu = nn.ReLU()
    network.maxpool = nn.Identity()
    return network


# Every architecture is a builder `build(input_shape, num_classes, **options) -> nn.Module`
# (input_shape [C, H, W]); the options of a built-in are its ARCHITECTURE_OPTIONS, a user builder's
# (`module:callable`, found by `architecture_builder`) its `params`.
ARCHITECTURES = {"mlp": mlp, "cnn": cnn, "resnet18": resnet18}


def architecture_builder(architecture: str) -> Callable[..., nn.Module]:
    """The builder of `architecture`: a built-in of ARCHITECTURES, or the user's `module:callable`
    imported in this job (diffroar.plugins.load_callable), wrapped so that what it builds is
    checked (`_checked_build`). Every failure of a user builder is a PluginError naming it and
    its module's file."""
    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]
    function, path = load_callable(architecture)
    return partial(_checked_build, architecture, function, path)


def _checked_build(
    architecture: str,
    function: Callable[..., Any],
    path: Path,
    input_shape: list[int],
    num_classes: int,
    **params: Any,
) -> nn.Module:
    """`function(input_shape, num_classes, **params)`, checked: it builds without raising, returns
    an nn.Module, and that maps one zero image (1, *input_shape) to (1, num_classes) logits."""
    call = (
        f"{architecture}({list(input_shape)}, {num_classes}"
        f"{''.join(f', {key}={value!r}' for key, value in params.items())})"
    )
    try:
        network = function(list(input_shape), int(num_classes), **params)
    except Exception as error:
        raise PluginError(f"{call} ({path}) raised {type(error).__name__}: {error}") from error
    if not isinstance(network, nn.Module):
        raise PluginError(
            f"{call} ({path}) returned a {type(network).__name__}, not a torch.nn.Module"
        )
    was_training = network.training
    network.eval()  # one image: batch norm in training mode refuses a batch of one
    try:
        with torch.no_grad():
            logits = network(torch.zeros(1, *input_shape))
    except Exception as error:
        raise PluginError(
            f"the network of {call} ({path}) fails on one {'x'.join(map(str, input_shape))} "
            f"image: {type(error).__name__}: {error}"
        ) from error
    finally:
        network.train(was_training)
    expected = (1, int(num_classes))
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise PluginError(
            f"the network of {call} ({path}) gives {shape} for one image; it must give "
            f"{expected}: one logit per class of the dataset ({num_classes})"
        )
    return network


def architecture_options(spec: dict[str, Any]) -> dict[str, Any]:
    """The keyword options a model's builder takes, from its spec (or model config)."""
    if is_user_architecture(spec["architecture"]):
        return dict(spec.get("params", {}))
    return {option: spec[option] for option in ARCHITECTURE_OPTIONS[spec["architecture"]]}


def model_spec(model_cfg: dict[str, Any], dataset_attributes: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to rebuild a model: its architecture and options plus the dataset's
    shape, classes and normalisation. Stored in every checkpoint. A user architecture's options
    are its `params`, and `source_sha256` records its module's source (diffroar.plugins): a
    model config that carries another hash (the module was edited after the workflow started)
    is refused with a PluginError."""
    architecture = model_cfg["architecture"]
    options = architecture_options(model_cfg)
    if is_user_architecture(architecture):
        found = source_sha256(architecture)
        if model_cfg.get("source_sha256", found) != found:
            module = architecture.split(":")[0]
            raise PluginError(
                f"architecture {architecture!r}: {find_module_file(module)} changed after the "
                "workflow computed its fingerprint; run the workflow again"
            )
        options = {"params": options, "source_sha256": found}
    return {
        "architecture": architecture,
        **options,
        "input_shape": list(dataset_attributes["shape"]),
        "num_classes": int(dataset_attributes["num_classes"]),
        "channel_mean": list(dataset_attributes["channel_mean"]),
        "channel_std": [max(s, 1e-6) for s in dataset_attributes["channel_std"]],
    }


def _check_source(spec: dict[str, Any]) -> None:
    """Refuse to rebuild a user architecture whose module (as imported in this job) is not the
    source `spec` records (PluginError): the weights would meet other code."""
    module = spec["architecture"].split(":")[0]
    path = Path(sys.modules[module].__file__)
    if file_sha256(path) != spec["source_sha256"]:
        raise PluginError(
            f"architecture {spec['architecture']!r}: {path} is not the source the model was "
            "built from (its sha256 differs from the source_sha256 recorded with the model): it "
            "was edited since; rerun the rule that wrote the model"
        )


def build_model(spec: dict[str, Any]) -> nn.Sequential:
    """A freshly initialised model (uses torch's global RNG: seed it first): `normalize`, then
    `network`, the architecture (Grad-CAM layers are named inside it). Inputs are images in
    [0, 1] (N, C, H, W), float32; outputs logits (N, num_classes)."""
    builder = architecture_builder(spec["architecture"])
    if is_user_architecture(spec["architecture"]):
        _check_source(spec)
    network = builder(spec["input_shape"], spec["num_classes"], **architecture_options(spec))
    normalize = Normalize(spec["channel_mean"], spec["channel_std"])
    return nn.Sequential(OrderedDict(normalize=normalize, network=network))


CHECKSUM = "tensor_sha256"  # metadata key: sha256 of the tensors, checked when loading


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of `tensors` (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def save_checkpoint(
    path: str | Path, model: nn.Module, spec: dict[str, Any], info: dict[str, Any]
) -> None:
    """Weights as safetensors, written atomically and byte-for-byte deterministically
    (`canonical_safetensors`); `spec` and `info` as JSON strings (sorted keys) in its metadata,
    with the sha256 of the tensors. Weights that are not finite (a training run that
    diverged) are refused with a FloatingPointError: no checkpoint is written."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    bad = _non_finite(tensors)
    if bad:
        raise FloatingPointError(
            f"refusing to write checkpoint {path}: NaN or infinite weights in {', '.join(bad)} "
            "(training diverged)"
        )
    metadata = {"spec": json.dumps(spec, sort_keys=True)} | {
        key: json.dumps(value, sort_keys=True) for key, value in info.items()
    }
    metadata[CHECKSUM] = json.dumps(tensor_digest(tensors))
    metadata[METADATA_CHECKSUM] = json.dumps(metadata_digest(metadata))
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
        temporary.write_bytes(canonical_safetensors(temporary.read_bytes()))


def canonical_safetensors(data: bytes) -> bytes:
    """The safetensors file `data` with its JSON header written with sorted keys and no spaces
    (padded with spaces to a multiple of 8 bytes, as the format asks), the tensor bytes
    unchanged. safetensors writes its metadata in hash-map order, which differs between
    processes; in this form equal tensors and metadata give equal files, so a file hash proves
    that two checkpoints are the same."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def load_checkpoint(
    path: str | Path, expected_fingerprint: str | None = None
) -> tuple[nn.Sequential, dict[str, Any]]:
    """The model (eval mode, on the CPU) and its metadata, JSON-decoded.

    Only safetensors are read (never a pickle). A missing, truncated or corrupted file (its
    tensors or its metadata do not match their recorded sha256), non-finite weights, or, with
    `expected_fingerprint`, a checkpoint trained under another config, fail with a ValueError
    that names the file and what to do."""
    redo = "delete it and rerun the train rule that writes it"
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
        metadata = {key: json.loads(value) for key, value in raw.items()}
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises several types for damaged files
        raise ValueError(
            f"cannot read checkpoint {path}: {error} (missing, truncated or not a safetensors "
            f"file); {redo}"
        ) from error
    missing = [key for key in ("spec", CHECKSUM) if key not in metadata]
    if missing:
        raise ValueError(
            f"checkpoint {path} has no {' or '.join(missing)} in its metadata: not written by "
            f"diffroar's save_checkpoint; {redo}"
        )
    if METADATA_CHECKSUM in metadata and metadata_digest(raw) != metadata[METADATA_CHECKSUM]:
        raise ValueError(
            f"checkpoint {path}: its metadata (spec, dataset, model, seeds, fingerprints) do not "
            f"match the {METADATA_CHECKSUM} recorded when it was written (edited or damaged "
            f"since); {redo}"
        )
    if tensor_digest(tensors) != metadata[CHECKSUM]:
        raise ValueError(
            f"checkpoint {path} is corrupted: its tensors do not match the sha256 recorded when "
            f"it was written; {redo}"
        )
    bad = _non_finite(tensors)
    if bad:
        raise ValueError(f"checkpoint {path} has NaN or infinite weights in {', '.join(bad)}")
    found = metadata.get("config_fingerprint")
    if expected_fingerprint is not None and found != expected_fingerprint:
        raise ValueError(
            f"checkpoint {path} was trained under config fingerprint {found}, but this job's "
            f"config gives {expected_fingerprint}: the checkpoint is stale or comes from another "
            "experiment. Rerun its train rule (snakemake --forcerun train, or delete the "
            "checkpoint and run again)"
        )
    try:
        model = build_model(metadata["spec"])
    except PluginError as error:  # a user architecture that no longer imports or builds
        raise PluginError(f"checkpoint {path}: {error}") from error
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not fit its own spec: {error}; {redo}") from error
    return model.eval(), metadata
