"""Evaluation metrics (docs/methods.md s5). Framework-free: numpy and polars only.

Every model, whatever it is, is reduced to one number per pair: the logit of its predicted
P(chosen > rejected). For a scalar reward model that is r(x, y_w) - r(x, y_l); for GPM it is
s(y_w > y_l | x) / tau; for a policy used as an implicit reward it is
beta * [(log pi - log pi_ref)(y_w) - (log pi - log pi_ref)(y_l)].
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

_EPS = 1e-12


def _as_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{name} has {int(np.isnan(array).sum())} NaN value(s); drop or fix those rows first")
    return array


def sigmoid(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


# ---------------------------------------------------------------------------------------------
# Pair accuracy (s5 "Pair accuracy")
# ---------------------------------------------------------------------------------------------
def pair_correct(logits: Any) -> np.ndarray:
    """1.0 where the model strictly prefers chosen (logit > 0); a tie (0) counts wrong."""
    return (_as_array(logits, "logits") > 0).astype(np.float64)


def pair_accuracy(logits: Any) -> float:
    correct = pair_correct(logits)
    if correct.size == 0:
        raise ValueError("pair_accuracy needs at least one pair")
    return float(correct.mean())


def accuracy_by(scored: pl.DataFrame, by: Sequence[str] = ("source", "split")) -> pl.DataFrame:
    """Accuracy per group of a table with a `logit` column (e.g. per source and split)."""
    return (
        scored.with_columns((pl.col("logit") > 0).cast(pl.Float64).alias("correct"))
        .group_by(list(by)).agg(pl.col("correct").mean().alias("accuracy"), pl.len().alias("pairs"))
        .sort(list(by))
    )


# ---------------------------------------------------------------------------------------------
# Calibration (s5 "Calibration")
# ---------------------------------------------------------------------------------------------
def reliability_bins(predicted: Any, target: Any, n_bins: int = 10) -> pl.DataFrame:
    """Equal-width bins over [0, 1] of the predicted P(chosen > rejected).

    Returns one row per bin (empty bins included, with count 0): lower, upper, count,
    mean_predicted, mean_target. A prediction of exactly 1.0 falls in the last bin.
    """
    if not 10 <= n_bins <= 15:
        raise ValueError(f"n_bins={n_bins}: docs/methods.md s5 asks for 10-15 equal-width bins")
    p, t = _as_array(predicted, "predicted"), _as_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"predicted has {p.size} values but target has {t.size}; they must align pair by pair")
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        rows.append({
            "lower": b / n_bins, "upper": (b + 1) / n_bins, "count": count,
            "mean_predicted": float(p[mask].mean()) if count else None,
            "mean_target": float(t[mask].mean()) if count else None,
        })
    return pl.DataFrame(rows, schema={"lower": pl.Float64, "upper": pl.Float64, "count": pl.Int64,
                                      "mean_predicted": pl.Float64, "mean_target": pl.Float64})


def expected_calibration_error(predicted: Any, target: Any, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / N) |mean_pred_b - mean_target_b| over equal-width bins."""
    bins = reliability_bins(predicted, target, n_bins).filter(pl.col("count") > 0)
    total = bins["count"].sum()
    gaps = (bins["mean_predicted"] - bins["mean_target"]).abs() * bins["count"]
    return float(gaps.sum() / total)


def brier_score(predicted: Any, target: Any) -> float:
    """Mean squared error between predicted probability and (soft) target."""
    p, t = _as_array(predicted, "predicted"), _as_array(target, "target")
    return float(np.mean((p - t) ** 2))


def negative_log_likelihood(predicted: Any, target: Any) -> float:
    """Soft-target cross-entropy -mean(t log p + (1 - t) log(1 - p)) (natural log)."""
    p = np.clip(_as_array(predicted, "predicted"), _EPS, 1 - _EPS)
    t = _as_array(target, "target")
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log1p(-p)))


