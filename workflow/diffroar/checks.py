"""Checks that the jobs make on the artifacts they read (diffroar.verify checks a whole run).

- `expect_inputs(expected, paths)`: the identity check every stage makes on the artifacts it
  reads. `expected` maps each input path to the identity its rule promises (from the wildcards
  and the config: dataset, model, base seed, method, imputation, order, k, fingerprints); a store
  must carry its metadata digest, a checkpoint its metadata checksum, and each must record that
  identity, or the job stops with an error that names the file and both values.
- `read_run(path, expected)`: one retrained model's metrics JSON, checksum, identity and ranges
  checked (accuracies in [0, 1], epochs >= 1, ...).
- `read_table(path)`: a parquet table of the pipeline, refused (naming the file) when it cannot
  be read or its columns, types or values are out of their schema.

This module does not import the models (torch): the figures and tables use it too.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .runtime import read_json
from .store import expect_identity, open_expected

# checkpoint metadata key: sha256 of the other metadata entries (spec, dataset, model, seeds,
# fingerprints), written by diffroar.models.save_checkpoint
METADATA_CHECKSUM = "metadata_sha256"


def checkpoint_metadata_digest(metadata: dict[str, str]) -> str:
    """sha256 over a checkpoint's metadata entries (raw JSON strings) but `metadata_sha256`."""
    body = {key: value for key, value in metadata.items() if key != METADATA_CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class ArtifactError(ValueError):
    """An artifact whose values are out of their schema (a range, a type, a column)."""


# --- identities a job expects of its inputs ----------------------------------------------------


def checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata, JSON-decoded, its metadata checksum checked (required): fails
    with an ArtifactError naming the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
        metadata = {key: json.loads(value) for key, value in raw.items()}
    except Exception as error:  # safetensors raises several types for damaged files
        raise ArtifactError(
            f"cannot read checkpoint {path}: {error} (missing, truncated or not a safetensors "
            "file); delete it and rerun the rule that writes it"
        ) from error
    if metadata.get(METADATA_CHECKSUM) != checkpoint_metadata_digest(raw):
        what = "has no" if METADATA_CHECKSUM not in metadata else "does not match its"
        raise ArtifactError(
            f"checkpoint {path}: its metadata {what} {METADATA_CHECKSUM} (edited or damaged, or "
            "not written by this version of diffroar); delete it and rerun the rule that writes it"
        )
    return metadata


def expect_inputs(
    expected: Mapping[str, Mapping[str, Any]] | None, paths: Iterable[str | Path]
) -> None:
    """Check each of `paths` (zarr stores, safetensors checkpoints, JSON files) against the
    identity `expected[path]` (see `expect_identity`); None (a call from outside the workflow)
    checks nothing. A path without an entry is a wiring error (ValueError)."""
    if expected is None:
        return
    for path in paths:
        key = str(path)
        if key not in expected:
            raise ValueError(f"{path}: the rule gives no expected identity for this input")
        identity = expected[key]
        if key.endswith(".zarr"):
            open_expected(path, identity)
        elif key.endswith(".safetensors"):
            expect_identity(path, checkpoint_metadata(path), identity)
        elif key.endswith(".json"):
            expect_identity(path, read_json(path), identity)
        else:
            raise ValueError(f"{path}: no identity check for this kind of file")


# --- value checks ------------------------------------------------------------------------------


def _fraction(value) -> bool:
    return 0 <= value <= 1


def _count(value) -> bool:
    return value >= 1 and float(value).is_integer()


def _seed(value) -> bool:
    return value >= 0 and float(value).is_integer()


def _signed_fraction(value) -> bool:
    return -1 <= value <= 1


def _keep(value) -> bool:
    return 0 < value <= 1


def _non_negative(value) -> bool:
    return value >= 0


# column or field name -> (check, what is allowed): the ranges every table and JSON obeys
RANGES = {
    "test_accuracy": (_fraction, "in [0, 1]"),
    "test_accuracy_last_epoch": (_fraction, "in [0, 1]"),
    "unmasked_test_accuracy": (_fraction, "in [0, 1]"),
    "robust_test_accuracy": (_fraction, "in [0, 1]"),
    "top_accuracy": (_fraction, "in [0, 1]"),
    "bottom_accuracy": (_fraction, "in [0, 1]"),
    "mask_only_top_accuracy": (_fraction, "in [0, 1]"),
    "mask_only_bottom_accuracy": (_fraction, "in [0, 1]"),
    "diffroar": (_signed_fraction, "in [-1, 1]"),
    "noretrain_diffroar": (_signed_fraction, "in [-1, 1]"),
    "mask_only_diffroar": (_signed_fraction, "in [-1, 1]"),
    "keep_fraction": (_keep, "in (0, 1]"),
    "removed_fraction": (_fraction, "in [0, 1]"),
    "epochs": (_count, "a whole number >= 1"),
    "selected_epoch": (_count, "a whole number >= 1"),
    "kept_coordinates": (_count, "a whole number >= 1"),
    "n_runs": (_seed, "a whole number >= 0"),
    "n_base_seeds": (_seed, "a whole number >= 0"),
    "base_seed": (_seed, "a whole number >= 0"),
    "retrain_seed": (_seed, "a whole number >= 0"),
    "seed": (_seed, "a whole number >= 0"),
    "wall_seconds": (_non_negative, ">= 0"),
    "layer_from_output": (_seed, "a whole number >= 0"),
    "randomised_layers": (_seed, "a whole number >= 0"),
}
# fields that must be non-empty strings
NAMES = (
    "dataset",
    "model",
    "method",
    "imputation",
    "order",
    "config_fingerprint",
    "attribution_fingerprint",
    "precision",
)
# columns that may hold NaN (a control that was not run, a spread of one value)
MAY_BE_MISSING = re.compile(r"^(mask_only_|beyond_mask_only|robust_)|(_std|_ci_low|_ci_high)$")


def _bad_value(name: str, value: Any) -> str | None:
    """Why `value` of field or column `name` is out of its schema, or None."""
    if name in NAMES:
        if not isinstance(value, str) or not value:
            return f"{value!r}: must be a non-empty string"
        return None
    if name not in RANGES or value is None:
        return None
    check, allowed = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r}: must be a number {allowed}"
    if math.isnan(value):
        return None if MAY_BE_MISSING.search(name) else f"{value!r}: must be a number {allowed}"
    if not math.isfinite(value) or not check(value):
        return f"{value!r}: must be {allowed}"
    return None


