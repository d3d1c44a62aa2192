"""Workaround until tests/conftest.py does it: bootstrap_project needs src/ inside the copied
project (kedro checks that it exists and resolves inside the project), so copy it there. The
package itself is still imported from the repository (pytest's pythonpath)."""

import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kedro_project(kedro_project: Path) -> Path:
    if not (kedro_project / "src").exists():
        shutil.copytree(PROJECT_ROOT / "src", kedro_project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return kedro_project
