"""User code named in the config as `module:callable`, and the files a run reads from outside.

Two sides, kept apart on purpose:
- at config time (the Snakefile) the module is only *found* (importlib's PathFinder, which reads
  directories, never executes a module, not even a package's __init__), its source hashed for the
  fingerprints and parsed to see that it defines the callable;
- in the job the module is *imported* (`load_callable`), after the run's working directory and
  PYTHONPATH have been put first on sys.path. The warm worker (diffroar.worker) never imports user
  code itself: every job is a fresh fork, so an edited module is always the one that runs.

No torch here: the Snakefile imports this module.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.machinery
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

# `module:callable`, the module a dotted name (my_nets, lab.nets), the callable a name in it.
PLUGIN = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)


class PluginError(ValueError):
    """User code that cannot be found, imported or used; the message names the module's file."""


def is_plugin(name: Any) -> bool:
    """Whether `name` has the form `module:callable`."""
    return isinstance(name, str) and PLUGIN.fullmatch(name) is not None


def search_dirs() -> list[str]:
    """Where user modules are looked for first: the working directory of the run, then the
    entries of PYTHONPATH (then, when importing, the rest of sys.path: installed packages)."""
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return list(dict.fromkeys([os.getcwd(), *extra]))


def find_module_file(module: str) -> Path:
    """The source file of `module` (dotted) as an import in a job would find it, without
    executing anything; raises PluginError when there is none or it is not Python source."""
    dirs = search_dirs()
    path = dirs + [entry for entry in sys.path if entry and entry not in dirs]
    spec = None
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]), path)
        if spec is None:
            where = ", ".join(dirs)
            raise PluginError(
                f"module {module!r} not found: no {'/'.join(parts[:depth])}.py (or package) in "
                f"the working directory or PYTHONPATH ({where}) or the installed packages"
            )
        path = list(spec.submodule_search_locations or [])
        if depth < len(parts) and not path:
            raise PluginError(
                f"module {module!r} not found: {spec.origin} is a module, not a package"
            )
    origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py"):
        raise PluginError(
            f"module {module!r} ({origin or 'a namespace package'}) is not a Python source file: "
            "its source is what the fingerprints hash"
        )
    return Path(origin)


@lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes; cached by (path, size, mtime_ns): the Snakefile asks for the
    same checkpoint's hash in every job's fingerprint."""
    status = Path(path).stat()
    return _sha256(str(Path(path).resolve()), status.st_size, status.st_mtime_ns)


def source_sha256(module: str) -> str:
    """sha256 of the source file of `module` (`find_module_file`). Only that file: a module it
    imports in turn is not hashed."""
    return file_sha256(find_module_file(module))


def defines(path: Path, name: str) -> bool | None:
    """Whether the module source at `path` binds `name` at top level (def, class, assignment,
    import); None when it cannot tell without running it (a star import, a module __getattr__).
    A syntax error raises PluginError naming the file and line."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        raise PluginError(f"{path}, line {error.lineno}: syntax error: {error.msg}") from error
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                bound.add(alias.asname or alias.name.split(".")[0])
        else:
            for child in ast.walk(node):  # assignments, also under if/try at top level
                if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                    bound.add(child.id)
    if "__getattr__" in bound:
        return None
    return name in bound


def check_plugin(name: str) -> Path:
    """At config time: the file of plug-in `name` (`module:callable`), found without running it;
    PluginError when the module is not found or visibly does not define the callable."""
    module, attribute = name.split(":")
    path = find_module_file(module)
    if defines(path, attribute) is False:
        raise PluginError(f"module {module!r} ({path}) defines no {attribute!r}")
    return path


def load_callable(name: str) -> tuple[Callable[..., Any], Path]:
    """In a job: import the module of `name` (`module:callable`) with the run's working directory
    and PYTHONPATH first on sys.path, and return (the callable, the module's file). Every failure
    is a PluginError naming the module and its file."""
    module_name, attribute = name.split(":")
    sys.path[:0] = [entry for entry in search_dirs() if entry not in sys.path]
    importlib.invalidate_caches()  # a module written since the path's directories were listed
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        try:
            where = str(find_module_file(module_name))
        except PluginError:
            where = "not found in the working directory, PYTHONPATH or the installed packages"
        raise PluginError(
            f"cannot import module {module_name!r} ({where}): {type(error).__name__}: {error}"
        ) from error
    path = Path(getattr(module, "__file__", None) or module_name)
    function = getattr(module, attribute, None)
    if function is None:
        raise PluginError(f"module {module_name!r} ({path}) defines no {attribute!r}")
    if not callable(function):
        raise PluginError(
            f"{name} ({path}) is not callable (its type: {type(function).__name__}); it must be "
            "a function or a class"
        )
    return function, path


def weights_format(path: str | Path) -> str | None:
    """The format of a weights file from its first bytes: 'safetensors' (an 8-byte header length,
    then a JSON header), 'torch' (what torch.save writes: a zip archive, or a pickle in the legacy
    format) or None. Raises OSError when the file cannot be read."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # (a truncated one too: its reader says so)
        return "safetensors"
    pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # protocols 2 to 5
    if head.startswith(b"PK\x03\x04") or pickle:
        return "torch"
    return None


@contextmanager
def named(what: str) -> Iterator[None]:
    """Prefix `what` (e.g. "model 'my_cnn'") to a PluginError raised inside: the job's error
    then names the model as well as the module's file."""
    try:
        yield
    except PluginError as error:
        raise PluginError(f"{what}: {error}") from error