RUN_FIELDS = (
    "dataset",
    "model",
    "base_seed",
    "method",
    "imputation",
    "order",
    "keep_fraction",
    "retrain_seed",
    "test_accuracy",
    "test_accuracy_last_epoch",
    "selected_epoch",
    "epochs",
    "kept_coordinates",
    "config_fingerprint",
    "attribution_fingerprint",
    "precision",
)


def check_record(path: str | Path, record: Mapping[str, Any], required=()) -> None:
    """Fail with an ArtifactError naming `path` when a field of `required` is missing or a field
    with a schema (`RANGES`, `NAMES`) is out of it."""
    missing = [name for name in required if name not in record]
    if missing:
        raise ArtifactError(
            f"{path}: no {', '.join(missing)} (not written by this version of diffroar, or "
            "damaged); delete it and rerun the rule that writes it"
        )
    for name, value in record.items():
        problem = _bad_value(name, value)
        if problem:
            raise ArtifactError(
                f"{path}: {name} = {problem}; delete it and rerun the rule that writes it"
            )
    if record.get("order") not in (None, "top", "bottom"):
        raise ArtifactError(f"{path}: order = {record['order']!r}: must be top or bottom")
    if "selected_epoch" in record and "epochs" in record:
        if record["selected_epoch"] > record["epochs"]:
            raise ArtifactError(
                f"{path}: selected_epoch = {record['selected_epoch']} is after the last epoch "
                f"({record['epochs']}); delete it and rerun the rule that writes it"
            )


