"""What the config needs to know about each architecture, without importing torch.

diffroar.models builds the architectures; a test checks that the names here match its modules.
"""

from __future__ import annotations

from typing import Any

# Options of each architecture under models.<name>, with their defaults (diffroar.models).
ARCHITECTURE_OPTIONS = {
    "mlp": {"hidden_sizes": [256, 256]},
    "cnn": {"channels": [32, 64], "hidden_sizes": [128]},
    "resnet18": {},
}


def feature_layers(model_cfg: dict[str, Any]) -> list[str]:
    """Layers of a model's network with a spatial output, where Grad-CAM can look (none for an
    mlp); the last one is the default `gradcam_layer`. Names as in diffroar.models."""
    if model_cfg["architecture"] == "cnn":
        return [f"conv{index}" for index in range(1, len(model_cfg["channels"]) + 1)]
    if model_cfg["architecture"] == "resnet18":
        return ["conv1", "layer1", "layer2", "layer3", "layer4"]
    return []
