"""The bad-input corpus: each contract class gets the right rows quarantined with the right reason,
good rows pass untouched, counts reconcile, and a wrong table stops with a clear message."""

from __future__ import annotations

import polars as pl
import pytest

from prefalign.core.schema import PAIRS_SCHEMA, pair_id_of
from prefalign.core.validation import (
    FAILED_COLUMN,
    parse_validation_config,
    plot_distributions,
    render_markdown,
    split_checked,
    stop_message,
    validate_pairs,
)
from tests.validation.pairs_factory import base_params, good_pair, good_pairs


def _bad(i: int, **changes) -> dict:
    row = good_pair(90_000 + i)
    row.update(changes)
    if {"prompt", "chosen", "rejected"} & set(changes) and "pair_id" not in changes:
        texts = [row[c] if isinstance(row[c], str) else "" for c in ("prompt", "chosen", "rejected")]
        row["pair_id"] = pair_id_of(*texts)
    return row


# name -> (bad row, the reasons it must carry). One row per class; all checked in one GX run.
CORPUS: dict[str, tuple[dict, set[str]]] = {
    "null_prompt": (_bad(1, prompt=None), {"prompt_present"}),
    "empty_chosen": (_bad(2, chosen=""), {"chosen_not_blank", "chosen_length"}),
    "blank_rejected": (_bad(3, rejected=" \n\t "), {"rejected_not_blank"}),
    "chosen_is_rejected": (_bad(4, chosen="same answer", rejected="same answer"), {"chosen_differs_from_rejected"}),
    "p_chosen_below_half": (_bad(5, p_chosen=0.3), {"p_chosen_in_range"}),
    "p_chosen_null": (_bad(6, p_chosen=None), {"p_chosen_present"}),
    "negative_margin": (_bad(7, margin=-2.0), {"margin_in_range"}),
    "infinite_margin": (_bad(17, margin=float("inf")), {"margin_in_range"}),
    "nan_p_chosen": (_bad(18, p_chosen=float("nan")), {"p_chosen_present"}),
    "nan_margin_not_binary": (_bad(19, margin=float("nan")), {"margin_present_unless_binary"}),
    "margin_null_not_binary": (_bad(8, margin=None), {"margin_present_unless_binary"}),
    "true_p_above_one": (_bad(9, true_p=1.5), {"true_p_in_range"}),
    "unknown_split": (_bad(10, split="holdout"), {"split_allowed"}),
    "unknown_source": (_bad(11, source="mystery_forum"), {"source_allowed"}),
    "unknown_feedback": (_bad(12, feedback="robot"), {"feedback_allowed"}),
    "unknown_signal": (_bad(13, signal="vibes"), {"signal_allowed"}),
    "huge_text": (_bad(14, chosen="x" * 40_000), {"chosen_length"}),
    "control_characters": (_bad(15, prompt="Tell me\x00 about\x1b[31m colours"), {"prompt_printable"}),
    "null_pair_id": (_bad(16, pair_id=None), {"pair_id_present"}),
    # texts the same to a reader (issue 11, class 5): whitespace, Unicode form, invisible characters
    "whitespace_only_difference": (_bad(20, chosen="It boils at 100 C.", rejected="It boils at 100 C.  \n"),
                                   {"chosen_differs_from_rejected"}),
    "nfc_vs_nfd": (_bad(21, chosen="Caf\u00e9 au lait.", rejected="Cafe\u0301 au lait."), {"chosen_differs_from_rejected"}),
    "zero_width_and_bom": (_bad(22, chosen="Yes, exactly.", rejected="\ufeffYes,\u200b exactly.\u00ad"),
                           {"chosen_differs_from_rejected"}),
    # prompt_messages (issue 10): non-empty, known roles, text content, a user turn last
    "prompt_messages_null": (_bad(23, prompt_messages=None), {"prompt_messages_present"}),
    "prompt_messages_empty": (_bad(24, prompt_messages=[]), {"prompt_messages_well_formed"}),
    "prompt_messages_end_with_assistant": (_bad(25, prompt_messages=[{"role": "user", "content": "hi"},
                                                                     {"role": "assistant", "content": "hello"}]),
                                           {"prompt_messages_well_formed"}),
    "prompt_messages_unknown_role": (_bad(26, prompt_messages=[{"role": "narrator", "content": "x"},
                                                               {"role": "user", "content": "hi"}]),
                                     {"prompt_messages_well_formed"}),
    "prompt_messages_null_content": (_bad(27, prompt_messages=[{"role": "user", "content": None}]),
                                     {"prompt_messages_well_formed"}),
}


@pytest.fixture(scope="module")
def corpus_run():
    good = good_pairs()
    bad = pl.DataFrame([row for row, _ in CORPUS.values()], schema=PAIRS_SCHEMA)
    # duplicated pair: a repeat of good row 5 (the first copy stays); leaked prompt: good row 0's
    # prompt (alone in train) copied into the test split with new answers.
    duplicate = good[5]
    leak_row = good_pair(0, "ultrafeedback", "test") | {"chosen": "Another answer", "rejected": "A worse one"}
    leak_row["pair_id"] = pair_id_of(leak_row["prompt"], leak_row["chosen"], leak_row["rejected"])
    leak = pl.DataFrame([leak_row], schema=PAIRS_SCHEMA)
    frame = pl.concat([good, bad, duplicate, leak])
    # per_source 1.0: the unknown source's only row is quarantined (100%); tested separately below.
    params = base_params(max_quarantine_fraction={"overall": 0.5, "per_source": 1.0})
    checked, results = validate_pairs(frame, parse_validation_config(params))
    return good, frame, checked, results


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_each_bad_row_is_quarantined_with_its_reasons(corpus_run, case):
    good, _, checked, _ = corpus_run
    position = good.height + sorted(CORPUS, key=list(CORPUS).index).index(case)
    assert set(checked[FAILED_COLUMN][position]) == CORPUS[case][1]


