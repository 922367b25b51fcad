"""What every job needs: a log, the thread count it was given, a device, JSON output."""

from __future__ import annotations

import json
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

log = logging.getLogger("diffroar")


def package_version() -> str:
    try:
        return version("diffroar")
    except PackageNotFoundError:  # run from a checkout that was not pip-installed
        return "0+unknown"


def setup_job(log_path: str | Path, threads: int) -> logging.Logger:
    """Send diffroar's log to `log_path` and stderr; cap numeric libraries at `threads` threads."""
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
    return log


def device():
    """CUDA when present, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
