"""The style guard: ruff (configured in pyproject.toml: line length 120, pyflakes and pycodestyle)
over the package, the tests and the notebooks' code cells."""
import shutil
import subprocess
import sys

from helpers.repro import PROJECT_ROOT


def ruff_command() -> list:
    beside = shutil.which("ruff", path=str(PROJECT_ROOT / ".venv" / "bin")) or shutil.which("ruff")
    return [beside] if beside else [sys.executable, "-m", "ruff"]


def test_ruff_finds_nothing_in_helpers_tests_and_notebooks():
    checked = subprocess.run([*ruff_command(), "check", "--no-cache", "helpers", "tests", "notebooks"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_guard_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nx = 1  " + "#" * 130 + "\n")
    checked = subprocess.run([*ruff_command(), "check", "--no-cache", "--config", str(PROJECT_ROOT / "pyproject.toml"),
                              str(bad)], capture_output=True, text=True)
    assert checked.returncode == 1 and "F401" in checked.stdout and "E501" in checked.stdout
