"""Local workarounds for the shared tests/conftest.py (reported to the lead; drop once fixed there)."""

from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

# The shared kedro_project fixture copies data/01_raw, which the feedback branch creates; until
# it is merged, make sure the (empty, git-ignored-when-empty) folder exists.
(PROJECT_ROOT / "data" / "01_raw").mkdir(parents=True, exist_ok=True)


@pytest.fixture
def kedro_project(kedro_project: Path) -> Path:
    """The shared tmp project plus an empty src/: bootstrap_project refuses a project without one.

    The package itself is imported from the repository (pytest's pythonpath, or the installed copy).
    """
    (kedro_project / "src").mkdir(exist_ok=True)
    return kedro_project
