"""ruff and mypy are part of the suite, so CI holds the code to them."""

import shutil
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.lint


def _tool(name):
    path = shutil.which(name, path=str(REPO / ".venv" / "bin")) or shutil.which(name)
    return [path] if path else [sys.executable, "-m", name]


def test_ruff_clean():
    result = subprocess.run(
        [*_tool("ruff"), "check", "src", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_clean():
    result = subprocess.run(
        [*_tool("ruff"), "format", "--check", "src", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean():
    result = subprocess.run([*_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
