"""Job start-up: a training job's modules import neither torchvision, Captum nor matplotlib
(together over 2 s of every job's start-up on the 2-core machine; bench/ measures start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torchvision", "captum", "matplotlib")


@pytest.mark.parametrize("module", ["diffroar.train", "diffroar.retrain", "diffroar.mask"])
def test_training_and_masking_jobs_do_not_import_heavy_libraries(module):
    probe = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    for heavy in HEAVY:
        assert f"'{heavy}'" not in loaded, f"{module} imports {heavy}"


def test_a_resnet_still_builds_after_the_lazy_import():
    from diffroar.models import resnet18

    network = resnet18([3, 8, 8], 10)
    assert type(network).__name__ == "ResNet" and network.conv1.in_channels == 3