def calibration_report(logits: Any, target: Any, n_bins: int = 10) -> dict[str, float]:
    predicted = sigmoid(_as_array(logits, "logits"))
    return {
        "ece": expected_calibration_error(predicted, target, n_bins),
        "brier": brier_score(predicted, target),
        "nll": negative_log_likelihood(predicted, target),
        "pairs": int(predicted.size),
    }


# ---------------------------------------------------------------------------------------------
# RewardBench-format scoring (s5 "RewardBench-format files")
# ---------------------------------------------------------------------------------------------
def rewardbench_scores(scored: pl.DataFrame, sections: Mapping[str, Sequence[str]],
                       subset_weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    """RewardBench v1 (Lambert et al. 2024, arXiv:2403.13787): subset accuracies, section scores, overall.

    `scored` has columns subset and logit (one row per prompt, as in RewardBench). A section's
    score is sum_s(acc_s * w_s) / sum_s(w_s) over its subsets present in the file, where w_s is the
    subset's prompt count in the file unless `subset_weights` gives it: the published rule counts
    math-prm as 984 prompts (its real 447 up-weighted to the six hep-* code subsets together), so
    math and code weigh equally in Reasoning. The overall score is the unweighted mean of the
    sections that have rows. Subsets in no section are reported under `unmapped_subsets`.

    Raises:
        ValueError: a column is missing, or no subset of the file is in any section.
    """
    for column in ("subset", "logit"):
        if column not in scored.columns:
            raise ValueError(f"RewardBench scoring needs a '{column}' column; got {scored.columns}")
    weights = dict(subset_weights or {})
    per_subset = accuracy_by(scored, by=["subset"])
    subsets = {r["subset"]: (r["accuracy"], r["pairs"]) for r in per_subset.iter_rows(named=True)}
    mapped = {s for members in sections.values() for s in members}
    section_scores: dict[str, float] = {}
    for section, members in sections.items():
        present = [(subsets[s][0], float(weights.get(s, subsets[s][1]))) for s in members if s in subsets]
        total = sum(weight for _, weight in present)
        if total:
            section_scores[section] = sum(acc * weight for acc, weight in present) / total
    if not section_scores:
        raise ValueError(
            f"no subset of the file ({sorted(subsets)}) is in any section of the mapping {dict(sections)}; "
            "fix evaluation.rewardbench.sections"
        )
    return {
        "format": "v1",
        "subsets": {s: {"accuracy": a, "prompts": int(n), "weight": float(weights.get(s, n))}
                    for s, (a, n) in sorted(subsets.items())},
        "sections": section_scores,
        "overall": float(np.mean(list(section_scores.values()))),
        "unmapped_subsets": sorted(set(subsets) - mapped),
    }


def best_of_n_credit(scores: Sequence[float]) -> float:
    """RewardBench 2 best-of-N credit of one prompt: scores[0] is the correct answer's score.

    1 when it is strictly above every incorrect answer, 1/k when it ties k-1 of them at the top,
    0 when any incorrect answer scores higher (Malik et al. 2025, arXiv:2506.01937).
    """
    correct, others = float(scores[0]), np.asarray(scores[1:], dtype=np.float64)
    if others.size and others.max() > correct:
        return 0.0
    return 1.0 / (1 + int((others == correct).sum()))


def _ties_prompt_stats(scores: Sequence[float], num_correct: int) -> tuple[bool, float, float]:
    """(accurate, spread of the correct answers, worst correct - best incorrect) of one Ties prompt."""
    correct, incorrect = np.asarray(scores[:num_correct], dtype=np.float64), np.asarray(scores[num_correct:])
    if correct.size == 0 or incorrect.size == 0:
        raise ValueError(f"a Ties prompt needs correct and incorrect answers; got {correct.size} and {incorrect.size}")
    margin = float(correct.min() - incorrect.max())
    # one correct answer has no spread: 0 (the published code leaves it undefined; it never occurs there)
    spread = float(correct.max() - correct.min())
    return margin > 0, spread, margin


def ties_score(rows: Sequence[tuple[str, Sequence[float], int]]) -> dict[str, float]:
    """The RewardBench 2 Ties score from (id, scores, num_correct) per row, correct answers first.

    Ids are "ref:<n>" (the reference prompt, one correct answer) or "tied:<n>" (the same question
    with several equally correct answers). Published rule (allenai/reward-bench, Ties subset):
    score = 0.30 accuracy(tied) + 0.30 accuracy(ref) + 0.20 P(margin_tied > spread)
    + 0.20 P(min(margin_ref, margin_tied) > spread) + 0.01 mean tanh(min(margin_ref, margin_tied) / spread - 1),
    where accuracy = every correct answer above every incorrect one, margin = worst correct - best
    incorrect, spread = best correct - worst correct of the tied prompt; margins over prompts that
    have both a ref and a tied row; tanh of 0/0 counts 0.
    """
    ref: dict[str, tuple[bool, float, float]] = {}
    tied: dict[str, tuple[bool, float, float]] = {}
    for row_id, scores, num_correct in rows:
        kind, _, number = str(row_id).partition(":")
        if kind not in ("ref", "tied") or not number:
            raise ValueError(f"Ties row id {row_id!r}: expected 'ref:<n>' or 'tied:<n>' (the published layout)")
        (ref if kind == "ref" else tied)[number] = _ties_prompt_stats(scores, int(num_correct))
    ref_accuracy = float(np.mean([s[0] for s in ref.values()])) if ref else 0.0
    tied_accuracy = float(np.mean([s[0] for s in tied.values()])) if tied else 0.0
    both = sorted(set(ref) & set(tied))
    spread = np.array([tied[p][1] for p in both])
    margin_tied = np.array([tied[p][2] for p in both])
    margin_hard = np.minimum(np.array([ref[p][2] for p in both]), margin_tied)
    preferred = float(np.mean(margin_tied > spread)) if both else 0.0
    preferred_hard = float(np.mean(margin_hard > spread)) if both else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        margin_terms = np.nan_to_num(np.tanh(margin_hard / spread - 1), nan=0.0)
    margin_score = float(np.mean(margin_terms)) if both else 0.0
    score = 0.30 * tied_accuracy + 0.30 * ref_accuracy + 0.20 * preferred + 0.20 * preferred_hard + 0.01 * margin_score
    return {"score": score, "ref_accuracy": ref_accuracy, "tied_accuracy": tied_accuracy,
            "correctness_preferred": preferred, "correctness_preferred_hard": preferred_hard,
            "margin_score": margin_score, "prompts": len(ref) + len(tied)}


def rewardbench2_scores(rows: pl.DataFrame, ties_subset: str = "Ties") -> dict[str, Any]:
    """RewardBench 2 (arXiv:2506.01937): per-subset scores and their plain mean.

    `rows` has one row per prompt: id, subset, num_correct, scores (list: the correct answers'
    scores first, then the incorrect ones'; any common shift per prompt is allowed). Every subset
    but Ties is best-of-N accuracy (`best_of_n_credit`, one correct answer); Ties uses `ties_score`.

    Raises:
        ValueError: a non-Ties row with other than one correct answer, or a bad Ties id.
    """
    subsets: dict[str, dict[str, Any]] = {}
    for (subset,), group in rows.group_by(["subset"], maintain_order=True):
        if subset == ties_subset:
            ties = ties_score(list(zip(group["id"], group["scores"].to_list(), group["num_correct"])))
            subsets[subset] = {"accuracy": ties["score"], "prompts": ties["prompts"], "ties": ties}
            continue
        wrong = group.filter(pl.col("num_correct") != 1)
        if wrong.height:
            raise ValueError(f"RewardBench 2 subset {subset!r}: row {wrong['id'][0]!r} has num_correct="
                             f"{wrong['num_correct'][0]}; only {ties_subset!r} may have several correct answers")
        credits = [best_of_n_credit(s) for s in group["scores"].to_list()]
        subsets[subset] = {"accuracy": float(np.mean(credits)), "prompts": group.height}
    if not subsets:
        raise ValueError("the RewardBench 2 file has no rows")
    return {"format": "v2", "subsets": dict(sorted(subsets.items())),
            "sections": {s: v["accuracy"] for s, v in sorted(subsets.items())},
            "overall": float(np.mean([v["accuracy"] for v in subsets.values()])), "unmapped_subsets": []}


# ---------------------------------------------------------------------------------------------
# Cyclic consistency (s5 "Cyclic consistency")
# ---------------------------------------------------------------------------------------------
def cyclic_consistency(logit_ab: Any, logit_bc: Any, logit_ca: Any) -> dict[str, float]:
    """Fraction of the three pairs of A > B > C > A predicted right, averaged over triples.

    A scalar model orders A, B, C on a line, so it gets at most 2 of 3 right on any triple.
    """
    right = np.stack([pair_correct(logit_ab), pair_correct(logit_bc), pair_correct(logit_ca)], axis=1)
    per_triple = right.mean(axis=1)
    return {"consistency": float(per_triple.mean()), "all_three_right": float((per_triple == 1.0).mean()),
            "triples": int(per_triple.size)}


# ---------------------------------------------------------------------------------------------
# Win rates (s5 "Win rate")
# ---------------------------------------------------------------------------------------------
def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (soft successes allowed: ties count 0.5)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    phat = successes / n
    denominator = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denominator
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def fit_logistic_regression(features: np.ndarray, targets: np.ndarray, l2: float = 1e-6,
                            max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Maximum-likelihood logistic regression by Newton's method (soft targets in [0, 1] allowed).

    A tiny L2 penalty keeps the Hessian invertible when the data are separable or a feature
    is constant; it does not move a well-posed solution measurably.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    weights = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = sigmoid(x @ weights)
        gradient = x.T @ (p - y) + l2 * weights
        hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < tol:
            break
    return weights


def win_rates(judge_p: Any, policy_lengths: Any, reference_lengths: Any, z: float = 1.96) -> dict[str, Any]:
    """Raw and length-controlled win rate of a policy over the reference.

    judge_p[i] = the judge's P(policy response beats reference response) on prompt i (1/0 for a
    hard verdict, 0.5 for a tie). Length control (docs/methods.md s5): fit
        logit P(policy wins) = theta * 1 + phi * d,   d = (len_policy - len_ref) / std(len_policy - len_ref)
    where the constant 1 is the policy indicator (every row compares the policy with the
    reference, in that order), then predict at d = 0: LC win rate = sigmoid(theta).
    """
    judge = _as_array(judge_p, "judge_p")
    diff = _as_array(policy_lengths, "policy_lengths") - _as_array(reference_lengths, "reference_lengths")
    n = judge.size
    if n == 0:
        raise ValueError("win_rates needs at least one prompt")
    scale = diff.std()
    normalised = diff / scale if scale > 0 else np.zeros_like(diff)
    theta, phi = fit_logistic_regression(np.stack([np.ones(n), normalised], axis=1), judge)
    raw = float(judge.mean())
    low, high = wilson_interval(judge.sum(), n, z)
    return {
        "win_rate": raw, "win_rate_low": low, "win_rate_high": high,
        "lc_win_rate": float(sigmoid(theta)), "length_coefficient": float(phi), "prompts": int(n),
    }


def kl_to_reference(policy_logprobs: Any, reference_logprobs: Any) -> dict[str, float]:
    """KL(pi || pi_ref) estimated on samples y ~ pi: mean of log pi(y|x) - log pi_ref(y|x).

    Inputs are sequence log-probabilities (summed over response tokens) of the SAME samples
    drawn from the policy. Returns the estimate and its standard error.
    """
    ratio = _as_array(policy_logprobs, "policy_logprobs") - _as_array(reference_logprobs, "reference_logprobs")
    se = float(ratio.std(ddof=1) / math.sqrt(ratio.size)) if ratio.size > 1 else float("nan")
    return {"kl": float(ratio.mean()), "kl_se": se}
