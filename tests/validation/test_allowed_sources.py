"""Validation's allowed sources come from the feedback configuration, not a hand-kept copy (issue 13)."""

from __future__ import annotations

import polars as pl
import pytest
import yaml

from prefalign.core.schema import PAIRS_SCHEMA
from prefalign.core.validation import parse_validation_config
from prefalign.pipelines.validation.nodes import check_pairs
from tests.conftest import PROJECT_ROOT
from tests.validation.pairs_factory import good_pair, good_pairs


def _shipped_validation_params() -> dict:
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_validation.yml").read_text())["validation"]
    params["source_row_bounds"] = {}
    return params


def test_the_shipped_suite_names_no_source_by_hand():
    body = _shipped_validation_params()["expectations"]["source_allowed"]
    assert body["kwargs"]["value_set"] == "feedback_sources"


def test_a_new_feedback_source_is_allowed_and_an_unknown_one_quarantined():
    frame = pl.concat([good_pairs(5), pl.DataFrame([good_pair(777, "my_new_table"), good_pair(778, "mystery")], schema=PAIRS_SCHEMA)])
    sources = {s: {} for s in ("ultrafeedback", "hh_rlhf", "synthetic_scalar", "my_new_table")}
    params = _shipped_validation_params() | {"max_quarantine_fraction": {"overall": 1.0, "per_source": 1.0}}
    checked, _ = check_pairs(frame, params, sources)
    failed = dict(zip(checked["source"], checked["failed_expectations"].to_list()))
    assert "source_allowed" not in failed["my_new_table"] and "source_allowed" in failed["mystery"]


def test_the_placeholder_without_sources_names_the_problem():
    with pytest.raises(ValueError, match="value_set is 'feedback_sources', but the feedback.sources parameters were not given"):
        parse_validation_config(_shipped_validation_params())
