"""Checks that run before the first node (issue 23 items 6, 8, 9b): a user table that names no file,
a file in the tables folder that no source reads, and inputs that do not exist (an environment
that trained only reward models, asked to evaluate the policies too). In-process Kedro sessions on
private copies of the project; `kedro run` prints the same message as one `Error:` line
(tests/lineage/test_fail_fast.py checks that form)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from .project_copy import copy_project


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(project: Path, pipelines: list[str], params: dict | None = None, **run_kwargs):
    from kedro.framework.project import pipelines as registry
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.runner import SequentialRunner

    bootstrap_project(project)
    try:
        with KedroSession.create(project_path=project, env="ci", runtime_params=params) as session:
            return session.run(pipeline_names=pipelines, runner=SequentialRunner(), **run_kwargs)
    finally:
        registry.set_requested(None)  # the run left Kedro's lazy registry filtered


def _my_table(**overrides) -> dict:
    block = {"parser": "preference_table", "table": "my_prefs.csv", "feedback": "human", "signal": "binary"}
    return {"feedback": {"sources": {"my_prefs": {**block, **overrides}}}}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = copy_project(tmp_path / "project")
    tables = project / "data" / "01_raw" / "tables"
    tables.mkdir()
    (tables / "my_prefs.csv").write_text("prompt,chosen,rejected\nHi?,Hello! How can I help?,Go away.\n")
    monkeypatch.chdir(project)
    return project


def test_a_table_error_stops_the_run_before_any_node(project: Path):
    from prefalign.hooks import InvalidParameters

    before = _files(project / "data")
    with pytest.raises(InvalidParameters) as raised:
        _run(project, ["feedback"], _my_table(table="my_prefs.cvs"))
    assert str(raised.value) == ("invalid parameters, nothing was run: feedback.sources.my_prefs.table='my_prefs.cvs': "
                                 f"no such file or folder under {project / 'data/01_raw/tables'} (did you mean 'my_prefs.csv'?)")
    with pytest.raises(InvalidParameters, match=r"^invalid parameters, nothing was run: feedback.sources.my_prefs: "
                                                 r"a score_gap preference_table needs "
                                                 r"columns.score_chosen and columns.score_rejected, or columns.margin$"):
        _run(project, ["feedback"], _my_table(signal="score_gap", gamma=0.5))
    assert _files(project / "data") == before  # no dataset version was written


def test_a_table_no_source_reads_is_named_in_a_warning(project: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="prefalign")
    _run(project, ["feedback"])  # the block is missing: as a conf/local block is under --env ci
    warnings = [r.getMessage() for r in caplog.records if r.name == "prefalign" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"1 file(s) in {project / 'data/01_raw/tables'} are read by no source: my_prefs.csv. "
        "Add a `parser: preference_table` block"), warnings
    assert "--env ci" in warnings[0]
    caplog.clear()
    outputs = _run(project, ["feedback"], _my_table())  # with its block: read, and no warning
    assert not [r for r in caplog.records if r.name == "prefalign" and r.levelno == logging.WARNING]
    assert "my_prefs" in outputs["feedback_summary"].load()["sources"]


@pytest.fixture(scope="module")
def reward_only_project(trained_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained ci project (feedback, validation, reward): no policy was trained."""
    copy = tmp_path_factory.mktemp("reward_only") / "project"
    shutil.copytree(trained_project, copy, ignore=shutil.ignore_patterns("build", "notebooks", "mlruns"))
    assert not list((copy / "data" / "06_models").glob("policy_*"))
    return copy


def test_missing_inputs_are_named_before_the_first_node(reward_only_project: Path, monkeypatch: pytest.MonkeyPatch):
    from prefalign.hooks import InvalidParameters

    monkeypatch.chdir(reward_only_project)
    before = _files(reward_only_project / "data")
    with pytest.raises(InvalidParameters) as raised:
        _run(reward_only_project, ["evaluation"])
    from prefalign.core.objectives.registry import objectives

    # every registered policy (sft, dpo, mmpo, ipo, simpo, orpo, ..., gpo, gpo_bt): the evaluation reads them all
    policies = sorted(f"policy_{spec.name}.{dataset}" for spec in objectives("policy")
                      for dataset in ("model", "training_curve") if (spec.name, dataset) != ("sft", "training_curve"))
    assert str(raised.value) == (
        f"missing inputs, nothing was run: {', '.join(policies)} (no saved version or file). "
        "Make them with `kedro run --env ci --pipelines policy`. "
        "What can run now: `kedro run --env ci --pipelines evaluation_reward`")
    with pytest.raises(InvalidParameters) as raised:
        _run(reward_only_project, ["policy"], namespaces=["policy_dpo"])
    assert str(raised.value) == ("missing inputs, nothing was run: policy_sft.model (no saved version or file). "
                                 "Make it with `kedro run --env ci --pipelines policy --namespaces policy_sft`")
    assert _files(reward_only_project / "data") == before


@pytest.mark.slow
def test_the_reward_models_alone_are_evaluated(reward_only_project: Path, monkeypatch: pytest.MonkeyPatch):
    """The command the message and the README give for an environment without policies."""
    monkeypatch.chdir(reward_only_project)
    _run(reward_only_project, ["evaluation_reward"])
    reports = sorted((reward_only_project / "data" / "08_reporting" / "evaluation_metrics.json").iterdir())
    import json

    metrics = json.loads(next(reports[-1].iterdir()).read_text())
    assert {"reward_bt", "reward_mmpo", "reward_gpm", "reward_gpm_synthetic"} <= set(metrics["models"])
    assert not [name for name in metrics["models"] if name.startswith("policy_")]
