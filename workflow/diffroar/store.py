"""Zarr stores of image-shaped arrays, chunked along samples and compressed.

Every store that diffroar writes has one group per split (`train`, `val`, `test`) and the
store-level attributes that say what produced it. Stages write a store with `new_store`, which
builds it under a temporary name and renames it into place when complete. Every chunk carries a
CRC32C checksum and every chunk is written (even one of fill values), so reading with
`stored_array` and `read_block` detects a store that is truncated, garbled or incomplete and
fails with a `StoreError` that names the store and the array.

The metadata documents (every `zarr.json`: dtypes, shapes, codecs, attributes) are covered by a
sha256 that `new_store` records in the root attribute `metadata_sha256` when the store is
complete; `open_store` recomputes it, so an edited or damaged `zarr.json` is refused.
`expect_identity` checks that what a store, checkpoint or JSON file records (dataset, model, seed,
method, k, ...) is what the job reading it expects from its path and the config.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from .runtime import atomic_output

SPLITS = ("train", "val", "test")
# About 1 MiB per uncompressed chunk: large enough for fast sequential reads, small enough that a
# sample range touches few chunks.
CHUNK_BYTES = 1 << 20
REWRITE = "delete it and rerun the rule that writes it"
# root attribute: sha256 over the store's metadata documents (see metadata_digest)
METADATA_DIGEST = "metadata_sha256"


class StoreError(ValueError):
    """A store given as input is missing, incomplete, corrupted or holds invalid values."""


def _chunk_rows(shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, min(shape[0], CHUNK_BYTES // max(row_bytes, 1)))


def create_store(path: str | Path, attributes: dict[str, Any]) -> zarr.Group:
    """A new store at `path` (an existing one is replaced) with `attributes` on its root group,
    written in place: for building test inputs. Stages write through `new_store`."""
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update(attributes)
    return root


@contextmanager
def new_store(path: str | Path, attributes: dict[str, Any]) -> Iterator[zarr.Group]:
    """The root group of a new store with `attributes`, to be filled inside the `with` block.

    It is built at `<path>.tmp-<pid>` and renamed to `path` (replacing an existing store) when the
    block ends; if the block raises, the temporary store is removed and `path` is unchanged."""
    with atomic_output(path) as temporary:
        root = create_store(temporary, attributes)
        yield root
        root.attrs[METADATA_DIGEST] = metadata_digest(temporary)


def _metadata_documents(path: Path) -> Iterator[tuple[str, Path]]:
    """(relative name, file) of every zarr.json of the store at `path`: the root's, then those
    of the groups and arrays below it (array folders are not walked into: they hold chunks)."""
    pending = [Path(".")]
    while pending:
        relative = pending.pop()
        document = path / relative / "zarr.json"
        if not document.is_file():
            continue
        yield relative.as_posix(), document
        try:
            node_type = json.loads(document.read_text()).get("node_type")
        except (ValueError, UnicodeDecodeError, AttributeError):
            node_type = None  # metadata_digest names the file
        if node_type == "array":
            continue
        with os.scandir(path / relative) as entries:
            pending.extend(sorted(relative / entry.name for entry in entries if entry.is_dir()))


def metadata_digest(path: str | Path) -> str:
    """sha256 over the canonical JSON (sorted keys) of every zarr.json of the store at `path`,
    with their relative names, the root's `metadata_sha256` attribute left out. Fails with a
    StoreError naming the file when one is not JSON."""
    path = Path(path)
    digest = hashlib.sha256()
    for relative, document in sorted(_metadata_documents(path)):
        try:
            content = json.loads(document.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise StoreError(f"{document}: not valid JSON ({error}); {REWRITE}") from error
        if relative == "." and isinstance(content, dict):
            attributes = dict(content.get("attributes") or {})
            attributes.pop(METADATA_DIGEST, None)
            content = {**content, "attributes": attributes}
        digest.update(relative.encode() + b"\0")
        digest.update(json.dumps(content, sort_keys=True, separators=(",", ":")).encode() + b"\0")
    return digest.hexdigest()


def check_metadata(path: str | Path, root: zarr.Group, sealed: bool = False) -> None:
    """Fail with a StoreError naming the store when its metadata do not match the digest recorded
    when it was written (a `zarr.json` edited or damaged since), or, with `sealed`, when it has
    no digest (not written completely by `new_store`)."""
    recorded = root.attrs.get(METADATA_DIGEST)
    if recorded is None:
        if sealed:
            raise StoreError(
                f"{path}: the store has no {METADATA_DIGEST} attribute (not written completely "
                f"by this version of diffroar, or its zarr.json was replaced); {REWRITE}"
            )
        return
    found = metadata_digest(path)
    if found != recorded:
        raise StoreError(
            f"{path}: its metadata (the zarr.json files: dtypes, shapes, codecs, attributes) do "
            f"not match the {METADATA_DIGEST} recorded when it was written ({recorded[:12]}... "
            f"recorded, {found[:12]}... now): edited or damaged since; {REWRITE}"
        )


def _lookup(attributes: Mapping[str, Any], key: str) -> Any:
    """`attributes[key]`, following dots into nested mappings ("masking.keep_fraction")."""
    value: Any = attributes
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(key)
        value = value[part]
    return value


def _same(found: Any, expected: Any) -> bool:
    """Equal as numbers when both are numbers (0.1 == 0.1, 3 == 3.0), else as canonical JSON."""
    numbers = (int, float)
    if isinstance(found, numbers) and isinstance(expected, numbers):
        return not isinstance(found, bool) and not isinstance(expected, bool) and found == expected
    canonical = lambda value: json.dumps(value, sort_keys=True, default=str)  # noqa: E731
    return canonical(found) == canonical(expected)


class IdentityError(ValueError):
    """An artifact records another identity than its path and the config promise."""


def expect_identity(
    path: str | Path, attributes: Mapping[str, Any], expected: Mapping[str, Any] | None
) -> None:
    """Check that `attributes` (a store's attributes, a checkpoint's metadata, a JSON body) hold
    every value of `expected` (keys may name nested values: "masking.keep_fraction"); fail
    otherwise with an IdentityError naming `path`, the key and both values. None checks
    nothing."""
    for key, value in (expected or {}).items():
        try:
            found = _lookup(attributes, key)
        except KeyError:
            raise IdentityError(
                f"{path} records no {key}, but the job expects {key} = {value!r} (not written by "
                f"this version of diffroar, or damaged); {REWRITE}"
            ) from None
        if not _same(found, value):
            raise IdentityError(
                f"{path} records {key} = {found!r}, but its path and the config expect "
                f"{key} = {value!r}: it was copied, moved or written by another run; {REWRITE}"
            )


def open_expected(path: str | Path, expected: Mapping[str, Any] | None) -> zarr.Group:
    """`open_store(path)`; with `expected` (the identity the reading job expects), the store must
    also carry its metadata digest and record that identity (`expect_identity`)."""
    root = open_store(path, sealed=expected is not None)
    expect_identity(path, root.attrs.asdict(), expected)
    return root


def create_empty(
    group: zarr.Group, name: str, shape: tuple[int, ...], dtype, shuffle: str | None = None
) -> zarr.Array:
    """An array `group[name]` chunked along axis 0, zstd-compressed and checksummed, to be filled
    by blocks. Blosc's `shuffle` defaults to bitshuffle for multi-byte values (best for
    continuous ones such as attributions); masked images pass "noshuffle" (see diffroar.mask)."""
    dtype = np.dtype(dtype)
    if shuffle is None:
        shuffle = "bitshuffle" if dtype.itemsize > 1 else "shuffle"
    compressor = BloscCodec(cname="zstd", clevel=5, shuffle=shuffle)
    chunks = (_chunk_rows(shape, dtype), *shape[1:])
    return group.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        compressors=(compressor, Crc32cCodec()),
        # every chunk is written, so a missing chunk file means an incomplete store
        config={"write_empty_chunks": True},
    )


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


def open_store(
    path: str | Path, required: tuple[str, ...] = (), sealed: bool = False
) -> zarr.Group:
    """Open a store read-only; a missing or unreadable one, one without the attributes
    `required`, or one whose metadata do not match their recorded digest (or, with `sealed`,
    carry none) fails with a StoreError naming it."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise StoreError(f"{path} is not a zarr store (no zarr.json): was it written completely?")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as error:  # a garbled zarr.json: JSONDecodeError, ValueError, ...
        raise StoreError(
            f"{path}: cannot open the zarr store ({type(error).__name__}: {error}); {REWRITE}"
        ) from error
    missing = [name for name in required if name not in root.attrs]
    if missing:
        raise StoreError(
            f"{path}: the store's attributes lack {', '.join(missing)} (not written by this "
            f"stage of diffroar, or damaged); {REWRITE}"
        )
    check_metadata(path, root, sealed)
    return root


