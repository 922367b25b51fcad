"""The code stays formatted and linted (ruff, snakefmt) and the conda env matches pyproject."""

import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml
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


def test_conda_env_lists_the_dependencies_of_pyproject():
    def name(requirement: str) -> str:
        return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs" / "diffroar.yaml").read_text())
    conda_names = {name(dep) for dep in env["dependencies"] if isinstance(dep, str)}
    conda_names = {"torch" if n == "pytorch" else n for n in conda_names}
    assert {name(dep) for dep in project["dependencies"]} <= conda_names
