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


def _shipped_sources() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_feedback.yml").read_text())["feedback"]["sources"]


def test_row_bounds_follow_the_enabled_sources():
    """Your own table alone (every shipped source `enabled: false`, issue 23 item 8b): the shipped
    row bounds (at least one row of each of the 10 real sources) do not stop the run; a source that
    is enabled and yields nothing still does."""
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_validation.yml").read_text())["validation"]
    shipped = _shipped_sources()
    assert sum(1 for bound in params["source_row_bounds"].values() if bound["min"] >= 1) == 10
    mine = pl.DataFrame([good_pair(i, "my_prefs") for i in range(20)], schema=PAIRS_SCHEMA)
    alone = {name: {**body, "enabled": False} for name, body in shipped.items()} | {"my_prefs": {"parser": "preference_table"}}
    _, results = check_pairs(mine, params, alone)
    assert results["passed"], results["failures"]
    assert not [e for e in results["expectations"] if e["name"].startswith("row_count[")]
    # one shipped source switched back on: its bound is checked again (0 rows < min 1)
    _, results = check_pairs(mine, params, alone | {"hh_rlhf": shipped["hh_rlhf"]})
    assert [f.split(" ")[0] for f in results["failures"]] == ["row_count[hh_rlhf]"]


def test_splits_feedback_kinds_and_signals_are_the_codes_own_lists():
    """Issue 21: the suite names no split, feedback kind or signal by hand; each set is core/schema.py's."""
    from prefalign.core.schema import ALL_SPLITS, FEEDBACK_KINDS, SIGNALS

    shipped = _shipped_validation_params()
    by_name = {spec.name: spec for spec in parse_validation_config(shipped, ["ultrafeedback"]).expectations}
    for name, word, expected in [("split_allowed", "splits", ["train", "val", "test", "heldout"]),
                                 ("feedback_allowed", "feedback_kinds", ["human", "ai", "synthetic"]),
                                 ("signal_allowed", "signals", ["score_gap", "judge_prob", "votes", "binary", "ground_truth"])]:
        assert shipped["expectations"][name]["kwargs"]["value_set"] == word
        assert by_name[name].kwargs["value_set"] == expected
    assert list(ALL_SPLITS) == by_name["split_allowed"].kwargs["value_set"]
    assert list(FEEDBACK_KINDS) == by_name["feedback_allowed"].kwargs["value_set"]
    assert list(SIGNALS) == by_name["signal_allowed"].kwargs["value_set"]
