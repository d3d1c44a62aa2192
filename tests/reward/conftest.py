from pathlib import Path

import pytest


@pytest.fixture
def kedro_project(kedro_project: Path) -> Path:
    """The shared fixture plus an empty src/: bootstrap_project insists that <project>/src exists
    (the package itself is imported from the repository's src via pytest's pythonpath)."""
    (kedro_project / "src").mkdir(exist_ok=True)
    return kedro_project
