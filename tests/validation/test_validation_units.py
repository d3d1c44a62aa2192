"""Unit tests of the pieces: config parsing, the row mask, the leak rule, the GX boundary."""

from __future__ import annotations

import socket

import numpy as np
import polars as pl
import pytest

from prefalign.core.schema import PAIRS_SCHEMA
from prefalign.core.validation import parse_validation_config, validate_pairs
from prefalign.core.validation.checks import (
    _prompt_split_leak,
    check_frame,
    failed_expectations_per_row,
    quarantine_fractions,
)
from prefalign.core.validation.config import ExpectationSpec
from prefalign.core.validation.gx_suite import columns_named, run_expectations, to_gx_pandas
from tests.validation.pairs_factory import base_params, good_pairs


def test_mask_lists_every_failed_expectation_in_suite_order():
    mask = failed_expectations_per_row(5, {"a": np.array([3, 1]), "b": np.array([1]), "c": np.array([], np.int64)})
    assert mask.to_list() == [[], ["a", "b"], [], ["a"], []]


def test_mask_rejects_positions_outside_the_table():
    with pytest.raises(ValueError, match="out of range 0..1"):
        failed_expectations_per_row(2, {"a": np.array([2])})


def test_leak_keeps_the_majority_split_and_breaks_ties_train_first():
    frame = pl.DataFrame(
        {
            "prompt_id": ["p", "p", "p", "q", "q", "r"],
            "split": ["test", "test", "train", "val", "train", "val"],
        }
    )
    # p: 2x test beats 1x train; q: 1-1 tie -> train kept; r: one split, no leak.
    assert _prompt_split_leak(frame, "").to_list() == [False, False, True, True, False, False]


def test_derived_columns_hand_computed():
    frame = pl.DataFrame(
        {"prompt": ["ab", "  ", None], "chosen": ["x\x07", "y", "z"], "rejected": ["x\x07", "w", "z"], "pair_id": ["i", "i", None]}
    )
    check = check_frame(
        frame,
        ["prompt_chars", "prompt_is_blank", "chosen_has_control_chars", "chosen_equals_rejected", "pair_id_is_repeat"],
        r"[\x00-\x08]",
    )
    assert check.to_dict(as_series=False) == {
        "prompt_chars": [2, 2, None],
        "prompt_is_blank": [False, True, None],
        "chosen_has_control_chars": [True, False, False],
        "chosen_equals_rejected": [True, False, True],
        "pair_id_is_repeat": [False, True, None],
    }


def test_check_frame_names_an_unknown_column():
    with pytest.raises(ValueError, match=r"\['prompt_tokens'\].*derived check columns"):
        check_frame(good_pairs(2), ["prompt_tokens"], "x")


def test_only_named_columns_cross_into_gx():
    specs = [
        ExpectationSpec("a", "ExpectColumnValuesToBeBetween", {"column": "p_chosen", "min_value": 0.5}),
        ExpectationSpec(
            "b",
            "ExpectColumnValuesToNotBeNull",
            {"column": "margin", "row_condition": {"type": "comparison", "column": {"name": "signal"}, "operator": "!=", "parameter": "binary"}},
        ),
        ExpectationSpec("c", "ExpectColumnPairValuesToBeEqual", {"column_A": "chosen_chars", "column_B": "rejected_chars"}),
    ]
    assert columns_named(specs, list(PAIRS_SCHEMA)) == ["p_chosen", "margin", "signal", "chosen_chars", "rejected_chars"]


def test_quarantine_fractions_hand_computed():
    checked = pl.DataFrame({"source": ["a", "a", "a", "b"], "failed_expectations": [["x"], [], [], []]})
    overall, per_source = quarantine_fractions(checked)
    assert overall == 0.25
    assert per_source == {"a": {"rows": 3, "quarantined": 1, "fraction": 1 / 3}, "b": {"rows": 1, "quarantined": 0, "fraction": 0.0}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expectations": {"x": {"type": "ExpectNoSuchThing", "kwargs": {"column": "p_chosen"}}}}, "ExpectNoSuchThing.*is not a Great Expectations"),
        ({"expectations": {"x": {"type": "ExpectColumnValuesToBeBetween", "kwargs": {"colum": "p_chosen"}}}}, r"validation.expectations.x \(ExpectColumnValuesToBeBetween\) has invalid kwargs"),
        ({"expectations": {"x": {"kwargs": {}}}}, "validation.expectations.x must have a `type`"),
        ({"max_quarantine_fraction": {"overall": 1.5, "per_source": 0.1}}, r"max_quarantine_fraction.overall must be in \[0, 1\], got 1.5"),
        ({"source_row_bounds": {"hh_rlhf": {"min": 5, "max": 2}}}, "hh_rlhf: min 5 is above max 2"),
    ],
)
def test_bad_config_names_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        validate_pairs(good_pairs(2), parse_validation_config(base_params(**change)))


