"""Which files the file-backed datasets need, where they are looked for and how they are obtained.

Light (no numpy, no torch): the Snakefile checks, before any job starts, that the files of every
dataset whose store a run builds are there, downloading them first where the config says
`download: true`; diffroar.data reads them.
"""

from __future__ import annotations

import importlib
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """A collection of image files on disk."""

    name: str
    # the files it needs; an IDX file may also be gzipped (name + ".gz")
    files: tuple[str, ...]
    # what `root` holds: the files themselves, or (also accepted) this sub-folder of `root` holding
    # them, where torchvision's downloader puts them
    download_folder: str | None
    how_to_obtain: str
    # torchvision dataset class and the keyword arguments of each download call (None: no download)
    downloader: tuple[str, tuple[dict, ...]] | None = None
    default_root: str | None = None


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_NAMES = tuple(name for names in IDX_FILES.values() for name in names)
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
# The splits of an image-folder tree: each a folder of class sub-folders.
IMAGEFOLDER_SPLITS = ("train", "val")

SOURCES = {
    "mnist": Source(
        "mnist",
        IDX_NAMES,
        "MNIST/raw",
        "download the four files from https://ossci-datasets.s3.amazonaws.com/mnist/ (the mirror "
        "torchvision uses)",
        ("MNIST", ({"train": True},)),
    ),
    "fashion_mnist": Source(
        "fashion_mnist",
        IDX_NAMES,
        "FashionMNIST/raw",
        "install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist "
        "puts them in /usr/share/datasets/fashion-mnist) or download them from "
        "https://github.com/zalandoresearch/fashion-mnist",
        ("FashionMNIST", ({"train": True},)),
        default_root="/usr/share/datasets/fashion-mnist",
    ),
    "cifar10": Source(
        "cifar10",
        CIFAR10_FILES,
        "cifar-10-batches-py",
        "download cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html and unpack it there",
        ("CIFAR10", ({"train": True},)),
    ),
    "svhn": Source(
        "svhn",
        SVHN_FILES,
        None,
        "download the cropped-digit files (format 2) from http://ufldl.stanford.edu/housenumbers/",
        ("SVHN", ({"split": "train"}, {"split": "test"})),
    ),
    "imagefolder": Source(
        "imagefolder",
        IMAGEFOLDER_SPLITS,
        None,
        "arrange the images as train/<class>/<image> and val/<class>/<image> with the same class "
        "folders in both (ImageNet's layout; for ImageNet-10, the 10 classes' folders of ImageNet "
        "train and val)",
    ),
}
# Loader -> the source whose files it reads.
LOADER_SOURCES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "blockmnist": "mnist",
    "blockmnist_top": "mnist",
    "blockfashion": "fashion_mnist",
    "cifar10": "cifar10",
    "svhn": "svhn",
    "imagefolder": "imagefolder",
}


def find_file(folder: str | Path, name: str) -> Path | None:
    """The file `name` in `folder`, plain or gzipped (plain first); None when neither exists."""
    for candidate in (Path(folder) / name, Path(folder) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def class_folders(folder: str | Path) -> list[str]:
    """Sorted names of the sub-folders of `folder` (the classes of an image-folder split)."""
    return sorted(entry.name for entry in Path(folder).iterdir() if entry.is_dir())


def _missing(source: Source, folder: Path) -> list[str]:
    if source.name == "imagefolder":
        return [
            f"{split}/<class>/"
            for split in source.files
            if not (folder / split).is_dir() or not class_folders(folder / split)
        ]
    return [name for name in source.files if find_file(folder, name) is None]


def data_folder(source: Source, root: str | Path) -> Path:
    """The folder that holds the files: `root`, or its download folder when that has them all."""
    root = Path(root)
    if source.download_folder and _missing(source, root):
        nested = root / source.download_folder
        if nested.is_dir() and not _missing(source, nested):
            return nested
    return root


def files_problem(source: Source, root: str | Path) -> str | None:
    """What is wrong with `root` as the folder of `source`'s files, or None when nothing is."""
    path = Path(root)
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is a file, not a folder"
    missing = _missing(source, data_folder(source, path))
    if missing:
        where = f" (nor does {path / source.download_folder})" if source.download_folder else ""
        return f"lacks {', '.join(missing)}{where}"
    if source.name == "imagefolder":
        train, val = (class_folders(path / split) for split in IMAGEFOLDER_SPLITS)
        if train != val:
            extra = sorted(set(train) ^ set(val))
            return f"has different class folders in train and val ({', '.join(extra[:5])})"
        empty = [
            f"{split}/{name}"
            for split in IMAGEFOLDER_SPLITS
            for name in train
            if not any(entry.is_file() for entry in (path / split / name).iterdir())
        ]
        if empty:
            return f"has class folders without images ({', '.join(empty[:5])})"
    return None


def expected_files(source: Source) -> str:
    """The files `source` needs, as the error messages name them."""
    if source.name == "imagefolder":
        return "image folders train/<class>/ and val/<class>/"
    plain_or_gz = " (plain or .gz)" if source.files == IDX_NAMES else ""
    return "files " + ", ".join(source.files) + plain_or_gz


# seconds a download may wait for the server before it fails
DOWNLOAD_TIMEOUT = 60


def download(source: Source, root: str | Path) -> None:
    """Fetch `source` into `root` with torchvision's downloader (which checks the files' md5)."""
    class_name, calls = source.downloader
    dataset_class = getattr(importlib.import_module("torchvision.datasets"), class_name)
    Path(root).mkdir(parents=True, exist_ok=True)
    # torchvision opens URLs without a timeout: a network that drops connections would hang
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        for arguments in calls:
            dataset_class(str(root), download=True, **arguments)
    finally:
        socket.setdefaulttimeout(previous)
