"""Evaluation metrics (docs/methods.md s5). Framework-free: numpy and polars only.

Every model, whatever it is, is reduced to one number per pair: the logit of its predicted
P(chosen > rejected). For a scalar reward model that is r(x, y_w) - r(x, y_l); for GPM it is
s(y_w > y_l | x) / tau; for a policy used as an implicit reward it is
beta * [(log pi - log pi_ref)(y_w) - (log pi - log pi_ref)(y_l)].

Each per-pair quantity (correct, squared error, log-loss, calibration-bin gap) is defined ONCE
here; statistics.py averages them with bootstrap weights, and a plain value is that weighted
average with every weight 1 (there is no second implementation of any of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl

from prefalign.core.ties import TIE_P

N_BINS_RANGE = (10, 15)  # docs/methods.md s5: 10-15 equal-width calibration bins

WeightedStatistic = Callable[[np.ndarray], np.ndarray]  # weights (B, n) -> values (B,)


def _as_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{name} has {int(np.isnan(array).sum())} NaN value(s); drop or fix those rows first")
    return array


def sigmoid(x: Any) -> np.ndarray:
    """The logistic function 1 / (1 + e^-x), computed without overflow for large |x|.

    Args:
        x: a number or array of logits.

    Returns:
        float64 array of the same shape, values in [0, 1].
    """
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def check_n_bins(n_bins: Any) -> int:
    """The number of calibration bins, checked: an integer in N_BINS_RANGE (10-15).

    The one rule for the bins, used by the metrics below and by the evaluation parameters
    (core/evaluation/config.py), so the check before a run and the metric agree.

    Raises:
        ValueError: naming the value and the allowed range.

    Args:
        n_bins: the requested number of bins (a bool is refused).

    Returns:
        ``n_bins`` as a Python int.
    """
    low, high = N_BINS_RANGE
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or not low <= n_bins <= high:
        raise ValueError(f"n_bins={n_bins!r}: docs/methods.md s5 asks for {low}-{high} equal-width bins; "
                         f"set evaluation.n_bins to an integer from {low} to {high}")
    return int(n_bins)


# ---------------------------------------------------------------------------------------------
# Label ties (docs/methods.md s8.3): p_chosen = 1/2 says "neither is better"
# ---------------------------------------------------------------------------------------------
def label_ties(p_chosen: Any) -> np.ndarray:
    """True where the pair's LABEL is a tie (p_chosen <= 1/2, core/ties.py): its chosen side is only the
    raw order, so no prediction is right or wrong on it. Accuracy and the paired tests set these
    pairs aside; calibration (ECE, Brier, NLL) keeps them (a tie is a target of 1/2 like any other).

    Args:
        p_chosen: [n] the label's P(chosen > rejected).

    Returns:
        bool [n].
    """
    return _as_array(p_chosen, "p_chosen") <= TIE_P


# ---------------------------------------------------------------------------------------------
# Pair accuracy (s5 "Pair accuracy")
# ---------------------------------------------------------------------------------------------
def pair_correct(logits: Any) -> np.ndarray:
    """1.0 where the model strictly prefers chosen (logit > 0); a predicted tie (0) counts wrong.

    Args:
        logits: [n] logit of P(chosen > rejected) (docs/methods.md s5, "Pair accuracy").

    Returns:
        float64 [n] of 1.0 / 0.0.

    Raises:
        ValueError: a NaN logit.
    """
    return (_as_array(logits, "logits") > 0).astype(np.float64)


def pair_accuracy(logits: Any, ties: Any = None) -> float | None:
    """Share of the non-tie pairs the model gets right (logit > 0).

    Args:
        logits: [n] logit of P(chosen > rejected).
        ties: [n] bool, the label ties to set aside (``label_ties``); None: no pair is a tie.

    Returns:
        The accuracy over the non-tie pairs; None when every pair is a tie (there is no accuracy).

    Raises:
        ValueError: no pair at all.
    """
    correct = pair_correct(logits)
    if correct.size == 0:
        raise ValueError("pair_accuracy needs at least one pair")
    keep = np.ones(correct.size, dtype=bool) if ties is None else ~np.asarray(ties, dtype=bool)
    return float(correct[keep].mean()) if keep.any() else None


def accuracy_by(scored: pl.DataFrame, by: Sequence[str] = ("source", "split")) -> pl.DataFrame:
    """Accuracy per group of a table with `logit` (and `p_chosen`: label ties set aside) columns.

    Returns:
        One row per group: the group keys, accuracy (over the group's non-tie pairs; null when
        all of them are ties), pairs (all), ties (label ties set aside).

    Args:
        scored: a table with ``logit``, the ``by`` columns and optionally ``p_chosen``.
        by: the grouping columns.
    """
    tie = pl.col("p_chosen") <= TIE_P if "p_chosen" in scored.columns else pl.lit(False)
    return (
        scored.with_columns((pl.col("logit") > 0).cast(pl.Float64).alias("correct"), tie.alias("_tie"))
        .group_by(list(by)).agg(pl.col("correct").filter(~pl.col("_tie")).mean().alias("accuracy"),
                                pl.len().alias("pairs"), pl.col("_tie").sum().cast(pl.Int64).alias("ties"))
        .sort(list(by))
    )


# ---------------------------------------------------------------------------------------------
# Calibration (s5 "Calibration"): per-pair terms; their (weighted) means are the metrics
# ---------------------------------------------------------------------------------------------
def per_pair_nll(logits: Any, target: Any) -> np.ndarray:
    """Soft-target log-loss per pair from the LOGIT, in nats: t softplus(-x) + (1 - t) softplus(x).

    Equal to -[t log p + (1 - t) log(1 - p)] with p = sigmoid(x), but computed without forming p
    (np.logaddexp(0, -x) = softplus(-x)), so a confident mistake costs its full |x| nats instead
    of a cap at -log(eps) (x = -40, t = 1 gives 40.0, not 27.6). A term whose weight (t or 1 - t)
    is 0 contributes 0 even at an infinite logit (a certain, right prediction costs nothing).

    Args:
        logits: [n] logit x of P(chosen > rejected).
        target: [n] soft target t in [0, 1].

    Returns:
        float64 [n], nats.
    """
    x, t = _as_array(logits, "logits"), _as_array(target, "target")
    with np.errstate(invalid="ignore"):  # 0 * inf: the term is left out below
        chosen, rejected = t * np.logaddexp(0.0, -x), (1.0 - t) * np.logaddexp(0.0, x)
    return np.where(t > 0, chosen, 0.0) + np.where(t < 1, rejected, 0.0)


def per_pair_squared_error(logits: Any, target: Any) -> np.ndarray:
    """(sigmoid(x) - t)^2 per pair: the Brier score's terms.

    Args:
        logits: [n] logit of P(chosen > rejected).
        target: [n] soft target in [0, 1].

    Returns:
        float64 [n], squared probability error; its mean is the Brier score (docs/methods.md s5).
    """
    return (sigmoid(_as_array(logits, "logits")) - _as_array(target, "target")) ** 2


def _bin_index(predicted: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each probability; 1.0 falls in the last bin."""
    return np.minimum((predicted * n_bins).astype(int), n_bins - 1)


