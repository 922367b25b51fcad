"""Fingerprints that make code and config changes rerun exactly the stages they affect.

Snakemake reruns a job when its rule's own script changes, but not when a module that the script
imports changes. Each rule therefore passes `code_fingerprint(stage)` as a param: a hash of the
stage's module and of every diffroar module it imports, directly or not. Editing one module reruns
the stages that import it and, through their newer outputs, everything downstream of them.

Imported by the Snakefile: no torch here.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


def _imported_modules(path: Path) -> frozenset[str]:
    """Names of the package's modules that the file at `path` imports (each file parsed once per
    process while its size and modification time stay the same: a Snakemake run asks for a dozen
    stages whose closures share most modules)."""
    status = path.stat()
    return _parsed_imports(path, status.st_size, status.st_mtime_ns)


@cache
def _parsed_imports(path: Path, size: int, mtime_ns: int) -> frozenset[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:  # from . import x
                found.update(alias.name for alias in node.names)
            elif node.level == 1:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.module and node.module.split(".")[0] == PACKAGE:
                parts = node.module.split(".")
                if len(parts) > 1:  # from diffroar.x import y
                    found.add(parts[1])
                else:  # from diffroar import x
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
    return frozenset(name for name in found if (PACKAGE_DIR / f"{name}.py").exists())


def module_closure(stage: str) -> list[str]:
    """`stage` and every package module it imports, transitively, sorted."""
    seen, todo = set(), [stage]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = PACKAGE_DIR / f"{name}.py"
        if not path.exists():
            raise ValueError(f"no module {PACKAGE}.{name} at {path}")
        seen.add(name)
        todo.extend(_imported_modules(path))
    return sorted(seen)


@cache
def code_fingerprint(stage: str) -> str:
    """sha256 (16 hex digits) over the source of `stage`'s module closure."""
    digest = hashlib.sha256()
    for name in module_closure(stage):
        digest.update(name.encode())
        digest.update((PACKAGE_DIR / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


def config_fingerprint(*parts: Any) -> str:
    """sha256 (16 hex digits) of the canonical JSON of `parts` (dicts, lists, numbers, strings)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
