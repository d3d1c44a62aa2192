"""Local fix-up of the shared fixture: kedro's bootstrap_project needs <project>/src to exist.

The shared `kedro_project` copies conf/, data/01_raw/ and pyproject.toml but not src/, so
bootstrap_project fails with "Source path ... cannot be found". An empty src/ is enough: the
package is imported from the repository (pytest's pythonpath = ["src"]); a symlink would not do,
kedro resolves it outside the project. (The lead may fold this into tests/conftest.py.)
"""

from pathlib import Path

import pytest

@pytest.fixture
def kedro_project(kedro_project: Path) -> Path:
    (kedro_project / "src").mkdir(exist_ok=True)
    return kedro_project
