"""Helpers for the lineage tests: a tmp copy of the project and the environment of child processes."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC = REPO_ROOT / "src"
# What the notebooks need: pairs and the validation outputs, and every reward checkpoint.
TRAINED_PIPELINES = ["feedback", "validation", "reward"]


def copy_project(destination: Path) -> Path:
    """conf/ (without local), data/01_raw/, pyproject.toml, notebooks/ and an empty src/ (Kedro wants it)."""
    destination.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "pyproject.toml", destination / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir()
    (destination / "src").mkdir()
    shutil.copytree(REPO_ROOT / "data" / "01_raw", destination / "data" / "01_raw")
    shutil.copytree(REPO_ROOT / "notebooks", destination / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return destination


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a kedro / kernel child process: repository src on the path, no telemetry."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"KEDRO_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}, **extra)
    env.pop("MPLBACKEND", None)  # notebook kernels pick matplotlib's inline backend only when this is unset
    return env


RUN_LOG = "prefalign_run.log"  # what the project's own logger said during the trained run


class RunLog(logging.Handler):
    """Keeps the messages of the `prefalign` logger (the node summary hook and the pipelines)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage().replace("\n", " "))
