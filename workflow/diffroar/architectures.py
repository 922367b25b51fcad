"""What the config needs to know about each architecture, without importing torch.

diffroar.models builds the architectures; a test checks that the names here match its modules.
Besides the built-in names, an architecture may be a user builder `module:callable`
(diffroar.plugins), whose options are its `params`.
"""

from __future__ import annotations

from typing import Any

from .plugins import is_plugin

# Options of each architecture under models.<name>, with their defaults (diffroar.models).
ARCHITECTURE_OPTIONS = {
    "mlp": {"hidden_sizes": [256, 256]},
    "cnn": {"channels": [32, 64], "hidden_sizes": [128]},
    "resnet18": {},
}


def feature_layers(model_cfg: dict[str, Any]) -> list[str]:
    """Layers of a model's network with a spatial output, where Grad-CAM can look (none for an
    mlp); the last one is the default `gradcam_layer`. Names as in diffroar.models. A user
    architecture's layers are known only by building it: its `gradcam_layer`, if set."""
    if is_user_architecture(model_cfg["architecture"]):
        return [model_cfg["gradcam_layer"]] if "gradcam_layer" in model_cfg else []
    if model_cfg["architecture"] == "cnn":
        return [f"conv{index}" for index in range(1, len(model_cfg["channels"]) + 1)]
    if model_cfg["architecture"] == "resnet18":
        return ["conv1", "layer1", "layer2", "layer3", "layer4"]
    return []


def is_user_architecture(architecture: str) -> bool:
    """Whether `architecture` names a user builder (`module:callable`), not a built-in."""
    return architecture not in ARCHITECTURE_OPTIONS and is_plugin(architecture)
