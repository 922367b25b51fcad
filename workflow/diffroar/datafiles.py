"""Which files the file-backed datasets need and where they are looked for.

Light (no numpy, no torch): the config check uses it to stop a run whose data files are missing
before any job starts; diffroar.data reads the files.
"""

from __future__ import annotations

from pathlib import Path

# Loaders that read LeCun's IDX files, and the collection each reads.
IDX_SOURCES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "blockmnist": "mnist",
    "blockmnist_top": "mnist",
    "blockfashion": "fashion_mnist",
}
# (images, labels) file names of the official splits; each may also be gzipped (name + ".gz").
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Where a collection is found when the config gives no `root`.
DEFAULT_ROOTS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
HOW_TO_OBTAIN = {
    "mnist": "download the four files from https://ossci-datasets.s3.amazonaws.com/mnist/ "
    "(the mirror torchvision uses) into that folder",
    "fashion_mnist": "install Debian's package dataset-fashion-mnist (apt-get install "
    "dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist) or download them from "
    "https://github.com/zalandoresearch/fashion-mnist",
}


def find_idx(root: str | Path, name: str) -> Path | None:
    """The IDX file `name` in `root`, plain or gzipped (plain first); None when neither exists."""
    for candidate in (Path(root) / name, Path(root) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_problem(root: str | Path) -> str | None:
    """What is wrong with `root` as a folder of the four IDX files, or None when nothing is."""
    path = Path(root)
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is a file, not a folder"
    missing = [
        name for names in IDX_FILES.values() for name in names if find_idx(path, name) is None
    ]
    return f"lacks {', '.join(missing)}" if missing else None
