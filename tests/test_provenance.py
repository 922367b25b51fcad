"""Code and config fingerprints: which module edits rerun which stages."""

from __future__ import annotations

import importlib.util
import itertools
import shutil
from pathlib import Path

import pytest
from diffroar import provenance
from diffroar.provenance import config_fingerprint, module_closure

_copies = itertools.count()


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the diffroar package under tmp_path and provenance imported from that copy."""
    destination = tmp_path / "diffroar"
    shutil.copytree(
        provenance.PACKAGE_DIR, destination, ignore=shutil.ignore_patterns("__pycache__")
    )
    name = f"provenance_copy_{next(_copies)}"
    spec = importlib.util.spec_from_file_location(name, destination / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PACKAGE_DIR == destination.resolve()
    assert module.PACKAGE == "diffroar"
    return destination, module


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_closure_of_retrain_follows_imports_transitively():
    closure = module_closure("retrain")
    # retrain imports train, which imports data, which imports store.
    assert set(closure) >= {"retrain", "train", "models", "data", "store", "runtime"}
    assert "saliency" not in closure
    # a retrain job masks its dataset in memory
    assert {"mask", "imputation"} <= set(closure)
    assert closure == sorted(closure)


def test_closure_of_figures_excludes_training_code():
    closure = module_closure("figures")
    assert "figures" in closure
    assert {"runtime", "store"} <= set(closure)
    assert not {"train", "models", "data"} & set(closure)


def test_closure_of_localization_includes_mask_and_metrics():
    assert set(module_closure("localization")) >= {
        "localization",
        "mask",
        "metrics",
        "data",
        "store",
        "runtime",
    }


def test_closure_of_a_leaf_module_is_itself():
    assert module_closure("plugins") == ["plugins"]
    assert module_closure("architectures") == ["architectures", "plugins"]  # user builders
    assert module_closure("client") == ["client"]
    # a job's start time comes from the client's clock (the standard library only)
    assert module_closure("runtime") == ["client", "runtime"]
    assert module_closure("store") == ["client", "runtime", "store"]  # written atomically


def test_config_shares_only_its_light_tables_with_the_stages():
    # editing validation messages must not retrain models
    # (methodnames: the grammar of derived method names, which the saliency stage parses too;
    # units: what a keep fraction keeps, which the mask stage counts with too)
    assert module_closure("config") == [
        "architectures",
        "config",
        "datafiles",
        "methodnames",
        "plugins",
        "units",
    ]
    assert "config" not in module_closure("train")
    assert "config" not in module_closure("saliency")


def test_closure_of_unknown_module_raises():
    with pytest.raises(ValueError, match="nosuchstage"):
        module_closure("nosuchstage")


def test_closure_recognises_every_import_form(package_copy):
    directory, copy = package_copy
    (directory / "probe.py").write_text(
        "import os\n"
        "import diffroar.store\n"
        "from diffroar import models\n"
        "from diffroar.metrics import interval95\n"
        "from . import runtime\n"
        "from .config import format_k\n"
        "from diffroar import no_such_module\n"
    )
    assert copy.module_closure("probe") == [
        "architectures",
        "checks",  # metrics checks the JSON and tables it reads
        "client",  # runtime's clock
        "config",
        "datafiles",
        "imputation",  # metrics names the mask-only control
        "methodnames",  # config parses derived method names
        "metrics",
        "models",
        "plugins",  # models and config find, hash and import user code
        "probe",
        "provenance",  # metrics fingerprints the runs it aggregates
        "runtime",
        "store",
        "units",  # config's keep-fraction counts
    ]


def test_code_fingerprint_is_a_stable_hex_digest():
    first = provenance.code_fingerprint("retrain")
    assert len(first) == 16
    int(first, 16)
    assert provenance.code_fingerprint("retrain") == first
    assert provenance.code_fingerprint("figures") != first


def test_copy_fingerprint_equals_the_original(package_copy):
    _, copy = package_copy
    provenance.code_fingerprint.cache_clear()
    assert copy.code_fingerprint("retrain") == provenance.code_fingerprint("retrain")


def test_fingerprint_changes_when_a_module_in_the_closure_changes(package_copy):
    directory, copy = package_copy
    before = {stage: copy.code_fingerprint(stage) for stage in ("retrain", "train", "figures")}
    _append(directory / "store.py", "\n# an edit\n")
    copy.code_fingerprint.cache_clear()
    after = {stage: copy.code_fingerprint(stage) for stage in ("retrain", "train", "figures")}
    # store is imported, indirectly, by all three stages.
    for stage in before:
        assert after[stage] != before[stage], stage


def test_fingerprint_ignores_modules_outside_the_closure(package_copy):
    directory, copy = package_copy
    before = {stage: copy.code_fingerprint(stage) for stage in ("figures", "retrain", "train")}
    _append(directory / "train.py", "\n# an edit\n")
    copy.code_fingerprint.cache_clear()
    after = {stage: copy.code_fingerprint(stage) for stage in ("figures", "retrain", "train")}
    assert after["figures"] == before["figures"]
    assert after["retrain"] != before["retrain"]
    assert after["train"] != before["train"]


def test_fingerprint_follows_a_new_import(package_copy):
    directory, copy = package_copy
    before = copy.code_fingerprint("figures")
    _append(directory / "figures.py", "\nfrom .models import build_model  # noqa: E402\n")
    copy.code_fingerprint.cache_clear()
    assert "models" in copy.module_closure("figures")
    changed_import = copy.code_fingerprint("figures")
    assert changed_import != before
    # ... and now also follows edits of the newly imported module.
    _append(directory / "models.py", "\n# an edit\n")
    copy.code_fingerprint.cache_clear()
    assert copy.code_fingerprint("figures") != changed_import


def test_config_fingerprint_ignores_key_order():
    first = {"epochs": 3, "batch_size": 64, "nested": {"a": 1, "b": [1, 2]}}
    second = {"nested": {"b": [1, 2], "a": 1}, "batch_size": 64, "epochs": 3}
    assert config_fingerprint(first, "x") == config_fingerprint(second, "x")
    assert len(config_fingerprint(first)) == 16


@pytest.mark.parametrize(
    "other",
    [
        ({"epochs": 4, "batch_size": 64}, "x"),
        ({"epochs": 3, "batch_size": 32}, "x"),
        ({"epochs": 3}, "x"),
        ({"epochs": 3, "batch_size": 64}, "y"),
        ("x", {"epochs": 3, "batch_size": 64}),
        ({"epochs": 3, "batch_size": 64},),
        ({"epochs": [3], "batch_size": 64}, "x"),
    ],
)
def test_config_fingerprint_differs_for_different_values(other):
    reference = config_fingerprint({"epochs": 3, "batch_size": 64}, "x")
    assert config_fingerprint(*other) != reference
