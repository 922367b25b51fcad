"""`python -m diffroar.verify [results]` and `snakemake verify`: every artifact of a finished run
checked (stores: metadata digest, identity and every chunk; checkpoints: tensors and metadata;
metrics JSON: checksum, ranges, identity; tables: schema and ranges, diffroar.checks), with the
list of what is damaged or missing and the Snakemake command that rebuilds it; exit status 1 when
anything is wrong. `snakemake verify` (rules/verify.smk) passes the identities and fingerprints
the config promises, so missing artifacts are listed too.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import (
    ArtifactError,
    check_record,
    checkpoint_metadata,
    read_run,
    read_table,
)
from .runtime import JsonFileError, log, read_json
from .store import (
    IdentityError,
    StoreError,
    expect_identity,
    open_expected,
    read_block,
    sample_blocks,
    stored_array,
)

# --- a whole run -------------------------------------------------------------------------------

# path under results/ -> the rule that writes it and the identity it records (None: no identity)
PATTERNS = [
    (r"data/(?P<dataset>[^/]+)\.zarr", "data"),
    (r"models/(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<seed>\d+)/model\.safetensors", "train"),
    (r"models/(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<seed>\d+)/metrics\.json", "train"),
    (r"models/(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<seed>\d+)/robust\.json", "robust"),
    (
        r"saliency/(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<base_seed>\d+)/"
        r"(?P<method>[^/]+)\.zarr",
        "saliency",
    ),
    (
        r"masked/(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<base_seed>\d+)/(?P<method>[^/]+)/"
        r"(?P<imputation>[^/]+)/(?P<order>top|bottom)-k(?P<keep_fraction>[^/]+)\.zarr",
        "mask",
    ),
    (
        r"retrain/(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<base_seed>\d+)/(?P<method>[^/]+)/"
        r"(?P<imputation>[^/]+)/(?P<order>top|bottom)-k(?P<keep_fraction>[^/]+)/"
        r"retrain(?P<retrain_seed>\d+)/(?:model\.safetensors|metrics\.json)",
        "retrain",
    ),
    (
        r"noretrain/(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<base_seed>\d+)\.parquet",
        "noretrain",
    ),
    (
        r"sanity/(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<base_seed>\d+)\.parquet",
        "sanity",
    ),
    (r"tables/(?P<dataset>[^/]+)/(?:metrics|diffroar)\.parquet", "metrics"),
    (r"tables/(?P<dataset>[^/]+)/comparisons\.parquet", "comparisons"),
    (r"tables/(?P<dataset>[^/]+)/localization\.parquet", "localization"),
    (
        r"(?:metrics|diffroar|comparisons|localization|noretrain|sanity)\.parquet",
        "combine_table",
    ),
]
NUMBERS = ("seed", "base_seed", "retrain_seed")


def path_identity(relative: str) -> tuple[str, dict[str, Any]] | None:
    """(rule, identity its path promises) of a path relative to results/, or None when it is
    not an artifact verify checks (logs, benchmarks, figures)."""
    for pattern, rule in PATTERNS:
        match = re.fullmatch(pattern, relative)
        if match:
            identity: dict[str, Any] = {}
            for key, value in match.groupdict().items():
                identity[key] = (
                    int(value)
                    if key in NUMBERS
                    else float(value)
                    if key == "keep_fraction"
                    else value
                )
            if rule == "mask":  # a masked store records its masking under `masking`
                identity = {
                    (key if key == "dataset" else f"masking.{key}"): value
                    for key, value in identity.items()
                }
            return rule, identity
    return None


@dataclass
class Problem:
    path: str
    rule: str
    what: str


def _check_store(path: Path, identity: Mapping[str, Any], metadata_only: bool) -> None:
    root = open_expected(path, identity)
    if metadata_only:
        return
    with warnings.catch_warnings():  # Snakemake's .snakemake_timestamp file in the store
        warnings.filterwarnings("ignore", "Object at .* is not recognized")
        groups = list(root.groups())
    for split, group in groups:
        for name, _ in group.arrays():
            array = stored_array(root, split, name, path)
            for block in sample_blocks(array):
                read_block(array, path, block)


def _check_table_identity(path: Path, table, identity: Mapping[str, Any]) -> None:
    """Every row of `table` has the values of `identity` (an empty table has no row of another
    identity: the comparisons of a run with one method, say)."""
    for key, value in identity.items():
        if key not in table.columns:
            continue
        found = sorted(set(table[key].tolist()))
        if found and found != [value]:
            raise IdentityError(
                f"{path} holds rows of {key} {found}, but its path and the config expect only "
                f"{value!r}: it was copied, moved or written by another run; delete it and rerun "
                "the rule that writes it"
            )


def check_artifact(
    path: Path, identity: Mapping[str, Any] | None, metadata_only: bool = False
) -> None:
    """Check one artifact by its kind (store, checkpoint, JSON, table) and, with `identity`,
    what it records; raise the error of the first problem found."""
    from .models import load_checkpoint

    name = path.name
    identity = identity or {}
    if name.endswith(".zarr"):
        _check_store(path, identity, metadata_only)
    elif name.endswith(".safetensors"):
        metadata = checkpoint_metadata(path)
        expect_identity(path, metadata, identity)
        load_checkpoint(path)  # the tensors against their checksum
    elif name.endswith(".json"):
        if "retrain_seed" in identity:
            read_run(path, {str(path): identity})
        else:
            record = read_json(path)
            check_record(path, record)
            expect_identity(path, record, identity)
    elif name.endswith(".parquet"):
        _check_table_identity(path, read_table(path), identity)
    elif not path.exists():
        raise FileNotFoundError(path)


def verify_run(
    results: str | Path,
    expected: Mapping[str, tuple[str, Mapping[str, Any] | None]] | None = None,
    metadata_only: bool = False,
) -> tuple[list[Problem], int]:
    """(problems, number of artifacts checked) of the run under `results`.

    Every store, checkpoint, metrics JSON and table under `results` is checked with the identity
    its path promises; `expected` (path -> (rule, identity), paths as Snakemake names them,
    relative to the working directory) adds the identities and fingerprints the config promises
    and lists what is missing. Leftover temporaries of killed jobs (`*.tmp-*`) are listed too.
    `metadata_only` skips reading the chunks of the stores."""
    results = Path(results)
    found: dict[str, tuple[str, dict[str, Any] | None]] = {}
    problems: list[Problem] = []
    if results.is_dir():
        for path in sorted(results.rglob("*")):
            relative = path.relative_to(results).as_posix()
            if ".tmp-" in path.name:
                problems.append(Problem(str(path), "-", "a leftover of a killed job: delete it"))
                continue
            if any(".zarr" in part or ".tmp-" in part for part in Path(relative).parts[:-1]):
                continue  # inside a store
            known = path_identity(relative)
            if known is not None:
                found[str(path)] = known
    for path, (rule, identity) in (expected or {}).items():
        found[str(Path(path))] = (rule, identity)
    for path, (rule, identity) in sorted(found.items()):
        if not Path(path).exists():
            problems.append(Problem(path, rule, "missing"))
            continue
        try:
            check_artifact(Path(path), identity, metadata_only)
        except (StoreError, JsonFileError, ArtifactError, ValueError, OSError) as error:
            problems.append(Problem(path, rule, f"damaged: {error}"))
    return problems, len(found)


def rebuild_command(problems: list[Problem]) -> str:
    """The Snakemake command that rebuilds the damaged and missing artifacts of `problems` (and,
    through them, what depends on them)."""
    paths = [problem.path for problem in problems if problem.rule != "-"]
    return "snakemake --cores all --forcerun " + " ".join(paths) if paths else ""


def report(problems: list[Problem], checked: int, results: str | Path) -> str:
    """What `verify_run` found, as text for a person."""
    if not problems:
        return f"verify: {checked} artifacts under {results} checked: all intact"
    lines = [f"verify: {len(problems)} of {checked} artifacts under {results} are not intact:"]
    for problem in problems:
        lines.append(f"  {problem.path} (rule {problem.rule}): {problem.what}")
    leftovers = [problem.path for problem in problems if problem.rule == "-"]
    if leftovers:
        lines.append("Delete the leftovers: rm -r " + " ".join(leftovers))
    command = rebuild_command(problems)
    if command:
        lines.append(f"Rebuild them (and what depends on them) with:\n  {command}")
    return "\n".join(lines)


def run_verify(results: str | Path, expected) -> None:
    """`snakemake verify`: log the report of `verify_run`; raise RuntimeError when an artifact is
    damaged or missing (the job fails, the report names each one and the command that rebuilds
    them)."""
    problems, checked = verify_run(results, expected)
    log.info("%s", report(problems, checked, results))
    if problems:
        raise RuntimeError(f"verify: {len(problems)} artifacts are damaged or missing (see above)")


def main(argv: list[str] | None = None) -> int:
    """`python -m diffroar.verify [results] [--metadata-only]`: exit status 0 when every artifact
    is intact, 1 otherwise (the report on stdout)."""
    parser = argparse.ArgumentParser(
        prog="python -m diffroar.verify", description="Check every artifact of a finished run."
    )
    parser.add_argument("results", nargs="?", default="results")
    parser.add_argument("--metadata-only", action="store_true", help="skip reading the chunks")
    arguments = parser.parse_args(argv)
    if not Path(arguments.results).is_dir():
        print(f"verify: {arguments.results} is not a directory", file=sys.stderr)
        return 2
    problems, checked = verify_run(arguments.results, metadata_only=arguments.metadata_only)
    print(report(problems, checked, arguments.results))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