def calibration_bin_gaps(logits: Any, target: Any, n_bins: int = 10) -> np.ndarray:
    """Each pair's contribution to the SYMMETRIC ECE, per bin: [n, n_bins].

    A pair has no natural orientation (which side is listed first is arbitrary: RewardBench-format
    files always list the correct answer first, a pairs table the preferred one), so every pair is
    counted in both orientations, (p, t) and (1 - p, 1 - t). Row i holds (p_i - t_i) / 2 in the bin
    of p_i and -(p_i - t_i) / 2 in the bin of 1 - p_i, so that with weights w
        ECE = sum_b |sum_i w_i gap_ib| / sum_i w_i
    is the ECE (Guo et al. 2017, eq. 3) of the 2n oriented predictions. It does not change when any
    pair is flipped; on a file whose targets are all 1 it is not 1 - mean p.

    Args:
        logits: [n] logit of P(chosen > rejected).
        target: [n] soft target in [0, 1].
        n_bins: 10-15 equal-width bins (check_n_bins).

    Returns:
        float64 [n, n_bins].

    Raises:
        ValueError: ``n_bins`` outside 10-15, a NaN in either input, or logits and target of different lengths.
    """
    n_bins = check_n_bins(n_bins)
    p, t = sigmoid(_as_array(logits, "logits")), _as_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"logits has {p.size} values but target has {t.size}; they must align pair by pair")
    gaps = np.zeros((p.size, n_bins))
    rows = np.arange(p.size)
    np.add.at(gaps, (rows, _bin_index(p, n_bins)), (p - t) / 2)
    np.add.at(gaps, (rows, _bin_index(1.0 - p, n_bins)), -(p - t) / 2)
    return gaps


