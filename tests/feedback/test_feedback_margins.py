"""Margins and soft targets (docs/methods.md s1) against hand-computed values."""

import math

import polars as pl
import pytest

from prefalign.core.feedback.margins import binary, judge_prob, orient, score_gap, sigmoid, signed_target, votes


def _eval(*exprs: pl.Expr, **columns) -> list[tuple]:
    frame = pl.DataFrame(columns) if columns else pl.DataFrame({"_": [0]})
    return frame.select([e.alias(f"c{i}") for i, e in enumerate(exprs)]).rows()


def test_score_gap_is_raw_gap_and_sigmoid_of_gamma_gap():
    # 9 vs 6 on 1-10 with gamma 0.3: m = 3, p = 1 / (1 + e^-0.9) = 0.710949502625
    (m, p), (m2, p2) = _eval(*score_gap(pl.col("a"), pl.col("b"), 0.3), a=[9.0, 1.0], b=[6.0, 10.0])
    assert m == 3.0 and p == pytest.approx(0.710949502625, abs=1e-12)
    # MMPO's README figure: a gap of 9 maps to about 0.94-0.95 at gamma 0.3
    assert m2 == -9.0 and 1 - p2 == pytest.approx(1 / (1 + math.exp(-2.7)), abs=1e-12)


def test_judge_prob_is_difference_of_logits_against_the_reference():
    # q_a = 0.8, q_b = 0.5: m = ln(0.8/0.2) - 0 = 1.3862943611, p = sigmoid(m) = 0.8
    [(m, p)] = _eval(*judge_prob(pl.col("a"), pl.col("b"), 1e-6), a=[0.8], b=[0.5])
    assert m == pytest.approx(math.log(4.0), abs=1e-12) and p == pytest.approx(0.8, abs=1e-12)


def test_judge_prob_clips_to_eps_so_certain_judgments_stay_finite():
    # q = 1 and 0 clipped to 0.99 / 0.01: m = 2 ln(99) = 9.1902397, both at one bound tie at 0
    (m, p), (m_tie, p_tie) = _eval(*judge_prob(pl.col("a"), pl.col("b"), 0.01), a=[1.0, 0.0], b=[0.0, 0.0])
    assert m == pytest.approx(2 * math.log(99), abs=1e-9) and p == pytest.approx(0.99**2 / (0.99**2 + 0.01**2), abs=1e-12)
    assert m_tie == 0.0 and p_tie == 0.5


def test_votes_are_laplace_smoothed():
    # alpha = 1: 3-0 -> 4/5; 1-1 with a tie -> 2.5/5 = 0.5; 0-2 with a tie -> 1.5/5 = 0.3
    rows = _eval(*votes(pl.col("a"), pl.col("b"), pl.col("t"), 1.0), a=[3.0, 1.0, 0.0], b=[0.0, 1.0, 2.0], t=[0.0, 1.0, 1.0])
    assert [p for _, p in rows] == pytest.approx([0.8, 0.5, 0.3], abs=1e-12)
    assert rows[0][0] == pytest.approx(math.log(4.0), abs=1e-12) and rows[1][0] == 0.0


def test_binary_is_null_margin_and_a_constant_p():
    [(m, p)] = _eval(*binary(0.9))
    assert m is None and p == 0.9
    with pytest.raises(ValueError, match="binary_p = 0.3"):
        binary(0.3)


def test_sigmoid_is_stable_at_extremes():
    [(lo, hi)] = _eval(sigmoid(pl.lit(-800.0)), sigmoid(pl.lit(800.0)))
    assert lo == 0.0 and hi == 1.0


def test_orient_swaps_losers_and_keeps_tie_order():
    comparisons = pl.DataFrame({"response_a": ["A", "C", "E"], "response_b": ["B", "D", "F"],
                                "value_a": [1.0, 9.0, 5.0], "value_b": [4.0, 8.0, 5.0], "ties": [None] * 3})
    out = orient(comparisons, *signed_target("score_gap", {"gamma": 1.0}))
    assert out["chosen"].to_list() == ["B", "C", "E"] and out["rejected"].to_list() == ["A", "D", "F"]
    assert out["margin"].to_list() == [3.0, 1.0, 0.0]
    assert out["p_chosen"].to_list() == pytest.approx([1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1)), 0.5])


def test_unknown_signal_names_the_choices():
    with pytest.raises(ValueError, match="unknown signal 'stars'.*score_gap"):
        signed_target("stars", {})
