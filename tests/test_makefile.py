"""`make demo` / `make test` install only when pyproject.toml or the pinned constraints changed,
and always with the constraints of their combination (checked with `make -n`: nothing runs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def dry_run(target: str, venv: Path) -> str:
    return subprocess.run(["make", "-n", "-C", str(REPO), target, f"VENV={venv}"],
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture
def venv(tmp_path) -> Path:
    """A venv folder whose interpreter exists (as make sees it)."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    return tmp_path / "venv"


def test_install_uses_the_pinned_constraints(venv):
    commands = dry_run("install-test", venv)
    assert f"{venv}/bin/pip install --quiet -c constraints/py3.11-pandas2.txt -e \".[test]\"" \
        in commands
    assert (REPO / "constraints" / "py3.11-pandas2.txt").exists()
    assert (REPO / "constraints" / "py3.13-pandas3.txt").exists()


def test_nothing_is_reinstalled_when_nothing_changed(venv):
    for stamp in (".installed", ".installed-test"):
        (venv / stamp).touch()
    assert "pip install" not in dry_run("install", venv)
    assert "pip install" not in dry_run("install-test", venv)
    # A stamp older than pyproject.toml (it changed since): install again.
    old = (REPO / "pyproject.toml").stat().st_mtime - 60
    os.utime(venv / ".installed", (old, old))
    assert "pip install --quiet -c constraints/py3.11-pandas2.txt -e ." in dry_run("install", venv)