def test_an_expectation_set_to_null_is_dropped_and_a_new_one_added():
    params = base_params()
    params["expectations"] = {**params["expectations"], "p_chosen_in_range": None,
                              "confident": {"type": "ExpectColumnValuesToBeBetween", "kwargs": {"column": "p_chosen", "min_value": 0.65}}}
    frame = good_pairs(5).with_columns(pl.when(pl.int_range(pl.len()) == 0).then(1.5).otherwise(pl.col("p_chosen")).alias("p_chosen"))
    checked, results = validate_pairs(frame, parse_validation_config(params))
    names = [e["name"] for e in results["expectations"]]
    assert "p_chosen_in_range" not in names and "confident" in names
    # row 0 has 1.5 (no longer checked); p_chosen 0.6 rows (i % 5 == 0 for non-binary sources) fail `confident`.
    expected = [["confident"] if (p < 0.65) else [] for p in frame["p_chosen"].to_list()]
    assert checked["failed_expectations"].to_list() == expected
    assert checked["failed_expectations"][0].to_list() == []


def test_gx_runs_without_touching_the_network(monkeypatch):
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"network disabled in this test: tried {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    spec = ExpectationSpec("p", "ExpectColumnValuesToBeBetween", {"column": "p_chosen", "min_value": 0.5, "max_value": 1.0})
    outcome = run_expectations(pl.DataFrame({"p_chosen": [0.7, 0.2]}), [spec])[0]
    assert outcome.unexpected_rows.tolist() == [1]
    assert attempts == []


def test_gx_frame_uses_the_dtypes_gx_vectorises():
    frame = pl.DataFrame({"n": pl.Series([1, 2], dtype=pl.UInt32), "x": pl.Series([0.5, None], dtype=pl.Float32), "s": ["a", "b"]})
    converted = to_gx_pandas(frame)
    assert [str(t) for t in converted.dtypes] == ["int64", "float64", "category"]
    assert converted["s"].tolist() == ["a", "b"]


def test_the_validation_check_and_the_schema_rule_flag_the_same_prompt_messages():
    """One rule for chat turns (core/schema.py prompt_messages_problem): the validation's derived column
    is True exactly where the rule names no problem, null where the value is null."""
    from prefalign.core.schema import MESSAGES_DTYPE, prompt_messages_problem, prompt_messages_valid
    from prefalign.core.validation.checks import check_frame

    values = [
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],  # valid
        [],  # empty
        [{"role": "bot", "content": "a"}],  # unknown role
        [{"role": "user", "content": "a"}, {"role": "user", "content": None}],  # turn 1 has no text
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],  # ends with the assistant
        None,
    ]
    frame = pl.DataFrame({"prompt_messages": values}, schema={"prompt_messages": MESSAGES_DTYPE})
    assert check_frame(frame, ["prompt_messages_valid"], r"\x00")["prompt_messages_valid"].to_list() == \
        [True, False, False, False, False, None]
    problems = frame.select(prompt_messages_problem()).to_series()
    assert frame.select(prompt_messages_valid()).to_series().to_list() == [True, False, False, False, False, None]
    assert problems.to_list() == [
        None,
        "prompt_messages is empty (expected at least one user turn)",
        "prompt_messages[0] has role 'bot', expected one of ['system', 'user', 'assistant']",
        "prompt_messages[1] has no text content",
        "prompt_messages ends with a 'assistant' turn; the last turn of a prompt must be 'user'",
        "prompt_messages is empty (expected at least one user turn)",
    ]
