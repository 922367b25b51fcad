"""Stage `import_checkpoint`: a base model from weights trained elsewhere
(`models.<name>.checkpoint`), in the `train` stage's place: the same checkpoint and metrics JSON,
so every later stage reads it like a trained one.

The weights file is a safetensors file or a PyTorch state dict (`torch.save`, read with
`weights_only=True`: a file that pickles other Python objects is refused, never run). Its keys are
those of the bare network (the architecture's modules) or of the model as diffroar saves it
(`normalize.mean`, `normalize.std` and `network.*`). The load is strict: every missing or
unexpected key and every wrong shape is an error naming the file and the keys.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from .checks import expect_inputs
from .data import read_attributes
from .models import Normalize, build_model, model_spec
from .plugins import PluginError, weights_format
from .runtime import device, log
from .train import accuracy, load_tensors, model_info, write_base_model

WRAPPED = ("normalize.", "network.")  # key prefixes of the model as diffroar saves it
NORMALIZE_KEYS = ("normalize.mean", "normalize.std")
LISTED = 5  # keys named per kind of mismatch in a message


class CheckpointError(ValueError):
    """Weights that cannot become this model; the message names the model and the file."""


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(name -> tensor, the file's sha256) of a safetensors file or a torch.save state dict.
    A file of neither format, a pickle of other objects, or a state dict with entries that are
    not tensors raise CheckpointError (without the model's name: `run_import` adds it)."""
    kind = weights_format(path)
    data = Path(path).read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if kind is None:
        raise CheckpointError(
            f"{path} is neither a safetensors file nor a PyTorch state dict saved with torch.save"
        )
    if kind == "safetensors":
        try:
            return load_safetensors(data), sha256
        except Exception as error:  # safetensors raises several types for damaged files
            raise CheckpointError(f"{path}: cannot read it as safetensors: {error}") from error
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise CheckpointError(
            f"{path} pickles Python objects other than tensors"
            f"{f' (first: {refused.group(1)})' if refused else ''}, which diffroar does not load "
            "(it reads torch files with weights_only=True, so that a checkpoint cannot run "
            "code); save the state dict instead: torch.save(model.state_dict(), path)"
        ) from error
    except Exception as error:  # a damaged zip or pickle
        raise CheckpointError(
            f"{path}: cannot read it with torch.load: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(loaded, dict):
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a state dict (name -> tensor): save it "
            "with torch.save(model.state_dict(), path)"
        )
    others = {str(k): type(v).__name__ for k, v in loaded.items() if not torch.is_tensor(v)}
    if others or not loaded:
        found = ", ".join(f"{k}: {v}" for k, v in list(others.items())[:LISTED]) or "nothing"
        raise CheckpointError(
            f"{path} holds a dict whose entries are not all tensors ({found}): not a state dict; "
            "save the model's own, torch.save(model.state_dict(), path)"
        )
    return {str(name): tensor for name, tensor in loaded.items()}, sha256


def _listed(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def split_layout(
    tensors: dict[str, torch.Tensor], network_keys: set[str]
) -> tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """('network' or 'wrapped', the network's tensors, the normalisation's) of a weights file:
    'network' when its keys are the bare network's, else 'wrapped' when every key is under
    `normalize.` or `network.` (diffroar's layout), else 'network' (the mismatch is reported
    against the network's keys)."""
    if set(tensors) == network_keys or not all(k.startswith(WRAPPED) for k in tensors):
        return "network", tensors, {}
    network = {
        k.removeprefix("network."): v for k, v in tensors.items() if k.startswith("network.")
    }
    normalize = {k: v for k, v in tensors.items() if k.startswith("normalize.")}
    return "wrapped", network, normalize


def check_fit(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], layout: str
) -> list[str]:
    """What keeps `tensors` from loading strictly into a network whose state dict is `expected`:
    missing keys, unexpected keys, wrong shapes (one line each; empty when they fit)."""
    prefix = "network." if layout == "wrapped" else ""
    problems = []
    missing = set(expected) - set(tensors)
    unexpected = set(tensors) - set(expected)
    if missing:
        problems.append(f"missing keys {_listed(prefix + k for k in missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listed(prefix + k for k in unexpected)}")
    shapes = [
        f"{prefix}{name} {tuple(tensors[name].shape)} (the architecture's: "
        f"{tuple(expected[name].shape)})"
        for name in sorted(set(tensors) & set(expected))
        if tensors[name].shape != expected[name].shape
    ]
    if shapes:
        problems.append(f"wrong shapes {'; '.join(shapes[:LISTED])}")
    return problems