def reliability_bins(logits: Any, target: Any, n_bins: int = 10) -> pl.DataFrame:
    """Equal-width bins over [0, 1] of the predicted P, each pair in both orientations (as the ECE).

    Args:
        logits: [n] logit of P(chosen > rejected).
        target: [n] soft target in [0, 1].
        n_bins: 10-15 equal-width bins.

    Returns:
        One row per bin (empty bins included, with count 0): lower, upper, count (oriented
        predictions: 2 per pair), mean_predicted, mean_target. A prediction of exactly 1.0 falls in
        the last bin. The diagram is symmetric about (1/2, 1/2) by construction.

    Raises:
        ValueError: ``n_bins`` outside 10-15, a NaN in either input, or inputs of different lengths.
    """
    n_bins = check_n_bins(n_bins)
    p, t = sigmoid(_as_array(logits, "logits")), _as_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"logits has {p.size} values but target has {t.size}; they must align pair by pair")
    p, t = np.concatenate([p, 1.0 - p]), np.concatenate([t, 1.0 - t])
    index = _bin_index(p, n_bins)
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


# ---------------------------------------------------------------------------------------------
# RewardBench-format scoring (s5 "RewardBench-format files"; s9.6-9.7). Every score is written as a
# weighted statistic of per-prompt numbers (weights (B, n) -> (B,)): the published score is its value
# at weights 1, and its interval comes from the prompt bootstrap (statistics.py), like every accuracy.
# ---------------------------------------------------------------------------------------------
def _weighted_share(weights: np.ndarray, values: np.ndarray, mask: np.ndarray, empty: float) -> np.ndarray:
    """sum_i w_i m_i v_i / sum_i w_i m_i per resample; `empty` where the mask has no weight."""
    total = weights @ mask
    return np.divide(weights @ (mask * values), total, out=np.full(total.shape, empty), where=total > 0)


