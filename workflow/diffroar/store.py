"""Zarr stores of image-shaped arrays, chunked along samples and compressed.

Every store that diffroar writes has one group per split (`train`, `val`, `test`) and the
store-level attributes that say what produced it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

SPLITS = ("train", "val", "test")
# About 1 MiB per uncompressed chunk: large enough for fast sequential reads, small enough that a
# sample range touches few chunks.
CHUNK_BYTES = 1 << 20


def _chunk_rows(shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, min(shape[0], CHUNK_BYTES // max(row_bytes, 1)))


def create_store(path: str | Path, attributes: dict[str, Any]) -> zarr.Group:
    """A new store at `path` (an existing one is replaced) with `attributes` on its root group."""
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update(attributes)
    return root


def create_empty(group: zarr.Group, name: str, shape: tuple[int, ...], dtype) -> zarr.Array:
    """An array `group[name]` chunked along axis 0 and zstd-compressed, to be filled by blocks."""
    dtype = np.dtype(dtype)
    compressor = BloscCodec(
        cname="zstd", clevel=5, shuffle="bitshuffle" if dtype.itemsize > 1 else "shuffle"
    )
    chunks = (_chunk_rows(shape, dtype), *shape[1:])
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, compressors=compressor)


def write_array(group: zarr.Group, name: str, data: np.ndarray) -> zarr.Array:
    """Write `data` (at least 1-D) as `group[name]`."""
    array = create_empty(group, name, data.shape, data.dtype)
    array[...] = data
    return array


def sample_blocks(array: zarr.Array, rows: int | None = None) -> Iterator[slice]:
    """Slices along axis 0 in whole chunks (about `rows` samples each, default one chunk)."""
    chunk = array.chunks[0]
    step = chunk if rows is None else max(chunk, rows // chunk * chunk)
    for start in range(0, array.shape[0], step):
        yield slice(start, min(start + step, array.shape[0]))


def open_store(path: str | Path) -> zarr.Group:
    """Open a store read-only; a missing or unreadable one fails with a message naming it."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(
            f"{path} is not a zarr store (no zarr.json): was it written completely?"
        )
    return zarr.open_group(str(path), mode="r")


def read_split(path: str | Path, split: str) -> dict[str, np.ndarray]:
    """Every array of `split` in the store at `path`, read in full."""
    group = open_store(path)[split]
    return {name: array[...] for name, array in group.arrays()}
