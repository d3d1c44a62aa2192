"""Slice tests of `kedro run --pipelines validation` on env ci, with pairs saved through the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.validation.pairs_factory import SOURCES, good_pairs


def _save_pairs(project: Path, frame: pl.DataFrame) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="ci") as session:
        session.load_context().catalog.save("pairs", frame)


def _latest(project: Path, relative: str) -> Path:
    versions = sorted((project / relative).iterdir())
    assert versions, f"nothing saved under {relative}"
    return versions[-1] / Path(relative).name




def _bounds_params(project: Path) -> None:
    """Count only this test's three sources: the others are set to null (dropped) in the ci env."""
    base = yaml.safe_load((project / "conf" / "base" / "parameters_validation.yml").read_text())
    params = yaml.safe_load((project / "conf" / "ci" / "parameters_validation.yml").read_text())
    params["validation"]["source_row_bounds"] = {
        s: ({"min": 1, "max": 1000} if s in SOURCES else None) for s in base["validation"]["source_row_bounds"]
    }
    (project / "conf" / "ci" / "parameters_validation.yml").write_text(yaml.safe_dump(params))


def test_validation_pipeline_passes_good_rows_and_quarantines_bad(kedro_project, run_kedro):
    good = good_pairs(10)
    bad = good[:2].with_columns(pl.lit(0.1).alias("p_chosen"), pl.Series("pair_id", ["x", "y"]))
    _bounds_params(kedro_project)
    _save_pairs(kedro_project, pl.concat([good, bad]))

    run_kedro("validation", env="ci")

    validated = pl.read_parquet(_latest(kedro_project, "data/05_model_input/validated_pairs.parquet"))
    quarantined = pl.read_parquet(_latest(kedro_project, "data/02_intermediate/quarantined_pairs.parquet"))
    assert validated.equals(good)
    assert quarantined["pair_id"].to_list() == ["x", "y"]
    assert quarantined["failed_expectations"].to_list() == [["p_chosen_in_range"]] * 2
    assert validated.height + quarantined.height == good.height + bad.height
    results = json.loads(_latest(kedro_project, "data/08_reporting/validation_results.json").read_text())
    assert results["passed"] and results["rows"] == {"in": 32, "validated": 30, "quarantined": 2}
    report = _latest(kedro_project, "data/08_reporting/validation_report.md").read_text()
    assert "**Verdict: PASSED**" in report and "| p_chosen_in_range |" in report
    assert _latest(kedro_project, "data/08_reporting/validation_plot.png").stat().st_size > 1000


def test_validation_pipeline_stops_after_writing_the_report(kedro_project, run_kedro):
    _bounds_params(kedro_project)
    _save_pairs(kedro_project, good_pairs(10).filter(pl.col("source") != "hh_rlhf"))

    with pytest.raises(Exception, match=r"(?s)row_count\[hh_rlhf\].*observed 0.*20 in.*validation_report.md"):
        run_kedro("validation", env="ci")

    assert not (kedro_project / "data/05_model_input/validated_pairs.parquet").exists()
    report = _latest(kedro_project, "data/08_reporting/validation_report.md").read_text()
    assert "**Verdict: STOPPED**" in report and "row_count[hh_rlhf]" in report


def test_feedback_then_validation_on_the_shipped_samples(kedro_project, run_kedro):
    """The real hand-over: the feedback pipeline's pairs pass the contract, and the counts add up."""
    run_kedro("feedback", env="ci")
    run_kedro("validation", env="ci")

    pairs = pl.read_parquet(_latest(kedro_project, "data/03_primary/pairs.parquet"))
    validated = pl.read_parquet(_latest(kedro_project, "data/05_model_input/validated_pairs.parquet"))
    quarantined = pl.read_parquet(_latest(kedro_project, "data/02_intermediate/quarantined_pairs.parquet"))
    assert validated.height + quarantined.height == pairs.height > 0
    results = json.loads(_latest(kedro_project, "data/08_reporting/validation_results.json").read_text())
    assert results["passed"] and results["rows"]["in"] == pairs.height
    assert set(results["sources"]) == set(pairs["source"].unique())
