"""An example user architecture for diffroar.

Name it in a config as `architecture: my_nets:build` (this file in the run's working directory, or
its folder on PYTHONPATH) with its keyword options under `params`:

    models:
      my_cnn:
        architecture: my_nets:build
        params: {channels: 8}
        gradcam_layer: conv2      # needed only when gradcam is among the methods

diffroar calls `build(input_shape, num_classes, **params)` with the dataset's image shape
[C, H, W] and number of classes, and puts its own normalisation (the training split's channel
mean and std) in front of what `build` returns: the network sees normalised images and must
return logits of shape (N, num_classes). Trained like the built-in architectures (standard or
PGD), with the same seeds, so the same config gives the same weights.

For the attribution methods: give every ReLU its own nn.ReLU module, not in place and used once
(Captum's DeepLift and guided backprop hook the modules, not torch.relu calls), and name the
layers that Grad-CAM may weigh (here conv1 and conv2).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def build(input_shape: list[int], num_classes: int, channels: int = 8) -> nn.Sequential:
    """Two 3x3 convolutions (`channels`, then 2 * `channels` maps) with ReLUs, an average pool to
    2x2 and a linear classifier. Input (N, C, H, W) float32 images, output (N, num_classes)."""
    in_channels = input_shape[0]
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, channels, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(channels, 2 * channels, 3, padding=1),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flatten=nn.Flatten(),
            classifier=nn.Linear(2 * channels * 4, num_classes),
        )
    )
