"""How `examples/blockdigits-mlp.pt` was made: a model trained outside diffroar, with a plain
PyTorch loop, then saved as a state dict, the way most trained models reach a user. The example
config imports it (`checkpoint: examples/blockdigits-mlp.pt`) instead of training.

Run from the repository root (it rewrites the file; the committed one came from this script):

    python examples/train_elsewhere.py

The data are the `blockdigits` splits of config.yaml, which the example uses (diffroar builds
them; nothing else here uses diffroar). The network is the layout of diffroar's `mlp` with
`hidden_sizes: [64]` (Flatten, Linear, ReLU, Linear: keys 1.* and 3.*), and it sees images
standardised with the training split's channel mean and std, which is what diffroar puts in
front of a network whose file holds only its own weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from diffroar.config import validate_config
from diffroar.data import prepare, read_attributes, read_images
from torch import nn

HERE = Path(__file__).resolve().parent
OUT = HERE / "blockdigits-mlp.pt"


def main() -> None:
    # the example does not change config.yaml's blockdigits
    config = yaml.safe_load((HERE.parent / "config.yaml").read_text())
    dataset = validate_config(config)["datasets"]["blockdigits"]
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "blockdigits.zarr"
        prepare("blockdigits", dataset, store)
        attributes = read_attributes(store)
        (train_x, train_y), (test_x, test_y) = (
            map(torch.from_numpy, read_images(store, split)) for split in ("train", "test")
        )
    mean, std = (
        torch.tensor(attributes[key]).view(1, -1, 1, 1) for key in ("channel_mean", "channel_std")
    )
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Flatten(), nn.Linear(train_x[0].numel(), 64), nn.ReLU(), nn.Linear(64, 2)
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    for _ in range(30):
        for index in torch.randperm(len(train_x)).split(32):
            loss = F.cross_entropy(network((train_x[index] - mean) / std), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (network((test_x - mean) / std).argmax(1) == test_y).float().mean().item()
    torch.save(network.state_dict(), OUT)
    print(f"wrote {OUT} (test accuracy {accuracy:.3f} on {len(test_y)} blockdigits images)")


if __name__ == "__main__":
    main()
