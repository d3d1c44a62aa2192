"""Every command that docs/readme_draft.md marks `# checked in CI` runs as written, through Kedro's
own CLI (in-process, so the arguments are parsed exactly as on the command line), on a private
copy of the trained tiny project; then the effect each one promises is checked."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import polars as pl
import pytest

from .project_copy import REPO_ROOT

README = REPO_ROOT / "docs" / "readme_draft.md"
MARK = "checked in CI"


def checked_commands(markdown: str) -> list[str]:
    """The `kedro ...` commands of fenced blocks whose line ends with the mark (comment removed)."""
    commands, in_block = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block and line.rstrip().endswith(MARK) and line.startswith("kedro "):
            commands.append(line.split("#", 1)[0].strip())
    return commands


def test_the_readme_marks_the_commands_this_test_expects():
    commands = checked_commands(README.read_text())
    assert commands == [
        "kedro registry list",
        "kedro run --env ci --pipeline feedback",
        "kedro run --env ci --pipeline reward --namespaces reward_gpm",
        "kedro run --env ci --pipeline feedback --params feedback.split.salt=another-split",
        "kedro run --env ci --pipeline validation --load-versions=pairs:<timestamp>",
    ]


def _versions(project: Path, relative: str) -> list[str]:
    return sorted(p.name for p in (project / relative).iterdir())


def _latest(project: Path, relative: str) -> Path:
    folder = project / relative
    return next((folder / _versions(project, relative)[-1]).iterdir())


def test_readme_commands_run_as_written(trained_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture):
    from kedro.framework.cli.cli import KedroCLI
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    project = tmp_path / "project"
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("build", "notebooks"))
    monkeypatch.chdir(project)
    bootstrap_project(project)
    pairs_dir = "data/03_primary/pairs.parquet"
    first_pairs_version = _versions(project, pairs_dir)[0]
    models_before = len(_versions(project, "data/06_models/reward_gpm/model"))

    try:
        for command in checked_commands(README.read_text()):
            command = command.replace("<timestamp>", first_pairs_version)
            capsys.readouterr()
            KedroCLI(project_path=project).main(args=shlex.split(command)[1:], prog_name="kedro", standalone_mode=False)
            output = capsys.readouterr().out
            if command == "kedro registry list":
                for name in ("feedback", "validation", "reward", "policy", "evaluation"):
                    assert re.search(rf"\b{name}\b", output), f"`kedro registry list` does not list {name}"
    finally:
        # `kedro run --pipeline X` in-process leaves Kedro's lazy registry filtered to X; later tests need all.
        pipelines.set_requested(None)

    assert len(_versions(project, "data/06_models/reward_gpm/model")) == models_before + 1
    original = pl.read_parquet(next((project / pairs_dir / first_pairs_version).iterdir()))
    salted = pl.read_parquet(_latest(project, pairs_dir))
    validated = pl.read_parquet(_latest(project, "data/05_model_input/validated_pairs.parquet"))
    split_of = lambda frame: dict(zip(frame["pair_id"], frame["split"]))  # noqa: E731
    # --params reached the split: another salt moves some pairs to another split ...
    assert split_of(salted) != split_of(original)
    # ... and --load-versions validated the ORIGINAL pairs, not the newest ones.
    assert {pid: split for pid, split in split_of(original).items() if pid in split_of(validated)} == split_of(validated)
