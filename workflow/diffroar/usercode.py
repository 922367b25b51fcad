"""Find, fingerprint and import the user's code and data that a config names (`module:callable`,
precomputed files), for the config check and the jobs.

The config check finds a module's file and hashes it WITHOUT executing the module (importlib's
PathFinder, ast), so that a dry run imports no user code and the rule params change exactly when
the file does. A job imports it from the run's working directory and PYTHONPATH (`load_callable`):
the warm worker (diffroar.worker) forks its jobs from a process that never imports user code, so
an edited module is always the one a job runs.

Imported by the Snakefile (through diffroar.config): the standard library only, no torch.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.machinery
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# `module:callable`: a dotted module name, a colon, a dotted attribute path inside it.
CALLABLE_SPEC = re.compile(
    r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
    r"(\.[A-Za-z_][A-Za-z0-9_]*)*\Z"
)
PACKAGE_DIR = Path(__file__).resolve().parent
_hashes: dict[tuple, str] = {}  # (path, size and mtime of its files) -> sha256


def user_path(cwd: str | None = None, environ: dict[str, str] | None = None) -> list[str]:
    """Where the user's modules live: the run's working directory, then the entries of
    PYTHONPATH."""
    environ = os.environ if environ is None else environ
    entries = [cwd or os.getcwd(), *filter(None, environ.get("PYTHONPATH", "").split(os.pathsep))]
    return list(dict.fromkeys(entries))


def search_path(cwd: str | None = None, environ: dict[str, str] | None = None) -> list[str]:
    """Where user modules are found, first match wins: `user_path`, then the interpreter's own
    path (site-packages), as a job imports them (`load_callable`)."""
    return list(dict.fromkeys([*user_path(cwd, environ), *filter(None, sys.path)]))


def split_spec(spec: str) -> tuple[str, str]:
    """('module', 'attribute.path') of a `module:callable` text; ValueError if malformed."""
    if not isinstance(spec, str) or not CALLABLE_SPEC.fullmatch(spec):
        raise ValueError(f"{spec!r} is not 'module:callable' (e.g. my_attributions:edge_gradient)")
    module, _, attribute = spec.partition(":")
    return module, attribute


def module_file(module: str, path: Iterable[str] | None = None) -> Path:
    """The source (or extension) file of `module` (dotted names: its packages are looked up
    level by level) on `path` (default `search_path()`), found without importing anything.
    ModuleNotFoundError naming what was searched."""
    locations = list(search_path() if path is None else path)
    found, parts = None, module.split(".")
    for depth in range(len(parts)):
        name = ".".join(parts[: depth + 1])
        found = importlib.machinery.PathFinder.find_spec(name, locations)
        if found is None:
            searched = ", ".join(locations[:4]) + (", ..." if len(locations) > 4 else "")
            raise ModuleNotFoundError(f"no module {name!r} in {searched}")
        if depth < len(parts) - 1:
            if found.submodule_search_locations is None:
                raise ModuleNotFoundError(f"{name!r} ({found.origin}) is a module, not a package")
            locations = list(found.submodule_search_locations)
    if found.origin is None or not Path(found.origin).is_file():
        raise ModuleNotFoundError(f"{module!r} is a namespace package: no file to import")
    return Path(found.origin)


def _signature(path: Path) -> tuple:
    """(relative name, size, mtime_ns) of the file at `path`, or of every file under it."""
    if path.is_file():
        status = path.stat()
        return (("", status.st_size, status.st_mtime_ns),)
    return tuple(
        (file.relative_to(path).as_posix(), file.stat().st_size, file.stat().st_mtime_ns)
        for file in sorted(path.rglob("*"))
        if file.is_file()
    )


def content_sha256(path: str | Path, names: Iterable[str] | None = None) -> str:
    """sha256 (hex) of a file's bytes; of a directory, over every file under it (or only the
    relative `names`) in sorted relative-path order, each as its name and its bytes' sha256.
    Cached per process by the files' sizes and modification times (the Snakefile asks for the
    same hash once per job that depends on it)."""
    path = Path(path)
    if names is not None:
        files = [path / name for name in sorted(names)]
        key = (str(path), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    else:
        key = (str(path), _signature(path))
        files = [path] if path.is_file() else [path / name for name, *_ in key[1]]
    if key not in _hashes:
        if path.is_file() and names is None:
            _hashes[key] = _file_sha256(path)
        else:
            digest = hashlib.sha256()
            for file in files:
                digest.update(f"{file.relative_to(path).as_posix()}\0".encode())
                digest.update(_file_sha256(file).encode())
            _hashes[key] = digest.hexdigest()
    return _hashes[key]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bound_names(body: list[ast.stmt], names: dict[str, str]) -> bool:
    """Record into `names` what each top-level statement of `body` binds: 'callable' (def,
    class), 'value' (a literal: number, text, list, dict, ...) or 'other'. False when the module
    binds names the source does not show (a star import, or writes to globals())."""
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
            for item in ast.walk(node):
                if isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
                    names.setdefault(item.id, "other")
        for item in ast.walk(node):
            if isinstance(item, ast.Call) and getattr(item.func, "id", None) in ("globals", "exec"):
                return False
    return True


def callable_problem(spec: str, path: Iterable[str] | None = None) -> str | None:
    """What is wrong with `spec` ('module:callable') as far as its module's source tells without
    running it: no such module, a syntax error, no such name, or a name bound to a literal
    (not callable); None when nothing is (the job imports it and checks the rest)."""
    try:
        module, attribute = split_spec(spec)
        file = module_file(module, path)
    except (ValueError, ModuleNotFoundError) as error:
        return str(error)
    if file.suffix != ".py":
        return None  # an extension module: only importing it tells
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except SyntaxError as error:
        return f"{file} does not parse: {error.msg} (line {error.lineno})"
    names: dict[str, str] = {}
    if not _bound_names(tree.body, names):
        return None
    first = attribute.split(".")[0]
    if first not in names:
        defined = sorted(name for name, kind in names.items() if kind == "callable")
        return (
            f"{file} defines no {first!r} (its functions and classes: "
            f"{', '.join(defined) or 'none'})"
        )
    if names[first] == "value" and first == attribute:
        return f"{module}.{first} in {file} is a literal value, not callable"
    return None


def source_sha256(spec: str, path: Iterable[str] | None = None) -> str:
    """sha256 of the file of the module of `spec` ('module:callable'), found without importing.
    It covers that file alone, not the modules it imports."""
    return content_sha256(module_file(split_spec(spec)[0], path))


def load_callable(spec: str) -> Any:
    """Import `spec`'s module with `user_path()` first on sys.path (a job forked from the warm
    worker inherits the worker's sys.path, not its own working directory and PYTHONPATH) and
    return the attribute. A module imported before in this process is imported again, so that
    the code that runs is the file as it is now. Raises what importing raises, AttributeError
    for a missing name."""
    module_name, attribute = split_spec(spec)
    for entry in reversed(user_path()):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    importlib.invalidate_caches()
    parts = module_name.split(".")
    for name in (".".join(parts[: depth + 1]) for depth in range(len(parts))):
        if _user_module(sys.modules.get(name)):
            del sys.modules[name]
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def _user_module(module: Any) -> bool:
    """Whether `module` (a loaded module or None) was loaded from a file under `user_path()`
    (not the diffroar package, whose folder is on PYTHONPATH too)."""
    file = getattr(module, "__file__", None)
    if not file or Path(file).resolve().parent == PACKAGE_DIR:
        return False
    return any(Path(file).resolve().is_relative_to(Path(entry).resolve()) for entry in user_path())


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
