"""User code and data named in the config: `module:callable` (a user architecture,
`models.<name>.architecture`; a user attribution method, `methods.<name>.function`), Captum class
names, and the files a run reads from outside (imported checkpoints, precomputed attributions).

Two sides, kept apart on purpose:
- at config time (the Snakefile) a module is only *found* (importlib's PathFinder, which reads
  directories, never executes a module, not even a package's __init__), its source hashed for the
  fingerprints and parsed (ast) to see that it defines the callable: a dry run imports no user
  code, and the rule params change exactly when the file does;
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

# `module:callable`, the module a dotted name (my_nets, lab.nets), the callable a name in it.
PLUGIN = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
PACKAGE_DIR = Path(__file__).resolve().parent


class PluginError(ValueError):
    """User code that cannot be found, imported or used; the message names the module's file."""


def is_plugin(name: Any) -> bool:
    """Whether `name` has the form `module:callable`."""
    return isinstance(name, str) and PLUGIN.fullmatch(name) is not None


def split_plugin(name: Any) -> tuple[str, str]:
    """('module', 'callable') of a `module:callable` text; PluginError if malformed."""
    if not is_plugin(name):
        raise PluginError(f"{name!r} is not 'module:callable' (e.g. my_attributions:edge_gradient)")
    module, _, attribute = name.partition(":")
    return module, attribute


def search_dirs() -> list[str]:
    """Where user modules are looked for first: the working directory of the run, then the
    entries of PYTHONPATH (then, when importing, the rest of sys.path: installed packages)."""
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return list(dict.fromkeys([os.getcwd(), *extra]))


def find_module_file(module: str, path: Iterable[str] | None = None) -> Path:
    """The source file of `module` (dotted: its packages are looked up level by level) as an
    import in a job would find it (on `path`, default `search_dirs()` then sys.path), without
    executing anything; PluginError when there is none or it is not Python source."""
    if path is None:
        dirs = search_dirs()
        locations = dirs + [entry for entry in sys.path if entry and entry not in dirs]
    else:
        dirs = locations = list(path)
    spec = None
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        spec = importlib.machinery.PathFinder.find_spec(name, locations)
        if spec is None:
            where = ", ".join(dirs)
            raise PluginError(
                f"module {module!r} not found: no module {name!r} in the working directory or "
                f"PYTHONPATH ({where}) or the installed packages"
            )
        locations = list(spec.submodule_search_locations or [])
        if depth < len(parts) and not locations:
            raise PluginError(
                f"module {module!r} not found: {spec.origin} is a module, not a package"
            )
    origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py") or not Path(origin).is_file():
        raise PluginError(
            f"module {module!r} ({origin or 'a namespace package'}) is not a Python source file: "
            "its source is what the fingerprints hash"
        )
    return Path(origin)


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes; cached by (path, size, mtime_ns): the Snakefile asks for the
    same file's hash once per job that depends on it."""
    status = Path(path).stat()
    return _sha256(str(Path(path).resolve()), status.st_size, status.st_mtime_ns)


def content_sha256(path: str | Path, names: Iterable[str] | None = None) -> str:
    """sha256 (hex) of a file's bytes (`file_sha256`); of a directory, over every file under it
    (or only the relative `names`) in sorted order, each as its relative name and its bytes'
    sha256."""
    path = Path(path)
    if names is None and path.is_file():
        return file_sha256(path)
    if names is not None:
        files = [path / name for name in sorted(names)]
    else:
        files = [file for file in sorted(path.rglob("*")) if file.is_file()]
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path).as_posix()}\0".encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def source_sha256(name: str, path: Iterable[str] | None = None) -> str:
    """sha256 of the source file of the module of `name` ('module' or 'module:callable'), found
    without importing it (`find_module_file`). Only that file: a module it imports in turn is not
    hashed."""
    return file_sha256(find_module_file(name.split(":")[0], path))


