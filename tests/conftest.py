"""Shared fixtures: run a real Kedro session on a throwaway copy of the project."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_leaked_transformers_patch():
    """Fail the test that leaves transformers' construction patches behind (and undo them), rather
    than the unrelated tests after it: a leaked no-op ``tie_weights`` unties every later model."""
    import torch
    from transformers import PreTrainedModel

    tie_weights, dtype = PreTrainedModel.__dict__["tie_weights"], torch.get_default_dtype()
    yield
    leaked = []
    if PreTrainedModel.__dict__["tie_weights"] is not tie_weights:
        PreTrainedModel.tie_weights = tie_weights
        leaked.append("PreTrainedModel.tie_weights is still transformers' no-op (models built since are untied)")
    if torch.get_default_dtype() != dtype:
        leaked.append(f"torch's default dtype is {torch.get_default_dtype()}, was {dtype}")
        torch.set_default_dtype(dtype)
    if leaked:
        pytest.fail("; ".join(leaked) + ": build and load models under core/models/loading.py's lock")


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of conf/, data/01_raw/ and pyproject.toml in tmp_path, made the working directory.

    Catalog paths are relative, so everything a run writes lands in tmp_path, never in the repo.
    """
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir(exist_ok=True)
    # bootstrap_project insists that <project>/src exists; the package itself is imported from
    # the repository (pytest's pythonpath), so an empty folder is enough.
    (project / "src").mkdir()
    shutil.copytree(PROJECT_ROOT / "data" / "01_raw", project / "data" / "01_raw")
    monkeypatch.chdir(project)
    return project


@pytest.fixture
def run_kedro(kedro_project: Path) -> Callable[..., dict[str, Any]]:
    """Run pipelines of the copied project in one session: run_kedro("feedback", env="ci")."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(kedro_project)

    def _run(pipeline_name: str | None = None, env: str = "ci", params: dict | None = None, **run_kwargs):
        with KedroSession.create(project_path=kedro_project, env=env, runtime_params=params or {}) as session:
            return session.run(pipeline_names=[pipeline_name] if pipeline_name else None, **run_kwargs)

    return _run
