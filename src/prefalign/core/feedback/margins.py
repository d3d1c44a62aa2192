"""Margins and soft targets, docs/methods.md s1 ("From feedback to a soft target").

Each function takes polars expressions for one comparison of response a against response b and
returns the SIGNED margin of a over b and p_a = P(a beats b). ``orient`` then makes the better
response the chosen one, so margin >= 0 and p_chosen >= 0.5. Expressions (not Python floats) so
the same code runs on a hand-checked 3-row test frame and on millions of pairs.
"""

from __future__ import annotations

import polars as pl


def sigmoid(x: pl.Expr) -> pl.Expr:
    """1 / (1 + exp(-x)), written so that large |x| neither overflows nor loses the tail.

    Args:
        x: a Float64 expression (log-odds).

    Returns:
        The probability expression, in [0, 1].
    """
    return pl.when(x >= 0).then(1.0 / (1.0 + (-x).exp())).otherwise(x.exp() / (1.0 + x.exp()))


def logit(p: pl.Expr) -> pl.Expr:
    """log(p / (1 - p)), the inverse of sigmoid (docs/methods.md s1).

    Args:
        p: a probability expression in (0, 1); 0 and 1 give -inf and +inf.

    Returns:
        The log-odds expression.
    """
    return (p / (1.0 - p)).log()


def score_gap(score_a: pl.Expr, score_b: pl.Expr, gamma: float) -> tuple[pl.Expr, pl.Expr]:
    """Score gap (docs/methods.md s1, row "score gap", MMPO's rule): m = s_a - s_b in the source's raw
    units, p = sigmoid(gamma_source * m).

    Args:
        score_a, score_b: the two responses' scores (source units, e.g. 1-10).
        gamma: feedback.sources.<source>.gamma (> 0), log-odds per score point.

    Returns:
        (signed margin of a over b, p_a = P(a beats b)) expressions.
    """
    margin = score_a - score_b
    return margin, sigmoid(gamma * margin)


def judge_prob(q_a: pl.Expr, q_b: pl.Expr, eps: float) -> tuple[pl.Expr, pl.Expr]:
    """Judge probability against a shared reference (docs/methods.md s1, row "judge probability"):
    m = logit(q_a) - logit(q_b) with q clipped to [eps, 1 - eps], p = sigmoid(m) (Bradley-Terry:
    each response's log-odds against the reference is its reward).

    Args:
        q_a, q_b: the judge's probabilities that a (b) beats the shared reference.
        eps: feedback.sources.<source>.eps, the clip in (0, 0.5).

    Returns:
        (signed margin of a over b in log-odds, p_a) expressions.
    """
    margin = logit(q_a.clip(eps, 1.0 - eps)) - logit(q_b.clip(eps, 1.0 - eps))
    return margin, sigmoid(margin)


def votes(votes_a: pl.Expr, votes_b: pl.Expr, ties: pl.Expr, alpha: float) -> tuple[pl.Expr, pl.Expr]:
    """Annotator votes (docs/methods.md s1, row "annotator votes"), Laplace-smoothed:
    p = (votes_a + 0.5 * ties + alpha) / (n + 2 * alpha) with n = votes_a + votes_b + ties,
    and m = logit(p).

    Args:
        votes_a, votes_b, ties: vote counts (expressions).
        alpha: feedback.sources.<source>.laplace_alpha (>= 0).

    Returns:
        (signed margin m = logit(p), p_a) expressions.
    """
    n = votes_a + votes_b + ties
    p = (votes_a + 0.5 * ties + alpha) / (n + 2.0 * alpha)
    return logit(p), p


def binary(p_constant: float) -> tuple[pl.Expr, pl.Expr]:
    """Binary label (docs/methods.md s1, row "binary"): response a is the labelled winner; the margin
    is undefined (null) and p is a configurable constant (1.0 = a hard label).

    Args:
        p_constant: feedback.sources.<source>.binary_p, in [0.5, 1].

    Returns:
        (null margin, constant p) expressions.

    Raises:
        ValueError: p_constant outside [0.5, 1].
    """
    if not 0.5 <= p_constant <= 1.0:
        raise ValueError(f"binary_p = {p_constant} must be in [0.5, 1]; 1.0 is a hard label")
    return pl.lit(None, dtype=pl.Float64), pl.lit(float(p_constant))


def signed_target(signal: str, params: dict) -> tuple[pl.Expr, pl.Expr]:
    """The (signed margin, p_a) expressions of one signal over the columns of a comparisons frame
    (value_a, value_b, ties): the one place where a source's `signal` picks its formula.

    Args:
        signal: score_gap | judge_prob | votes | binary (feedback.sources.<source>.signal).
        params: the source's parameters (gamma, eps, laplace_alpha, binary_p).

    Returns:
        (signed margin, p_a) expressions (docs/methods.md s1).

    Raises:
        ValueError: an unknown signal, or a bad binary_p.
    """
    a, b = pl.col("value_a"), pl.col("value_b")
    if signal == "score_gap":
        return score_gap(a, b, float(params["gamma"]))
    if signal == "judge_prob":
        return judge_prob(a, b, float(params.get("eps", 1e-6)))
    if signal == "votes":
        return votes(a, b, pl.col("ties").fill_null(0.0), float(params.get("laplace_alpha", 1.0)))
    if signal == "binary":
        return binary(float(params.get("binary_p", 1.0)))
    raise ValueError(f"unknown signal {signal!r}; use one of score_gap, judge_prob, votes, binary")


def orient(comparisons: pl.DataFrame, margin: pl.Expr, p_a: pl.Expr) -> pl.DataFrame:
    """Chosen = the response with p >= 0.5. A tie (p_a = 0.5 exactly) keeps the record's own order
    (a as chosen) and margin 0, so MMPO can learn "equal" from it.

    Args:
        comparisons: frame with response_a, response_b (and the value columns the expressions read).
        margin, p_a: signed_target's expressions.

    Returns:
        The frame plus chosen, rejected, margin >= 0 (Float64, null for binary) and p_chosen >= 0.5.
    """
    a_wins = pl.col("_p_a") >= 0.5
    return (
        comparisons.with_columns(_margin=margin, _p_a=p_a)
        .with_columns(
            chosen=pl.when(a_wins).then(pl.col("response_a")).otherwise(pl.col("response_b")),
            rejected=pl.when(a_wins).then(pl.col("response_b")).otherwise(pl.col("response_a")),
            margin=pl.when(a_wins).then(pl.col("_margin")).otherwise(-pl.col("_margin")).cast(pl.Float64),
            p_chosen=pl.when(a_wins).then(pl.col("_p_a")).otherwise(1.0 - pl.col("_p_a")).cast(pl.Float64),
        )
        .drop("_margin", "_p_a")
    )