def read_run(path: str | Path, expected: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """The metrics JSON of one retrained model (`read_json`: checksum checked), its fields in
    their ranges (`check_record`) and, with `expected` (path -> identity), its identity."""
    record = read_json(path)
    check_record(path, record, RUN_FIELDS)
    if expected is not None:
        if str(path) not in expected:
            raise ValueError(f"{path}: the rule gives no expected identity for this input")
        expect_identity(path, record, expected[str(path)])
    return record


# --- tables ------------------------------------------------------------------------------------

# table kind (the file's stem) -> columns it must have
TABLE_COLUMNS = {
    "metrics": ("dataset", "model", "method", "imputation", "order", "keep_fraction",
                "base_seed", "retrain_seed", "test_accuracy"),
    "diffroar": ("dataset", "model", "method", "imputation", "keep_fraction", "diffroar"),
    "noretrain": ("dataset", "model", "base_seed", "method", "imputation", "order",
                  "keep_fraction", "test_accuracy"),
    "comparisons": ("dataset",),
    "localization": ("dataset",),
    "sanity": ("dataset", "model", "base_seed", "method", "mode", "layer_from_output", "layer",
               "randomised_layers", "measure", "mean", "ci_low", "ci_high", "n_images"),
}  # fmt: skip
# kinds whose tables hold at least one row in every run
NON_EMPTY = ("metrics", "diffroar", "noretrain", "sanity")
# table kind -> columns that may be NaN there (a localization measure, a comparison of areas over
# k: no k)
MISSING_IN = {"localization": ("keep_fraction",), "comparisons": ("keep_fraction",)}


def table_kind(path: str | Path) -> str:
    """The kind of a table from its path: its stem, or `noretrain` or `sanity` for a base
    model's table (results/<kind>/<dataset>/<model>/seed<s>.parquet)."""
    path = Path(path)
    if "noretrain" in path.parts[:-1]:
        return "noretrain"
    return "sanity" if path.parts[-4:-3] == ("sanity",) else path.stem


def check_table(path: str | Path, table, kind: str | None = None) -> None:
    """Fail with an ArtifactError naming `path` when `table` (a DataFrame of kind `kind`, by
    default from the path) lacks a column of its kind, has no rows where every run has some, or
    holds a value out of its column's schema (`RANGES`, `NAMES`)."""
    kind = kind or table_kind(path)
    missing = [name for name in TABLE_COLUMNS.get(kind, ()) if name not in table.columns]
    if missing:
        raise ArtifactError(
            f"{path}: the {kind} table has no column {', '.join(missing)} (damaged, or written by "
            "another version of diffroar); delete it and rerun the rule that writes it"
        )
    if kind in NON_EMPTY and table.empty:
        raise ArtifactError(f"{path}: the {kind} table has no rows; delete it and rerun its rule")
    for name in table.columns:
        if name not in RANGES and name not in NAMES:
            continue
        for row, value in enumerate(table[name].tolist()):
            if hasattr(value, "item"):
                value = value.item()
            if name in MISSING_IN.get(kind, ()) and isinstance(value, float) and value != value:
                continue
            problem = _bad_value(name, value)
            if problem:
                raise ArtifactError(
                    f"{path}: row {row}, column {name} = {problem}; delete it and rerun the rule "
                    "that writes it"
                )


def read_table(path: str | Path, kind: str | None = None):
    """The parquet table at `path` as a DataFrame, checked with `check_table`; a file that cannot
    be read (missing, truncated, not parquet) fails with an ArtifactError naming it."""
    import pandas as pd

    try:
        table = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for damaged files
        raise ArtifactError(
            f"{path}: cannot read the table ({type(error).__name__}: {error}): missing, "
            "truncated or not parquet; delete it and rerun the rule that writes it"
        ) from error
    check_table(path, table, kind)
    return table