def test_duplicate_keeps_first_copy_and_leak_keeps_majority_split(corpus_run):
    good, frame, checked, _ = corpus_run
    duplicate_position, leak_position = frame.height - 2, frame.height - 1
    assert checked[FAILED_COLUMN][duplicate_position].to_list() == ["pair_id_unique"]
    assert checked[FAILED_COLUMN][5].to_list() == []  # the original stays
    # good row 0 is in train alone; the copy of its prompt in test is the leak.
    assert checked[FAILED_COLUMN][leak_position].to_list() == ["prompt_in_one_split"]
    assert checked[FAILED_COLUMN][0].to_list() == []


def test_good_rows_untouched_and_counts_reconcile(corpus_run):
    good, frame, checked, results = corpus_run
    validated, quarantined = split_checked(checked)
    assert validated.height + quarantined.height == frame.height
    assert quarantined.height == len(CORPUS) + 2
    assert validated.equals(good)  # same rows, same order, same values
    assert results["rows"] == {"in": frame.height, "validated": good.height, "quarantined": len(CORPUS) + 2}
    assert list(quarantined.columns) == [*PAIRS_SCHEMA, FAILED_COLUMN]
    assert results["passed"], results["failures"]


def test_report_counts_match_the_mask(corpus_run):
    _, _, checked, results = corpus_run
    counts = checked.explode(FAILED_COLUMN).drop_nulls(FAILED_COLUMN).group_by(FAILED_COLUMN).len()
    by_name = dict(counts.iter_rows())
    for entry in results["expectations"]:
        if entry["level"] == "row":
            assert entry["unexpected_count"] == by_name.get(entry["name"], 0), entry["name"]
            assert entry["success"] == (entry["unexpected_count"] == 0)
    p_range = next(e for e in results["expectations"] if e["name"] == "p_chosen_in_range")
    assert p_range["examples"] == [{"pair_id": CORPUS["p_chosen_below_half"][0]["pair_id"], "source": "ultrafeedback", "value": 0.3}]


def _stop(frame: pl.DataFrame, **overrides) -> str:
    checked, results = validate_pairs(frame, parse_validation_config(base_params(**overrides)))
    assert not results["passed"]
    message = stop_message(results, "data/08_reporting/validation_report.md")
    assert message and "data/08_reporting/validation_report.md" in message
    return message


def test_source_with_zero_rows_stops_the_run():
    frame = good_pairs().filter(pl.col("source") != "hh_rlhf")
    message = _stop(frame)
    assert "row_count[hh_rlhf]" in message and "observed 0" in message and "80 in" in message


def test_mixed_type_column_stops_with_the_column_named_and_still_reports():
    frame = good_pairs().with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("high")).otherwise(pl.col("p_chosen").cast(pl.String)).alias("p_chosen")
    )
    message = _stop(frame)
    assert "pairs_schema" in message and "'p_chosen' has dtype String, expected Float64" in message
    assert "120 in; row checks not run" in message
    # the report nodes must still work on the wrong table, so the report is there when the gate stops
    checked, results = validate_pairs(frame, parse_validation_config(base_params()))
    validated, quarantined = split_checked(checked)
    assert (validated.height, quarantined.height) == (frame.height, 0)
    report = render_markdown(results, checked)
    assert "**Verdict: STOPPED**" in report and "| pairs_schema | schema | table | FAIL |" in report
    assert plot_distributions(checked) is not None


def test_missing_column_stops():
    assert "missing columns ['true_p']" in _stop(good_pairs().drop("true_p"))


def test_empty_table_stops():
    message = _stop(good_pairs().head(0), source_row_bounds={})
    assert "at_least_one_pair" in message


def test_quarantine_fraction_per_source_and_overall_stop():
    good = good_pairs()
    # 10 of 40 ultrafeedback rows get p_chosen 0.2: 25% of that source, 8.3% overall.
    frame = good.with_columns(
        pl.when(pl.int_range(pl.len()) < 10).then(pl.lit(0.2)).otherwise(pl.col("p_chosen")).alias("p_chosen")
    )
    message = _stop(frame, max_quarantine_fraction={"overall": 0.5, "per_source": 0.2})
    assert "source 'ultrafeedback': quarantined fraction 0.2500 (10/40 rows)" in message
    assert "overall" not in message.split("rows:")[0]
    message = _stop(frame, max_quarantine_fraction={"overall": 0.05, "per_source": 1.0})
    assert "quarantined fraction 0.0833 (10/120 rows) is above max_quarantine_fraction.overall=0.05" in message


def test_column_order_is_the_contracts():
    shuffled = good_pairs(3).select(list(reversed(PAIRS_SCHEMA)))
    checked, results = validate_pairs(shuffled, parse_validation_config(base_params()))
    assert results["passed"] and checked.columns == [*PAIRS_SCHEMA, FAILED_COLUMN]
