"""Contradicting judgments of one comparison are found and resolved by the configured rule, with
counts (issue 11, class 2; case 09_position_swap_conflict)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from prefalign.core.feedback import conflicts as conflicts_module
from prefalign.core.feedback.conflicts import ConflictRule, margin_scale, resolve_conflicts
from prefalign.core.feedback.ingest import ingest_source
from prefalign.core.feedback.pairs import PAIR_ROW_COLUMNS
from prefalign.core.schema import comparison_id_of
from prefalign.core.text import canonical_text
from prefalign.pipelines.feedback.nodes import build_pairs
from tests.feedback.helpers import records

SPLIT = {"ratios": {"train": 1.0, "val": 0.0, "test": 0.0}}
VICUNA = {"parser": "vicuna_reviews", "signal": "score_gap", "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]}
SCHEMA = {c: t for c, t in PAIR_ROW_COLUMNS.items() if c != "prompt_messages"}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _row(source: str, chosen: str, rejected: str, p: float, margin: float | None, prompt: str = "Q", signal: str = "score_gap") -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": margin, "p_chosen": p, "source": source,
            "feedback": "ai", "signal": signal, "true_p": None}


def _frame(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=SCHEMA)


def _case_09_rows() -> pl.DataFrame:
    # shared/cases/09_position_swap_conflict, copied by hand: one question, two answers, two reviews
    # of the same answers with the seats swapped; the judge prefers whichever answer sits first.
    inputs = {
        "questions": records({"question_id": 1, "text": "How can I improve my sleep?", "category": "generic"}),
        "answers": records(
            {"answer_id": "ansA", "question_id": 1, "text": "Keep a regular bedtime and avoid screens late at night.", "model_id": "model-a"},
            {"answer_id": "ansB", "question_id": 1, "text": "Drink coffee before bed.", "model_id": "model-b"}),
        "reviews": records(
            {"review_id": "r1", "question_id": 1, "answer1_id": "ansA", "answer2_id": "ansB", "score": [8.0, 6.0]},
            {"review_id": "r2", "question_id": 1, "answer1_id": "ansB", "answer2_id": "ansA", "score": [8.0, 6.0]}),
    }
    rows, rejected, _ = ingest_source("vicuna_eval", inputs, VICUNA)
    assert rejected.height == 0 and rows.height == 2
    return rows


def test_case_09_swapped_seats_are_detected_pooled_and_counted():
    rows = _case_09_rows()
    assert set(rows["chosen"]) == {"Keep a regular bedtime and avoid screens late at night.", "Drink coffee before bed."}
    params = {"split": SPLIT, "sources": {"vicuna_eval": VICUNA}, "conflicts": {"within_source": "pool"}}
    pairs, resolution = build_pairs(params, rows)
    [pair] = pairs.iter_rows(named=True)
    # mean of P(A > B) = (sigmoid(0.6) + sigmoid(-0.6)) / 2 = 0.5 exactly: a tie, margin 0
    assert pair["p_chosen"] == 0.5 and pair["margin"] == 0.0
    assert resolution["conflicts"]["vicuna_eval"]["within_source"] == {
        "comparisons": 1, "judgments": 2, "resolution": "pool", "pairs_out": 1}


def test_case_09_with_drop_keeps_nothing_and_counts_it():
    params = {"split": SPLIT, "sources": {"vicuna_eval": VICUNA}, "conflicts": {"within_source": "drop"}}
    pairs, resolution = build_pairs(params, _case_09_rows())
    assert pairs.height == 0
    assert resolution["conflicts"]["vicuna_eval"]["within_source"]["pairs_out"] == 0


def test_pooled_target_is_the_mean_of_p_a_reoriented_with_its_margin_recomputed():
    # three judgments of A vs B by one score_gap source (gamma 0.3): A by 4, A by 2, B by 2
    rows = _frame(_row("s", "A", "B", _sigmoid(1.2), 4.0), _row("s", "A ", "B", _sigmoid(0.6), 2.0),
                  _row("s", "B", "A", _sigmoid(0.6), 2.0), _row("s", "C", "D", 0.7, 1.0))
    rule = ConflictRule("pool", "priority", ("s",), {"s": margin_scale({"signal": "score_gap", "gamma": 0.3})})
    out, counts = resolve_conflicts(rows, rule)
    p = (_sigmoid(1.2) + _sigmoid(0.6) + (1 - _sigmoid(0.6))) / 3
    pooled = out.filter(pl.col("rejected") == "B").row(0, named=True)
    assert pooled["chosen"] == "A" and pooled["p_chosen"] == pytest.approx(p)
    assert pooled["margin"] == pytest.approx(math.log(p / (1 - p)) / 0.3)  # the inverse of sigmoid(0.3 m)
    assert out.height == 2 and out["chosen"].to_list() == ["A", "C"]  # order kept, the unrelated pair untouched
    assert counts == {"s": {"within_source": {"comparisons": 1, "judgments": 3, "resolution": "pool", "pairs_out": 1}},
                      "_total": {"within_source": 1, "across_sources": 0}}


def test_pooled_majority_for_b_makes_b_the_chosen_one():
    rows = _frame(_row("s", "A", "B", 0.6, None, signal="binary"), _row("s", "B", "A", 0.9, None, signal="binary"))
    out, _ = resolve_conflicts(rows, ConflictRule("pool", "priority", ("s",), {"s": None}))
    [row] = out.iter_rows(named=True)
    assert (row["chosen"], row["rejected"], row["margin"]) == ("B", "A", None)
    assert row["p_chosen"] == pytest.approx(0.65)


def test_agreeing_judgments_and_ties_are_not_conflicts():
    rows = _frame(_row("s", "A", "B", 0.7, 1.0), _row("s", "A", "B", 0.8, 2.0), _row("s", "B", "A", 0.5, 0.0))
    out, counts = resolve_conflicts(rows, ConflictRule())
    assert out.height == 3 and counts == {"_total": {"within_source": 0, "across_sources": 0}}


def _across() -> list[pl.DataFrame]:
    return [_frame(_row("human", "A", "B", 0.8, 1.4, signal="votes")),
            _frame(_row("judge", "B", "A", 2 / 3, 0.69, signal="votes")),
            _frame(_row("judge", "C", "D", 2 / 3, 0.69, signal="votes"))]


def test_across_sources_priority_keeps_the_source_listed_first():
    sources = {"human": {"signal": "votes"}, "judge": {"signal": "votes"}}
    pairs, resolution = build_pairs({"split": SPLIT, "sources": sources}, *reversed(_across()))
    assert sorted(zip(pairs["source"], pairs["chosen"])) == [("human", "A"), ("judge", "C")]
    conflicts = resolution["conflicts"]
    assert conflicts["_total"] == {"within_source": 0, "across_sources": 1}
    assert conflicts["human"]["across_sources"] == {"comparisons": 1, "judgments": 1, "resolution": "priority", "kept": 1, "dropped": 0}
    assert conflicts["judge"]["across_sources"] == {"comparisons": 1, "judgments": 1, "resolution": "priority", "kept": 0, "dropped": 1}
    # listing the judge first makes it win
    pairs, _ = build_pairs({"split": SPLIT, "sources": {"judge": {}, "human": {}}}, *_across())
    assert sorted(zip(pairs["source"], pairs["chosen"])) == [("judge", "B"), ("judge", "C")]


def test_across_sources_pool_and_drop():
    sources = {"human": {"signal": "votes"}, "judge": {"signal": "votes"}}
    pairs, res = build_pairs({"split": SPLIT, "sources": sources, "conflicts": {"across_sources": "pool"}}, *_across())
    pooled = pairs.filter(pl.col("rejected").is_in(["A", "B"])).row(0, named=True)
    p = (0.8 + 1 / 3) / 2
    assert (pooled["source"], pooled["chosen"]) == ("human", "A") and pooled["p_chosen"] == pytest.approx(p)
    assert pooled["margin"] == pytest.approx(math.log(p / (1 - p)))
    assert res["conflicts"]["human"]["across_sources"]["pooled_pairs_out"] == 1
    pairs, _ = build_pairs({"split": SPLIT, "sources": sources, "conflicts": "drop"}, *_across())
    assert pairs["chosen"].to_list() == ["C"]


def test_bad_rule_names_the_key():
    with pytest.raises(ValueError, match=r"feedback.conflicts.within_source='keep_last' is not one of"):
        ConflictRule.from_params({"within_source": "keep_last"}, {})
    with pytest.raises(ValueError, match=r"feedback.conflicts.across_sources='first' is not one of"):
        ConflictRule.from_params({"across_sources": "first"}, {})



# (prompt, response a, response b) -> the comparison id conflicts.py computed by hand before it called
# schema.comparison_id_of (stable_hash("comparison", canonical prompt, min, max of the canonical responses))
COMPARISON_IDS = [
    (("Q", "A", "B"), "94c8102b2bb0aba37bca2104"),
    (("  Cafe\u0301 ?\u200b", "x  y", "x y z"), "e9c3dfe98e23ecb5a2724347"),  # NFC, invisible, whitespace
    (("Why?", "zeta", "Alpha"), "e9ef9558208d5b2e102c36d6"),  # "Alpha" < "zeta": seat order does not matter
]


@pytest.mark.parametrize(("texts", "expected"), COMPARISON_IDS)
def test_comparison_ids_are_unchanged_and_seat_free(texts, expected):
    prompt, a, b = texts
    assert comparison_id_of(prompt, a, b) == expected
    assert comparison_id_of(prompt, b, a) == expected
    memo: dict[str, str] = {}  # what resolve_conflicts passes: canonical_text, memoised
    assert comparison_id_of(prompt, a, b, canonical=lambda t: memo.setdefault(t, canonical_text(t))) == expected


def test_conflicts_group_by_the_schema_comparison_id(monkeypatch):
    # two judgments of A vs B with the seats swapped contradict; with an id function that gives every
    # row its own id, resolve_conflicts finds nothing: the grouping key IS schema.comparison_id_of
    rows = _frame(_row("s", "A", "B", 0.8, 1.0), _row("s", "B ", "A", 0.7, 0.8))
    assert resolve_conflicts(rows, ConflictRule())[1]["_total"]["within_source"] == 1
    ids = iter(["first", "second"])
    monkeypatch.setattr(conflicts_module, "comparison_id_of", lambda *args, **kwargs: next(ids))
    assert resolve_conflicts(rows, ConflictRule())[1]["_total"]["within_source"] == 0