def _bound_names(body: list[ast.stmt], names: dict[str, str]) -> bool:
    """Record into `names` what each top-level statement of `body` binds: 'callable' (def,
    class), 'value' (a literal: number, text, list, dict, ...) or 'other'. False when the module
    binds names the source does not show (a star import, a module __getattr__, writes to
    globals() or exec)."""
    literals = (ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.JoinedStr)
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = "callable"
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            kind = "value" if isinstance(node.value, literals) else "other"
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for item in ast.walk(target):
                    if isinstance(item, ast.Name):
                        names[item.id] = kind
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return False
                names[(alias.asname or alias.name).split(".")[0]] = "other"
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for block in ("body", "orelse", "finalbody"):
                if not _bound_names(getattr(node, block, []), names):
                    return False
            for handler in getattr(node, "handlers", []):
                if not _bound_names(handler.body, names):
                    return False
        local = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        for item in ast.walk(node):
            if not local and isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
                names.setdefault(item.id, "other")  # for targets, with ... as, :=, under if/try
            if isinstance(item, ast.Call) and getattr(item.func, "id", None) in ("globals", "exec"):
                return False
    return "__getattr__" not in names


def check_plugin(name: str) -> Path:
    """At config time: the file of plug-in `name` (`module:callable`), found without running it;
    PluginError when `name` is malformed, the module is not found or does not parse, or it
    visibly does not define the callable or binds it to a literal (not callable)."""
    module, attribute = split_plugin(name)
    path = find_module_file(module)
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        raise PluginError(f"{path}, line {error.lineno}: syntax error: {error.msg}") from error
    names: dict[str, str] = {}
    if not _bound_names(tree.body, names):
        return path  # only importing it tells: the job checks
    if attribute not in names:
        defined = sorted(bound for bound, kind in names.items() if kind == "callable")
        raise PluginError(
            f"module {module!r} ({path}) defines no {attribute!r} (its functions and classes: "
            f"{', '.join(defined) or 'none'})"
        )
    if names[attribute] == "value":
        raise PluginError(f"{module}.{attribute} in {path} is a literal value, not callable")
    return path


def load_callable(name: str) -> tuple[Callable[..., Any], Path]:
    """In a job: import the module of `name` (`module:callable`) with the run's working directory
    and PYTHONPATH first on sys.path (a job forked from the warm worker inherits the worker's
    sys.path, not its own working directory and PYTHONPATH), and return (the callable, the
    module's file). A user module imported before in this process is imported again, so that the
    code that runs is the file as it is now. Every failure is a PluginError naming the module and
    its file."""
    module_name, attribute = split_plugin(name)
    for entry in reversed(search_dirs()):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    importlib.invalidate_caches()  # a module written since the path's directories were listed
    parts = module_name.split(".")
    for dotted in (".".join(parts[:depth]) for depth in range(1, len(parts) + 1)):
        if _user_module(sys.modules.get(dotted)):
            del sys.modules[dotted]
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - importing user code can raise anything
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


def _user_module(module: Any) -> bool:
    """Whether `module` (a loaded module or None) was loaded from a file under `search_dirs()`
    (not the diffroar package, whose folder is on PYTHONPATH too)."""
    file = getattr(module, "__file__", None)
    if not file or Path(file).resolve().parent == PACKAGE_DIR:
        return False
    resolved = Path(file).resolve()
    return any(resolved.is_relative_to(Path(entry).resolve()) for entry in search_dirs())


def captum_names() -> list[str] | None:
    """The public names of captum.attr (its `__all__`, read from its source without importing
    torch), or None when that cannot be read (the job then checks the name)."""
    try:
        package = importlib.machinery.PathFinder.find_spec("captum", sys.path)
        root = Path(next(iter(package.submodule_search_locations)))
        tree = ast.parse((root / "attr" / "__init__.py").read_text())
    except (AttributeError, TypeError, StopIteration, OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(target, "id", None) == "__all__" for target in node.targets
        ):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                return None
    return None


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
