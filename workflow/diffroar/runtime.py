"""What every job needs: a log, the thread count it was given, a device, and outputs that appear
only when complete.

Every file or store a job writes goes through `atomic_output`: it is written under a temporary
name beside its final path (`<name>.tmp-<pid>`) and renamed into place when complete, so a job
that crashes or is killed never leaves a file that looks finished.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from diffroar.client import process_start_time

log = logging.getLogger("diffroar")


def package_version() -> str:
    try:
        return version("diffroar")
    except PackageNotFoundError:  # run from a checkout that was not pip-installed
        return "0+unknown"


def setup_job(log_path: str | Path, threads: int, started: float | None = None) -> logging.Logger:
    """Send diffroar's log to `log_path` and stderr; cap numeric libraries at `threads` threads.
    `started` (seconds since the epoch) is when the job's process started, for the job times
    logged at exit (default: this process's creation; the worker passes its script's)."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    log.handlers.clear()
    for handler in (logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(formatter)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    def log_failure(kind, value, traceback):
        log.critical("job failed: %s: %s", kind.__name__, value, exc_info=(kind, value, traceback))

    sys.excepthook = log_failure
    _log_job_times(threads, started)
    return log


def _log_job_times(threads: int, started: float | None = None) -> None:
    """At exit, log how long the job worked and how long it took to get there from `started`
    (default: this process's creation; a job run by diffroar.client passes its client's: the
    client's interpreter and the hand-over to the worker, or the imports of a job in its own
    process): bench/ reads this line."""
    if started is None:
        started = process_start_time()
    ready = time.time()

    def report() -> None:
        log.info(
            "job times: %.3f s start-up, %.3f s work, %d threads",
            ready - started,
            time.time() - ready,
            threads,
        )

    atexit.register(report)


def device():
    """CUDA when present, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


TEMPORARY_MARK = ".tmp-"


def _remove(path: Path) -> None:
    """Delete a file, link or directory tree at `path` if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write a file or a directory (a zarr store) at; when
    the block ends without an error, rename it to `path`, replacing what was there. On an error
    the temporary is removed and `path` keeps its previous content (or stays absent).

    A rename within one directory is atomic, so `path` is either the old content or the complete
    new one. The temporary is `<name>.tmp-<pid>`; leftovers of an earlier attempt that was killed
    (any `<name>.tmp-*`: Snakemake never runs two jobs for one output) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in glob.glob(glob.escape(str(path)) + TEMPORARY_MARK + "*"):
        _remove(Path(leftover))
    temporary = path.with_name(f"{path.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"{temporary}: nothing was written for {path}")
        if temporary.is_dir():
            # a directory cannot replace a non-empty one in one rename: move the old one aside
            aside = temporary.with_name(temporary.name + "-old")
            if path.exists() or path.is_symlink():
                os.replace(path, aside)
            os.replace(temporary, path)
            _remove(aside)
        else:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())  # the data is on disk before the name points at it
            os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


JSON_CHECKSUM = "sha256"  # key of a JSON file's checksum over the rest of its body


class JsonFileError(ValueError):
    """A JSON file given as input is missing, not JSON, or does not match its checksum."""


def json_checksum(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of `body` without its checksum."""
    canonical = {key: value for key, value in body.items() if key != JSON_CHECKSUM}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """`payload` as indented JSON at `path`, written atomically, with the field `sha256`: the
    checksum of the rest (`json_checksum`), which `read_json` checks."""
    payload = {**payload, JSON_CHECKSUM: json_checksum(payload)}
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    with atomic_output(path) as temporary:
        temporary.write_text(text)


def write_parquet(frame, path: str | Path) -> None:
    """A pandas DataFrame as parquet at `path` (without its index), written atomically."""
    with atomic_output(path) as temporary:
        frame.to_parquet(temporary, index=False)


def read_json(path: str | Path, checksum: bool = True) -> dict[str, Any]:
    """The JSON object at `path` written by `write_json`, without its checksum field. A missing
    or unreadable file, one that is not a JSON object, or (with `checksum`) one whose body does
    not match its recorded checksum (edited or damaged) fails with a JsonFileError naming it."""
    redo = "delete it and rerun the rule that writes it"
    try:
        body = json.loads(Path(path).read_text())
    except OSError as error:
        raise JsonFileError(f"{path}: cannot read it ({error}); {redo}") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise JsonFileError(f"{path}: not valid JSON ({error}); {redo}") from error
    if not isinstance(body, dict):
        raise JsonFileError(f"{path}: holds a {type(body).__name__}, not a JSON object; {redo}")
    if checksum:
        if JSON_CHECKSUM not in body:
            raise JsonFileError(
                f"{path}: has no {JSON_CHECKSUM} field (not written by diffroar's write_json, or "
                f"damaged); {redo}"
            )
        if json_checksum(body) != body[JSON_CHECKSUM]:
            raise JsonFileError(
                f"{path}: its content does not match the {JSON_CHECKSUM} recorded when it was "
                f"written (edited or damaged since); {redo}"
            )
    return {key: value for key, value in body.items() if key != JSON_CHECKSUM}
