"""Model architectures and safetensors checkpoints.

Every model takes images scaled to [0, 1] (N, C, H, W) and normalises them itself with the
training split's per-channel mean and std, so attributions and attacks live in pixel space.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel; the statistics are buffers, saved with the weights."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def mlp(input_shape: list[int], num_classes: int, hidden_sizes: list[int]) -> nn.Sequential:
    widths = [int(torch.tensor(input_shape).prod()), *hidden_sizes]
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


ARCHITECTURES = {
    "mlp": lambda spec: mlp(spec["input_shape"], spec["num_classes"], spec["hidden_sizes"]),
}


def model_spec(model_cfg: dict[str, Any], dataset_attributes: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to rebuild a model: its config plus the dataset's shape, classes and
    normalisation. Stored in every checkpoint."""
    return {
        "architecture": model_cfg["architecture"],
        "hidden_sizes": model_cfg.get("hidden_sizes"),
        "input_shape": list(dataset_attributes["shape"]),
        "num_classes": int(dataset_attributes["num_classes"]),
        "channel_mean": list(dataset_attributes["channel_mean"]),
        "channel_std": [max(s, 1e-6) for s in dataset_attributes["channel_std"]],
    }


def build_model(spec: dict[str, Any]) -> nn.Sequential:
    """A freshly initialised model (uses torch's global RNG: seed it first)."""
    network = ARCHITECTURES[spec["architecture"]](spec)
    return nn.Sequential(Normalize(spec["channel_mean"], spec["channel_std"]), network)


def save_checkpoint(
    path: str | Path, model: nn.Module, spec: dict[str, Any], info: dict[str, Any]
) -> None:
    """Weights as safetensors; `spec` and `info` as JSON strings in its metadata."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    metadata = {"spec": json.dumps(spec)} | {key: json.dumps(value) for key, value in info.items()}
    save_file(tensors, str(path), metadata=metadata)


def load_checkpoint(path: str | Path) -> tuple[nn.Sequential, dict[str, Any]]:
    """The model (eval mode, on the CPU) and its metadata, JSON-decoded."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = {key: json.loads(value) for key, value in handle.metadata().items()}
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises several types for damaged files
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    model = build_model(metadata["spec"])
    model.load_state_dict(tensors)
    return model.eval(), metadata