def _normalization(normalize: dict[str, torch.Tensor], channels: int, path) -> dict[str, list]:
    """The channel_mean and channel_std that a wrapped file's `normalize.*` tensors hold (the
    network was trained behind them, so they are kept); {} when the file has none."""
    if not normalize:
        return {}
    unexpected = set(normalize) - set(NORMALIZE_KEYS)
    missing = set(NORMALIZE_KEYS) - set(normalize)
    if unexpected or missing:
        what = f"unexpected keys {_listed(unexpected)}" if unexpected else ""
        what += f"{'; ' if what else ''}missing keys {_listed(missing)}" if missing else ""
        raise CheckpointError(f"{path}: {what} (diffroar's normalize holds mean and std)")
    values = {key: normalize[key].float().flatten() for key in NORMALIZE_KEYS}
    for key, value in values.items():
        if value.numel() != channels:
            raise CheckpointError(
                f"{path}: {key} has {value.numel()} values; the dataset's images have "
                f"{channels} channel(s)"
            )
    if not bool((values["normalize.std"] > 0).all()):
        raise CheckpointError(f"{path}: normalize.std must be > 0")
    return {
        "channel_mean": values["normalize.mean"].tolist(),
        "channel_std": values["normalize.std"].tolist(),
    }


def fit_weights(
    spec: dict[str, Any], tensors: dict[str, torch.Tensor], path: str | Path
) -> tuple[nn.Sequential, dict[str, Any], str]:
    """(the model of `spec` holding `tensors`, its spec, the layout: 'network' or 'wrapped').
    The architecture is built from `spec`; with diffroar's layout, the file's `normalize`
    statistics replace the dataset's in the spec. Keys or shapes that do not fit, or NaN or
    infinite weights, raise CheckpointError naming `path` and the keys."""
    model = build_model(spec)
    expected = model.network.state_dict()
    layout, network, normalize = split_layout(tensors, set(expected))
    problems = check_fit(network, expected, layout)
    if problems:
        shape = "x".join(map(str, spec["input_shape"]))
        raise CheckpointError(
            f"{path} does not fit architecture {spec['architecture']!r} built for "
            f"{shape} images and {spec['num_classes']} classes "
            f"(read as the {'wrapped model' if layout == 'wrapped' else 'bare network'}'s "
            f"weights): {'; '.join(problems)}"
        )
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise CheckpointError(f"{path} has NaN or infinite weights in {_listed(bad)}")
    statistics = _normalization(normalize, spec["input_shape"][0], path)
    if statistics:
        spec = spec | statistics
        model.normalize = Normalize(spec["channel_mean"], spec["channel_std"])
    model.network.load_state_dict(network, strict=True)
    return model.eval(), spec, layout


def check_outputs(model: nn.Module, image: torch.Tensor, num_classes: int, path) -> None:
    """Refuse a model that fails on one image (1, C, H, W) of the dataset or does not give one
    logit per class of the dataset (CheckpointError)."""
    shape = "x".join(map(str, image.shape[1:]))
    try:
        with torch.no_grad():
            logits = model(image)
    except Exception as error:
        raise CheckpointError(
            f"{path}: the model fails on one {shape} image of the dataset: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not torch.is_tensor(logits) or tuple(logits.shape) != (1, num_classes):
        found = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise CheckpointError(
            f"{path}: the model gives {found} for one {shape} image; the dataset has "
            f"{num_classes} classes, so it must give (1, {num_classes})"
        )


def run_import(
    dataset_path: str,
    weights_path: str,
    checkpoint_path: str,
    metrics_path: str,
    *,
    dataset: str,
    model_name: str,
    model_cfg: dict[str, Any],
    seed: int,
    config_fingerprint: str,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Turn the weights file `weights_path` into base model `model_name`'s checkpoint and metrics
    JSON (`source: imported`, the file and its sha256, the key layout, the test accuracy on the
    dataset's test split). With `expected` (input path -> identity), a dataset store that records
    another dataset or dataset config is refused. Every refusal names the model and the file."""
    expect_inputs(expected, [dataset_path])
    started = time.perf_counter()
    try:
        tensors, sha256 = read_weights(weights_path)
        if model_cfg.get("checkpoint_sha256", sha256) != sha256:
            raise CheckpointError(
                f"{weights_path} changed after the workflow computed its fingerprint; run the "
                "workflow again"
            )
        attributes = read_attributes(dataset_path)
        torch.manual_seed(seed)  # the architecture's initial weights, all replaced below
        model, spec, layout = fit_weights(model_spec(model_cfg, attributes), tensors, weights_path)
        on = device()
        model = model.to(on)
        images, labels = load_tensors(dataset_path, "test", on)
        check_outputs(model, images[:1], spec["num_classes"], weights_path)
    except (CheckpointError, PluginError) as error:
        raise CheckpointError(f"model {model_name!r}: {error}") from error
    test_accuracy = accuracy(model, images, labels)
    log.info(
        "imported %s (%s layout, sha256 %s) as %s: test accuracy %.4f",
        weights_path,
        layout,
        sha256,
        model_name,
        test_accuracy,
    )
    info = model_info(
        dataset,
        model_name,
        seed,
        config_fingerprint,
        source="imported",
        imported_file=str(weights_path),
        imported_sha256=sha256,
        imported_layout=layout,
    )
    results = {"config": {"model": model_cfg}, "test_accuracy": test_accuracy}
    write_base_model(checkpoint_path, metrics_path, model, spec, info, model_cfg, results, started)