def stored_array(
    source: str | Path | zarr.Group, split: str, name: str, path: str | Path | None = None
) -> zarr.Array:
    """The array `<split>/<name>` of a store (its path, or its open root group and `path`) with
    every chunk present; fails with a StoreError naming the store and the array otherwise."""
    if isinstance(source, zarr.Group):
        root, where = source, Path(path) if path is not None else source.store_path
    else:
        root, where = open_store(source), Path(source)
    try:
        array = root[f"{split}/{name}"]
    except Exception as error:  # KeyError when absent, JSONDecodeError when garbled
        raise StoreError(
            f"{where}: no readable array {split}/{name} ({type(error).__name__}: {error}); "
            f"{REWRITE}"
        ) from error
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{where}: {split}/{name} is a group, not an array; {REWRITE}")
    initialized = array.nchunks_initialized
    if initialized < array.nchunks:
        raise StoreError(
            f"{where}: array {split}/{name} has {initialized} of its {array.nchunks} chunks "
            f"(the store is incomplete); {REWRITE}"
        )
    return array


def read_block(array: zarr.Array, where: str | Path, selection: slice | None = None) -> np.ndarray:
    """`array[selection]` (all of it by default); fails with a StoreError that names `where` (the
    store) and the array when a chunk cannot be decoded (truncated, or garbled so that its
    checksum does not match) or, for floating-point arrays, when a value is NaN or infinite."""
    span = "all samples" if selection is None else f"samples {selection.start}:{selection.stop}"
    try:
        values = array[...] if selection is None else array[selection]
    except Exception as error:  # blosc and checksum errors (RuntimeError, ValueError)
        raise StoreError(
            f"{where}: cannot read {span} of {array.path} ({type(error).__name__}: {error}): a "
            f"chunk file is truncated or corrupted; {REWRITE}"
        ) from error
    # the float64 sum of float32 values is NaN or infinite exactly when one of them is (and needs
    # no temporary array the size of `values`)
    if values.dtype.kind == "f" and not np.isfinite(values.sum(dtype=np.float64)):
        bad = int((~np.isfinite(values)).sum())
        raise StoreError(
            f"{where}: {array.path} holds {bad} NaN or infinite values in {span}; {REWRITE}"
        )
    return values


def read_split(path: str | Path, split: str) -> dict[str, np.ndarray]:
    """Every array of `split` in the store at `path`, read in full (and checked)."""
    root = open_store(path)
    if split not in root:
        raise StoreError(f"{path}: no split {split!r}; {REWRITE}")
    return {
        name: read_block(stored_array(root, split, name, path), path)
        for name, _ in root[split].arrays()
    }
