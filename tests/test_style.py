"""The code stays formatted and linted: ruff for Python, snakefmt for the workflow files."""

import shutil
import subprocess
import sys

import pytest
from workflow_helpers import REPO

CHECKS = {
    "ruff lint": [sys.executable, "-m", "ruff", "check", "."],
    "ruff format": [sys.executable, "-m", "ruff", "format", "--check", "."],
    "snakefmt": ["snakefmt", "--check", "Snakefile", "rules"],
}


@pytest.mark.parametrize("name", CHECKS)
def test_code_is_clean(name):
    command = CHECKS[name]
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} is not installed: pip install -e '.[test]'")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
