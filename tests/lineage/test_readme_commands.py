"""Every command that README.md marks `# checked in CI` runs as written, through Kedro's
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

README = REPO_ROOT / "README.md"
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
        "kedro run --env ci --pipelines feedback",
        "kedro run --env ci --pipelines reward --namespaces reward_gpm",
        "kedro run --env ci --pipelines feedback --params feedback.split.salt=another-split",
        "kedro run --env ci --pipelines validation --load-versions=pairs:<timestamp>",
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
        # `kedro run --pipelines X` in-process leaves Kedro's lazy registry filtered to X; later tests need all.
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


# Every `kedro run ...` the README and the docs show, checked without running it: Kedro's own `run`
# command parses it, and each name it uses (pipeline, namespace, parameter key, versioned dataset,
# environment) exists in this project. Catches a renamed key or a typo in the docs.
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def documented_run_commands() -> list[tuple[str, str]]:
    """(document, command) for every `kedro run ...` in a code span or a code block line."""
    found = []
    for document in DOCUMENTS:
        # a shell continuation (`\` at the end of a line) joins the command's lines
        for line in re.sub(r"\\\n\s*", " ", document.read_text()).splitlines():
            for match in re.finditer(r"(?:^|`|&& )(kedro run\b[^`#\n]*)", line):
                command = match.group(1).strip()
                if "<" not in command:  # placeholders such as <timestamp> are checked by running them above
                    found.append((document.name, command))
    return found


def _runtime_only_params() -> set[str]:
    names = set()
    for catalog in (REPO_ROOT / "conf" / "base").glob("catalog*.yml"):
        names |= set(re.findall(r"\$\{runtime_params:([A-Za-z_][\w.]*)", catalog.read_text()))
    return names


def _has_key(params: dict, dotted: str) -> bool:
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_documented_kedro_run_commands_name_real_things():
    from kedro.config import OmegaConfigLoader
    from kedro.framework.cli.project import run as run_command
    from kedro.framework.project import configure_project

    from prefalign.pipeline_registry import register_pipelines
    from prefalign.settings import CONFIG_LOADER_ARGS

    commands = documented_run_commands()
    assert len(commands) >= 10, f"found only {commands}"
    configure_project("prefalign")
    registry = register_pipelines()
    runtime_only = _runtime_only_params()
    problems = []
    for document, command in commands:
        context = run_command.make_context("run", shlex.split(command)[2:])  # raises on an unknown option
        options = context.params
        env = options.get("env") or "local"
        if not (REPO_ROOT / "conf" / env).is_dir() and env != "local":
            problems.append(f"{document}: `{command}`: no conf/{env}")
            continue
        loader = OmegaConfigLoader(conf_source=str(REPO_ROOT / "conf"), env=env, **CONFIG_LOADER_ARGS)
        parameters, catalog = loader["parameters"], loader["catalog"]
        names = [options["pipeline"]] if options.get("pipeline") else (options.get("pipelines") or ["__default__"])
        for name in names:
            if name not in registry:
                problems.append(f"{document}: `{command}`: no pipeline {name!r}")
        namespaces = {n.namespace.split(".")[0] for name in names if name in registry for n in registry[name].nodes if n.namespace}
        for namespace in options.get("namespaces") or []:
            if namespace not in namespaces:
                problems.append(f"{document}: `{command}`: no namespace {namespace!r} in {names}")
        for dotted in _flatten(options.get("params") or {}):
            if dotted not in runtime_only and not _has_key(parameters, dotted):
                problems.append(f"{document}: `{command}`: no parameter {dotted!r} in env {env}")
        for dataset in options.get("load_versions") or {}:
            if not any(_matches(pattern, dataset) and catalog[pattern].get("versioned") for pattern in catalog):
                problems.append(f"{document}: `{command}`: {dataset!r} is not a versioned catalog dataset")
    assert not problems, "\n".join(problems)


def _flatten(params: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in params.items():
        dotted = f"{prefix}{key}"
        keys += _flatten(value, dotted + ".") if isinstance(value, dict) else [dotted]
    return keys


def _matches(pattern: str, name: str) -> bool:
    """A catalog key matches a dataset name exactly or as a `{placeholder}` factory pattern."""
    if "{" not in pattern:
        return pattern == name
    regex = re.escape(pattern)
    regex = re.sub(r"\\\{[^}]*\\\}", r"[^.]+", regex)
    return re.fullmatch(regex, name) is not None
