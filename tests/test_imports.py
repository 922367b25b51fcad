"""Job start-up: the command every rule runs (diffroar.client) needs no site-packages, a rule
script imports only diffroar.worker (the heavy imports are the warm worker's, done once); and
where a job runs in its own process (DIFFROAR_WORKER=0, Slurm, GPU jobs), a training job's
modules import neither torchvision, Captum nor matplotlib (together over 2 s of every job's
start-up on the 2-core machine; bench/ measures start-up)."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys

import pytest
from workflow_helpers import REPO

HEAVY = ("torchvision", "captum", "matplotlib")
# what the worker's server imports once so that no script has to
SERVER_ONLY = ("torch", "numpy", "zarr", "pandas", "matplotlib", "captum", "scipy")


def _loaded(module: str) -> str:
    probe = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout


def test_rule_scripts_import_only_the_worker():
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        imports = [
            node
            for node in ast.walk(ast.parse(script.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
        ]
        assert [(node.module, [a.name for a in node.names]) for node in imports] == [
            ("diffroar.worker", ["call"])
        ], script.name


def test_the_client_every_rule_runs_needs_no_site_packages():
    """`python -S -m diffroar.client`: the standard library and diffroar's own modules only."""
    probe = "import sys, diffroar.client; print(sorted(set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={**os.environ, "PYTHONPATH": str(REPO / "workflow")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    modules = {name.split(".")[0] for name in ast.literal_eval(loaded)}
    assert modules - {*sys.stdlib_module_names, *sys.builtin_module_names, "__main__"} == {
        "diffroar"
    }
    assert "diffroar.runtime" not in loaded and "diffroar.worker" not in loaded
    # hashlib would load OpenSSL's bindings (3 ms of every job): sha256 comes from CPython's own
    assert "'hashlib'" not in loaded and "'_hashlib'" not in loaded


def test_the_clients_server_key_is_the_sha256_hashlib_gives():
    from diffroar import client

    digest = client._sha256()
    digest.update(b"diffroar")
    assert digest.hexdigest() == hashlib.sha256(b"diffroar").hexdigest()


def test_the_worker_client_imports_no_numeric_library():
    loaded = _loaded("diffroar.worker")
    for heavy in SERVER_ONLY:
        assert f"'{heavy}'" not in loaded, f"diffroar.worker imports {heavy}"


@pytest.mark.parametrize("module", ["diffroar.train", "diffroar.retrain", "diffroar.mask"])
def test_training_and_masking_jobs_do_not_import_heavy_libraries(module):
    loaded = _loaded(module)
    for heavy in HEAVY:
        assert f"'{heavy}'" not in loaded, f"{module} imports {heavy}"


def test_a_resnet_still_builds_after_the_lazy_import():
    from diffroar.models import resnet18

    network = resnet18([3, 8, 8], 10)
    assert type(network).__name__ == "ResNet" and network.conv1.in_channels == 3