def rewardbench_section_statistics(subsets: Sequence[str], correct: Any, sections: Mapping[str, Sequence[str]],
                                   subset_weights: Mapping[str, float] | None = None) -> dict[str, WeightedStatistic]:
    """RewardBench v1 section scores and the overall score as weighted statistics of the rows.

    A section's score is sum_s acc_s w_s / sum_s w_s over its subsets present in the (resampled)
    file, with acc_s the subset's accuracy and w_s its (resampled) prompt count, or the fixed weight
    `subset_weights[s]` (the published rule counts math-prm as 984 prompts). The overall score is
    the mean of the sections present. With every weight 1 these are the published numbers.

    Args:
        subsets: [n] subset of each row (one row per prompt).
        correct: [n] 1.0 where logit > 0, else 0.0.
        sections: section -> its subsets.
        subset_weights: subset -> fixed weight (replaces its prompt count); None = counts only.

    Returns:
        {section: statistic} for each section with rows in the file, and "overall".
    """
    names = np.asarray(list(subsets), dtype=object).astype(str)
    right = np.asarray(correct, dtype=np.float64)
    fixed = dict(subset_weights or {})
    present = set(names.tolist())
    members = {section: [s for s in dict.fromkeys(subs) if s in present] for section, subs in sections.items()}
    members = {section: subs for section, subs in members.items() if subs}

    def section_statistic(subs: list[str]) -> WeightedStatistic:
        masks = [(names == s).astype(np.float64) for s in subs]

        def statistic(weights: np.ndarray) -> np.ndarray:
            numerator, denominator = np.zeros(weights.shape[0]), np.zeros(weights.shape[0])
            for s, mask in zip(subs, masks):
                count = weights @ mask
                accuracy = np.divide(weights @ (mask * right), count, out=np.zeros_like(count), where=count > 0)
                weight = np.where(count > 0, float(fixed[s]) if s in fixed else count, 0.0)
                numerator += accuracy * weight
                denominator += weight
            return np.divide(numerator, denominator, out=np.full(denominator.shape, np.nan), where=denominator > 0)

        return statistic

    statistics = {section: section_statistic(subs) for section, subs in members.items()}
    parts = list(statistics.values())

    def overall(weights: np.ndarray) -> np.ndarray:
        values = np.stack([s(weights) for s in parts], axis=1)
        counted = np.isfinite(values).sum(axis=1)
        return np.divide(np.nansum(values, axis=1), counted, out=np.full(counted.shape, np.nan), where=counted > 0)

    if statistics:
        statistics["overall"] = overall
    return statistics


def rewardbench_scores(scored: pl.DataFrame, sections: Mapping[str, Sequence[str]],
                       subset_weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    """RewardBench v1 (Lambert et al. 2024, arXiv:2403.13787): subset accuracies, section scores, overall.

    `scored` has columns subset and logit (one row per prompt, as in RewardBench). A section's
    score is sum_s(acc_s * w_s) / sum_s(w_s) over its subsets present in the file, where w_s is the
    subset's prompt count in the file unless `subset_weights` gives it: the published rule counts
    math-prm as 984 prompts (its real 447 up-weighted to the six hep-* code subsets together), so
    math and code weigh equally in Reasoning. The overall score is the unweighted mean of the
    sections that have rows. Subsets in no section are reported under `unmapped_subsets`.
    (rewardbench_section_statistics at weights 1: one implementation for the score and its interval.)

    Raises:
        ValueError: a column is missing, or no subset of the file is in any section.

    Args:
        scored: one row per prompt with ``subset`` and ``logit`` (chosen minus rejected score).
        sections: section -> its subsets (``evaluation.rewardbench.sections``).
        subset_weights: subset -> fixed weight replacing its prompt count (e.g. math-prm: 984).

    Returns:
        {"format": "v1", "subsets": {subset: {accuracy, prompts, weight}}, "sections": {section: score},
        "overall": mean of the section scores, "unmapped_subsets": [...]}; scores are accuracies in [0, 1].
    """
    for column in ("subset", "logit"):
        if column not in scored.columns:
            raise ValueError(f"RewardBench scoring needs a '{column}' column; got {scored.columns}")
    weights = dict(subset_weights or {})
    per_subset = accuracy_by(scored.select("subset", "logit"), by=["subset"])
    subsets = {r["subset"]: (r["accuracy"], r["pairs"]) for r in per_subset.iter_rows(named=True)}
    mapped = {s for members in sections.values() for s in members}
    statistics = rewardbench_section_statistics(scored["subset"].to_list(), pair_correct(scored["logit"]), sections,
                                                weights)
    ones = np.ones((1, scored.height))
    section_scores = {name: float(s(ones)[0]) for name, s in statistics.items() if name != "overall"}
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
        "overall": float(statistics["overall"](ones)[0]),
        "unmapped_subsets": sorted(set(subsets) - mapped),
    }


def best_of_n_credit(scores: Sequence[float]) -> float:
    """RewardBench 2 best-of-N credit of one prompt: scores[0] is the correct answer's score.

    1 when it is strictly above every incorrect answer, 1/k when it ties k-1 of them at the top,
    0 when any incorrect answer scores higher (Malik et al. 2025, arXiv:2506.01937).

    Args:
        scores: the prompt's scores, the correct answer's first, then the incorrect answers'.

    Returns:
        The credit in [0, 1].
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


TIES_WEIGHTS = {"tied_accuracy": 0.30, "ref_accuracy": 0.30, "correctness_preferred": 0.20,
                "correctness_preferred_hard": 0.20, "margin_score": 0.01}


def ties_statistics(rows: Sequence[tuple[str, Sequence[float], int]]) -> dict[str, WeightedStatistic]:
    """The RewardBench 2 Ties score and its terms as weighted statistics of its rows (weights [B, rows]).

    Rows are (id, scores, num_correct), correct answers first. Ids are "ref:<n>" (the reference
    prompt, one correct answer) or "tied:<n>" (the same question with several equally correct
    answers). Published rule (allenai/reward-bench, Ties subset):
    score = 0.30 accuracy(tied) + 0.30 accuracy(ref) + 0.20 P(margin_tied > spread)
    + 0.20 P(min(margin_ref, margin_tied) > spread) + 0.01 mean tanh(min(margin_ref, margin_tied) / spread - 1),
    where accuracy = every correct answer above every incorrect one (margin > 0 strictly),
    margin = worst correct - best incorrect, spread = best correct - worst correct of the tied
    prompt; the last three terms are means over the questions that have both a ref and a tied row
    (each such question's terms sit on its tied row); tanh of 0/0 counts 0; a term without rows is 0.

    Returns:
        {"score", "ref_accuracy", "tied_accuracy", "correctness_preferred", "correctness_preferred_hard",
        "margin_score"}: weights [B, rows] -> [B].

    Raises:
        ValueError: an id that is not "ref:<n>" / "tied:<n>", or a prompt without correct or incorrect answers.

    Args:
        rows: (id, scores, num_correct) per prompt; scores lists the num_correct correct answers first.
    """
    kinds, numbers, stats = [], [], []
    for row_id, scores, num_correct in rows:
        kind, _, number = str(row_id).partition(":")
        if kind not in ("ref", "tied") or not number:
            raise ValueError(f"Ties row id {row_id!r}: expected 'ref:<n>' or 'tied:<n>' (the published layout)")
        kinds.append(kind)
        numbers.append(number)
        stats.append(_ties_prompt_stats(scores, int(num_correct)))
    kinds_arr = np.asarray(kinds, dtype=object)
    is_ref, is_tied = (kinds_arr == "ref").astype(float), (kinds_arr == "tied").astype(float)
    accurate = np.array([s[0] for s in stats], dtype=float)
    ref_margin = {n: s[2] for k, n, s in zip(kinds, numbers, stats) if k == "ref"}
    both = np.array([k == "tied" and n in ref_margin for k, n in zip(kinds, numbers)], dtype=float)
    spread = np.array([s[1] for s in stats])
    margin_tied = np.array([s[2] for s in stats])
    margin_hard = np.array([min(ref_margin.get(n, m), m) for n, m in zip(numbers, margin_tied)])
    with np.errstate(divide="ignore", invalid="ignore"):
        margin_terms = np.nan_to_num(np.tanh(margin_hard / spread - 1), nan=0.0)
    terms: dict[str, WeightedStatistic] = {
        "ref_accuracy": lambda w: _weighted_share(w, accurate, is_ref, 0.0),
        "tied_accuracy": lambda w: _weighted_share(w, accurate, is_tied, 0.0),
        "correctness_preferred": lambda w: _weighted_share(w, (margin_tied > spread).astype(float), both, 0.0),
        "correctness_preferred_hard": lambda w: _weighted_share(w, (margin_hard > spread).astype(float), both, 0.0),
        "margin_score": lambda w: _weighted_share(w, margin_terms, both, 0.0),
    }

    def score(weights: np.ndarray) -> np.ndarray:
        return sum(TIES_WEIGHTS[name] * term(weights) for name, term in terms.items())

    return {"score": score, **terms}


def ties_score(rows: Sequence[tuple[str, Sequence[float], int]]) -> dict[str, float]:
    """The RewardBench 2 Ties score of (id, scores, num_correct) rows: ties_statistics at weights 1.

    Returns:
        {score, ref_accuracy, tied_accuracy, correctness_preferred, correctness_preferred_hard,
        margin_score, prompts}.

    Args:
        rows: (id, scores, num_correct) per prompt, as ``ties_statistics`` takes them.

    Raises:
        ValueError: a bad id or a prompt without correct or incorrect answers (``ties_statistics``).
    """
    rows = list(rows)
    ones = np.ones((1, len(rows)))
    values = {name: float(statistic(ones)[0]) for name, statistic in ties_statistics(rows).items()}
    return {**values, "prompts": len(rows)}


def rewardbench2_statistics(rows: pl.DataFrame, ties_subset: str = "Ties") -> dict[str, WeightedStatistic]:
    """RewardBench 2 subset scores and the overall score as weighted statistics of the rows.

    `rows` has one row per prompt: id, subset, num_correct, scores (list: the correct answers'
    scores first). Every subset but Ties is the mean best-of-N credit of its prompts; Ties is
    ties_statistics on its rows; overall is the plain mean of the subsets.

    Returns:
        {subset: statistic} and "overall"; weights [B, rows.height] -> [B].

    Raises:
        ValueError: a non-Ties row with other than one correct answer, or a bad Ties id.

    Args:
        rows: one row per prompt: id, subset, num_correct, scores.
        ties_subset: the name of the Ties subset (scored by ``ties_statistics``).
    """
    subsets = rows["subset"].to_list()
    statistics: dict[str, WeightedStatistic] = {}
    for subset in sorted(set(subsets)):
        mask = np.array([s == subset for s in subsets])
        group = rows.filter(pl.Series(mask))
        if subset == ties_subset:
            ties = ties_statistics(list(zip(group["id"], group["scores"].to_list(), group["num_correct"])))["score"]
            statistics[subset] = lambda w, ties=ties, mask=mask: ties(w[:, mask])
            continue
        wrong = group.filter(pl.col("num_correct") != 1)
        if wrong.height:
            raise ValueError(f"RewardBench 2 subset {subset!r}: row {wrong['id'][0]!r} has num_correct="
                             f"{wrong['num_correct'][0]}; only {ties_subset!r} may have several correct answers")
        credits = np.zeros(rows.height)
        credits[mask] = [best_of_n_credit(s) for s in group["scores"].to_list()]
        statistics[subset] = lambda w, credits=credits, mask=mask: _weighted_share(w, credits, mask.astype(float),
                                                                                    np.nan)
    if statistics:
        parts = list(statistics.values())
        statistics["overall"] = lambda w: np.nanmean(np.stack([s(w) for s in parts], axis=1), axis=1)
    return statistics


def rewardbench2_scores(rows: pl.DataFrame, ties_subset: str = "Ties") -> dict[str, Any]:
    """RewardBench 2 (arXiv:2506.01937): per-subset scores and their plain mean (rewardbench2_statistics
    at weights 1).

    `rows` has one row per prompt: id, subset, num_correct, scores (list: the correct answers'
    scores first, then the incorrect ones'; any common shift per prompt is allowed). Every subset
    but Ties is best-of-N accuracy (`best_of_n_credit`, one correct answer); Ties uses `ties_score`.

    Raises:
        ValueError: a non-Ties row with other than one correct answer, or a bad Ties id; no rows.

    Args:
        rows: one row per prompt: id, subset, num_correct, scores.
        ties_subset: the name of the Ties subset.

    Returns:
        {"format": "v2", "subsets": {subset: {accuracy, prompts[, ties]}}, "sections": {subset: accuracy},
        "overall": mean of the subset scores, "unmapped_subsets": []}; scores in [0, 1].
    """
    if rows.is_empty():
        raise ValueError("the RewardBench 2 file has no rows")
    statistics = rewardbench2_statistics(rows, ties_subset)
    ones = np.ones((1, rows.height))
    subsets: dict[str, dict[str, Any]] = {}
    for (subset,), group in rows.group_by(["subset"], maintain_order=True):
        subsets[subset] = {"accuracy": float(statistics[subset](ones)[0]), "prompts": group.height}
        if subset == ties_subset:
            subsets[subset]["ties"] = ties_score(list(zip(group["id"], group["scores"].to_list(), group["num_correct"])))
    return {"format": "v2", "subsets": dict(sorted(subsets.items())),
            "sections": {s: v["accuracy"] for s, v in sorted(subsets.items())},
            "overall": float(statistics["overall"](ones)[0]), "unmapped_subsets": []}


# ---------------------------------------------------------------------------------------------
# Cyclic consistency (s5 "Cyclic consistency")
# ---------------------------------------------------------------------------------------------
def cyclic_consistency(logit_ab: Any, logit_bc: Any, logit_ca: Any) -> dict[str, float]:
    """Fraction of the three pairs of A > B > C > A predicted right, averaged over triples.

    A scalar model orders A, B, C on a line, so it gets at most 2 of 3 right on any triple.

    Args:
        logit_ab: [n] logit of P(A beats B) per triple.
        logit_bc: [n] logit of P(B beats C).
        logit_ca: [n] logit of P(C beats A).

    Returns:
        {"consistency": mean share of right pairs, "all_three_right": share of triples with 3 of 3,
        "triples": n} (docs/methods.md s5, "Cyclic consistency").
    """
    right = np.stack([pair_correct(logit_ab), pair_correct(logit_bc), pair_correct(logit_ca)], axis=1)
    per_triple = right.mean(axis=1)
    return {"consistency": float(per_triple.mean()), "all_three_right": float((per_triple == 1.0).mean()),
            "triples": int(per_triple.size)}


# ---------------------------------------------------------------------------------------------
# Win rates (s5 "Win rate")
# ---------------------------------------------------------------------------------------------
def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (soft successes allowed: ties count 0.5).

    Args:
        successes: the (soft) count of successes, 0 <= successes <= n.
        n: the number of trials.
        z: the normal quantile (1.96 = 95%).

    Returns:
        (low, high), clipped to [0, 1] (Wilson 1927).

    Raises:
        ValueError: ``n`` <= 0.
    """
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

    Args:
        features: [n, k] design matrix (include a column of ones for an intercept).
        targets: [n] targets in [0, 1].
        l2: the ridge penalty on every coefficient (intercept included).
        max_iter: Newton steps at most.
        tol: stop when every coefficient moves less than this.

    Returns:
        float64 [k], the coefficients (log-odds per unit of each feature).
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

    Source: Dubois et al. 2024, Length-Controlled AlpacaEval (arXiv:2404.04475), docs/methods.md s5.

    Args:
        judge_p: [n] the judge's P(policy beats reference) per prompt.
        policy_lengths: [n] policy response lengths (any unit, the same for both).
        reference_lengths: [n] reference response lengths.
        z: the normal quantile of the Wilson interval on the raw win rate.

    Returns:
        {"win_rate", "win_rate_low", "win_rate_high", "lc_win_rate", "length_coefficient" (phi, log-odds
        per standard deviation of the length difference), "prompts"}.

    Raises:
        ValueError: no prompt, or a NaN in any input.
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

    Args:
        policy_logprobs: [n] log pi(y|x) of n samples, nats.
        reference_logprobs: [n] log pi_ref(y|x) of the same samples, nats.

    Returns:
        {"kl": mean log-ratio in nats per sample, "kl_se": its standard error (NaN with one sample)}
        (docs/methods.md s5).
    """
    ratio = _as_array(policy_logprobs, "policy_logprobs") - _as_array(reference_logprobs, "reference_logprobs")
    se = float(ratio.std(ddof=1) / math.sqrt(ratio.size)) if ratio.size > 1 else float("nan")
    return {"kl": float(ratio.mean()), "kl_se": se}
