"""Intervals, paired tests and length bias for pair metrics (docs/methods.md s9).

Pairs that share a prompt are not independent (one prompt gives several pairs, and a model that
misreads the prompt gets all of them wrong), so every interval here resamples PROMPTS, not pairs:
a cluster bootstrap (Efron & Tibshirani 1993, ch. 6; Field & Welsh 2007, "Bootstrapping clustered
data"). One resample is a vector of weights, one per pair: how many times its prompt was drawn.
Every statistic below is written as a weighted statistic, so the B resamples of a table are one
(B, n_pairs) weight matrix and one matrix product, not B Python loops.

Paired comparisons of two models on the SAME pairs use the SAME resampled weights for both, so
the interval of the difference reflects the pairing. McNemar's test (McNemar 1947) compares the
two models' accuracies from the discordant pairs alone (exact binomial below a configurable number
of discordant pairs, the chi-square with continuity correction above it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from scipy import stats as scipy_stats

from prefalign.core.evaluation.metrics import (WeightedStatistic, _as_array, calibration_bin_gaps, per_pair_nll,
                                               per_pair_squared_error)
from prefalign.core.models.params import dataclass_from_params

LN2 = math.log(2.0)
# An interval resampled from fewer prompts than this is not reported: with a handful of clusters the
# percentile bootstrap gives near-zero widths (e.g. 1.000 [1.000, 1.000] from 6 pairs of 2 prompts).
MIN_INTERVAL_PROMPTS = 10


@dataclass(frozen=True)
class BootstrapConfig:
    """How intervals are drawn: `resamples` prompt resamples, seeded, at `level` (0.95 = 95%)."""

    resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    exact_mcnemar_below: int = 25  # exact binomial McNemar when discordant pairs < this

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> "BootstrapConfig":
        """The ``evaluation.bootstrap`` block, checked (the one rule: the pre-run check calls this too).

        Args:
            params: the block; None = defaults (1000 resamples, seed 0, 95%).

        Returns:
            The checked configuration.

        Raises:
            ParameterError: an unknown key or a wrong type.
            ValueError: resamples < 10, level outside (0.5, 1), a negative seed or exact_mcnemar_below < 1.
        """
        config = dataclass_from_params(cls, params, "evaluation.bootstrap")
        if config.resamples < 10:
            raise ValueError(f"evaluation.bootstrap.resamples={config.resamples}: use at least 10 (1000 is usual)")
        if not 0.5 < float(config.level) < 1.0:
            raise ValueError(f"evaluation.bootstrap.level={config.level}: give a coverage in (0.5, 1), e.g. 0.95")
        if config.seed < 0:
            raise ValueError(f"evaluation.bootstrap.seed={config.seed}: a numpy seed is an integer >= 0")
        if config.exact_mcnemar_below < 1:
            raise ValueError(f"evaluation.bootstrap.exact_mcnemar_below={config.exact_mcnemar_below}: give a count "
                             ">= 1 of discordant pairs (25 is usual)")
        return config

    @property
    def label(self) -> str:
        """How the intervals are labelled everywhere (report, JSON, verdict): e.g. "95%"."""
        return f"{self.level:.0%}"


def prompt_resample_weights(prompt_ids: Sequence[Any], resamples: int, seed: int) -> np.ndarray:
    """Cluster-bootstrap weights: (resamples, n_pairs), entry = times the pair's prompt was drawn.

    Each resample draws G prompts with replacement out of the G distinct prompts; a pair then
    counts as many times as its prompt was drawn. The weights depend only on (prompt ids, B, seed)
    and one evaluation asks for the same ones many times (every model, every paired test, on the
    same set), so they are computed once and kept (an LRU cache of the last `_WEIGHTS_CACHE_SIZE`
    keys); the array returned is read-only because callers share it.

    Args:
        prompt_ids: one prompt id per pair (n_pairs); compared as text (str of each id).
        resamples: B, the number of bootstrap resamples.
        seed: numpy Generator seed (same seed, same weights).

    Returns:
        float64 array [B, n_pairs], read-only (copy it to change it).

    Raises:
        ValueError: no pair at all.
    """
    key = tuple(np.asarray(list(prompt_ids), dtype=object).astype(str).tolist())
    return _cached_resample_weights(key, int(resamples), int(seed))


_WEIGHTS_CACHE_SIZE = 32  # a run's distinct pair sets: per set, its sources, its true_p rows, the paired joins


@lru_cache(maxsize=_WEIGHTS_CACHE_SIZE)
def _cached_resample_weights(prompt_ids: tuple[str, ...], resamples: int, seed: int) -> np.ndarray:
    _, codes = np.unique(np.asarray(prompt_ids, dtype=object).astype(str), return_inverse=True)
    groups = int(codes.max()) + 1 if codes.size else 0
    if groups == 0:
        raise ValueError("the bootstrap needs at least one pair")
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, groups, size=(resamples, groups))
    counts = np.zeros((resamples, groups))
    np.add.at(counts, (np.repeat(np.arange(resamples), groups), drawn.reshape(-1)), 1.0)
    weights = counts[:, codes]
    weights.flags.writeable = False
    return weights


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of the bootstrap values (percentile method).

    Args:
        values: [B] bootstrap values of one statistic (non-finite ones are dropped).
        level: the coverage (0.95 = 95%).

    Returns:
        (low, high) in the statistic's units; (NaN, NaN) when no value is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Weighted statistics: each maps weights (B, n) to B values; with weights = ones((1, n)) it is the
# plain statistic of the table.
# ---------------------------------------------------------------------------------------------
def weighted_mean(values: np.ndarray, include: np.ndarray | None = None) -> WeightedStatistic:
    """sum_i w_i m_i x_i / sum_i w_i m_i: accuracy (x = correct, m = not a label tie), Brier (x = (p - t)^2),
    NLL (x = log-loss). m = 1 everywhere when `include` is None; NaN where no included pair has weight.

    Args:
        values: [n] per-pair values x.
        include: [n] 0/1 (or bool) mask m; None = every pair.

    Returns:
        A statistic mapping weights [B, n] to [B] values (in x's units).
    """
    x = np.asarray(values, dtype=np.float64)
    m = np.ones(x.shape) if include is None else np.asarray(include, dtype=np.float64)
    mx = m * x

    def statistic(weights: np.ndarray) -> np.ndarray:
        total = weights @ m
        return np.divide(weights @ mx, total, out=np.full(total.shape, np.nan), where=total > 0)

    return statistic


def weighted_ece(logits: np.ndarray, target: np.ndarray, n_bins: int = 10) -> WeightedStatistic:
    """Symmetric ECE with weights: sum_b |sum_i w_i gap_ib| / sum_i w_i, gap = metrics.calibration_bin_gaps
    (each pair in both orientations, equal-width bins); with every weight 1 it is the plain ECE.

    Args:
        logits: [n] logit of P(chosen > rejected).
        target: [n] soft target in [0, 1].
        n_bins: 10-15 equal-width bins.

    Returns:
        A statistic mapping weights [B, n] to [B] ECE values (probability units, in [0, 1]).

    Raises:
        ValueError: ``n_bins`` outside 10-15, NaN inputs or inputs of different lengths (calibration_bin_gaps).
    """
    gap = calibration_bin_gaps(logits, target, n_bins)  # (n, bins)

    def statistic(weights: np.ndarray) -> np.ndarray:
        total = weights.sum(axis=1)
        return np.abs(weights @ gap).sum(axis=1) / np.where(total > 0, total, np.nan)

    return statistic


def bootstrap_estimate(statistic: WeightedStatistic, weights: np.ndarray, level: float = 0.95,
                       prompts: int | None = None) -> dict[str, Any] | None:
    """{value, low, high, level}: the statistic on the table itself and its percentile interval at
    `level` (0.95 = 95%); None when the statistic has no value on the table (e.g. the accuracy of
    pairs that are all label ties).

    Args:
        statistic: weights [B, n] -> values [B] (a weighted statistic of this module).
        weights: [B, n] prompt-resample weights (prompt_resample_weights).
        level: the interval's coverage.
        prompts: the number of distinct prompts (clusters) behind the weights, when known: it is
            recorded as `prompts`, and below MIN_INTERVAL_PROMPTS the interval is not computed
            (low = high = None): a cluster bootstrap over a handful of prompts has no meaningful width.

    Returns:
        {"value", "low", "high", "level"[, "prompts"]} in the statistic's units; low and high are None
        below MIN_INTERVAL_PROMPTS prompts; None when the statistic is not finite on the table.
    """
    value = float(statistic(np.ones((1, weights.shape[1])))[0])
    if not math.isfinite(value):
        return None
    estimate: dict[str, Any] = {"value": value, "low": None, "high": None, "level": float(level)}
    if prompts is not None:
        estimate["prompts"] = int(prompts)
        if prompts < MIN_INTERVAL_PROMPTS:
            return estimate
    estimate["low"], estimate["high"] = percentile_interval(statistic(weights), level)
    return estimate


def count_prompts(prompt_ids: Sequence[Any]) -> int:
    """Distinct prompts (compared as text, like prompt_resample_weights): the clusters of the bootstrap.

    Args:
        prompt_ids: one prompt id per pair.

    Returns:
        The number of distinct ``str(id)`` values.
    """
    return len({str(p) for p in prompt_ids})


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of m p-values of one family of tests (Holm 1979).

    Sort ascending, p_(1) <= ... <= p_(m); the adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)),
    returned in the input's order. Rejecting where the adjusted p < alpha controls the family-wise
    error rate at alpha under any dependence between the tests.

    Args:
        p_values: [m] p-values in [0, 1] (any order); m = 0 gives an empty array.

    Returns:
        float64 [m], adjusted p-values, each >= its raw p-value and <= 1.

    Raises:
        ValueError: a p-value outside [0, 1] or NaN (names it).
    """
    p = np.asarray(list(p_values), dtype=np.float64)
    bad = p[~((p >= 0) & (p <= 1))]
    if bad.size:
        raise ValueError(f"p-values must lie in [0, 1]: got {bad[0]!r}; pass the tests' p_value fields")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):  # rank = j - 1
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def paired_difference(statistic_a: WeightedStatistic, statistic_b: WeightedStatistic, weights: np.ndarray,
                      level: float = 0.95) -> dict[str, float]:
    """Paired bootstrap of a - b on the same pairs (same resampled prompts for both models).

    Returns:
        difference (on the table), low, high (percentile interval), p_value: the two-sided
        bootstrap p-value 2 * min(P*(d <= 0), P*(d >= 0)), capped at 1.

    Source: docs/methods.md s9.3 (paired comparisons on shared resamples).

    Args:
        statistic_a: model A's weighted statistic (weights [B, n] -> [B]).
        statistic_b: model B's, on the same n pairs.
        weights: [B, n] prompt-resample weights shared by both.
        level: the interval's coverage.
    """
    ones = np.ones((1, weights.shape[1]))
    difference = float(statistic_a(ones)[0] - statistic_b(ones)[0])
    resampled = statistic_a(weights) - statistic_b(weights)
    resampled = resampled[np.isfinite(resampled)]
    low, high = percentile_interval(resampled, level)
    p_value = min(1.0, 2.0 * min(float((resampled <= 0).mean()), float((resampled >= 0).mean())))
    return {"difference": difference, "low": low, "high": high, "p_value": p_value, "level": float(level)}


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool], exact_below: int = 25) -> dict[str, Any]:
    """McNemar's test of equal accuracy of two models on the same pairs (McNemar 1947).

    b = pairs only A gets right, c = pairs only B gets right. Under H0 each discordant pair is
    A's with probability 1/2: exact two-sided binomial test of b out of b + c when b + c <
    `exact_below` (scipy.stats.binomtest), else the chi-square statistic with continuity
    correction (|b - c| - 1)^2 / (b + c) on 1 degree of freedom.

    Returns:
        {"only_a": b, "only_b": c, "method": "exact" | "chi2" | "none", "p_value"}; p = 1 when
        there is no discordant pair.

    Args:
        correct_a: [n] whether model A gets each pair right.
        correct_b: [n] whether model B gets the same pairs right.
        exact_below: the exact binomial test is used below this many discordant pairs.

    Raises:
        ValueError: the two inputs have different shapes.
    """
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"McNemar needs the two models on the same pairs: {a.size} vs {b_.size} results")
    only_a, only_b = int((a & ~b_).sum()), int((~a & b_).sum())
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "method": "none", "p_value": 1.0}
    if n < exact_below:
        p_value = float(scipy_stats.binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)
        return {"only_a": only_a, "only_b": only_b, "method": "exact", "p_value": min(1.0, p_value)}
    statistic = (abs(only_a - only_b) - 1.0) ** 2 / n
    return {"only_a": only_a, "only_b": only_b, "method": "chi2",
            "p_value": float(scipy_stats.chi2.sf(statistic, df=1))}


# ---------------------------------------------------------------------------------------------
# One model's pair metrics (the per-pair terms are metrics.py's: one implementation each)
# ---------------------------------------------------------------------------------------------
def pair_metric_statistics(logits: np.ndarray, target: np.ndarray, n_bins: int,
                           ties: np.ndarray | None = None) -> dict[str, WeightedStatistic]:
    """accuracy, ECE, Brier and NLL of one model on one table, each as a weighted statistic.

    The one definition behind pair_metric_intervals (one model), the paired tests (two models on
    the same weights, comparison.paired_tests) and uninformative_metrics (logit 0, p = 0.5).

    Args:
        logits: [n] logit of P(chosen > rejected); accuracy counts logit > 0 (a predicted 0 is wrong).
        target: [n] soft target in [0, 1] (p_chosen, or true_p where known).
        n_bins: equal-width bins of the ECE (10-15).
        ties: [n] bool, the pairs whose LABEL is a tie (metrics.label_ties of p_chosen): set aside
            from accuracy, kept in ECE / Brier / NLL. None: no label tie.

    Returns:
        {name: weights [B, n] -> values [B]} for accuracy, ece (symmetric), brier, nll (nats, from the logit).
    """
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    decided = None if ties is None else ~np.asarray(ties, dtype=bool)
    return {
        "accuracy": weighted_mean((x > 0).astype(float), decided),
        "ece": weighted_ece(x, t, n_bins),
        "brier": weighted_mean(per_pair_squared_error(x, t)),
        "nll": weighted_mean(per_pair_nll(x, t)),
    }


def pair_metric_intervals(logits: np.ndarray, target: np.ndarray, weights: np.ndarray, n_bins: int,
                          level: float = 0.95, ties: np.ndarray | None = None,
                          prompts: int | None = None) -> dict[str, dict[str, Any] | None]:
    """accuracy, ECE, Brier and NLL of one model on one table, each {value, low, high, level}.

    Args:
        logits: [n] logit of P(chosen > rejected).
        target: [n] soft target in [0, 1].
        weights: [B, n] prompt-resample weights (prompt_resample_weights).
        n_bins: equal-width bins of the ECE (10-15).
        level: the interval's coverage (0.95 = 95%).
        ties: [n] label ties, set aside from accuracy only (pair_metric_statistics).
        prompts: distinct prompts behind the weights (count_prompts); fewer than MIN_INTERVAL_PROMPTS
            leave every interval out (bootstrap_estimate).

    Returns:
        {name: {value, low, high, level[, prompts]}}; accuracy is None when every pair is a label tie.
        ECE and Brier in probability units, NLL in nats per pair.
    """
    return {name: bootstrap_estimate(statistic, weights, level, prompts)
            for name, statistic in pair_metric_statistics(logits, target, n_bins, ties).items()}


# ---------------------------------------------------------------------------------------------
# Length bias
# ---------------------------------------------------------------------------------------------
def length_baseline_logits(chosen_lengths: np.ndarray, rejected_lengths: np.ndarray, prefer: str) -> np.ndarray:
    """A judge that picks the longer (or shorter) response: logit +1 / -1, 0 on equal lengths (wrong).

    Source: docs/methods.md s9.4.

    Args:
        chosen_lengths: [n] chosen response lengths (any one unit).
        rejected_lengths: [n] rejected response lengths.
        prefer: ``longer`` or ``shorter``.

    Returns:
        float64 [n] of +1, -1 or 0.

    Raises:
        ValueError: ``prefer`` is neither ``longer`` nor ``shorter``.
    """
    sign = np.sign(np.asarray(chosen_lengths, dtype=np.float64) - np.asarray(rejected_lengths, dtype=np.float64))
    if prefer == "longer":
        return sign
    if prefer == "shorter":
        return -sign
    raise ValueError(f"prefer={prefer!r}: use 'longer' or 'shorter'")


def length_bias(logits: np.ndarray, chosen_lengths: np.ndarray, rejected_lengths: np.ndarray,
                ties: np.ndarray | None = None) -> dict[str, Any]:
    """How a model's choices relate to response length (lengths in any one unit, e.g. characters).

    Over pairs whose two responses differ in length:
    - accuracy_chosen_longer / accuracy_chosen_shorter: accuracy on the non-tie pairs where the
      chosen response is the longer / the shorter one (null when there is no such pair);
    - prefers_longer_rate: share of all those pairs where the model's preferred response (logit > 0:
      chosen, logit < 0: rejected) is the longer one; a logit of exactly 0 prefers neither and
      counts as not preferring the longer one (a behaviour of the model: label ties count too);
    - chosen_longer_rate: share of the non-tie ones where the LABEL prefers the longer one (what
      pick-the-longer scores). A label tie (`ties`) has no preferred side, so it is in neither
      accuracy nor this rate.

    Source: docs/methods.md s9.4.

    Args:
        logits: [n] the model's logit of P(chosen > rejected).
        chosen_lengths: [n] chosen response lengths.
        rejected_lengths: [n] rejected response lengths, same unit.
        ties: [n] bool label ties; None = none.

    Returns:
        {"pairs_unequal_length", "pairs_chosen_longer", "pairs_chosen_shorter" (counts),
        "accuracy_chosen_longer", "accuracy_chosen_shorter", "prefers_longer_rate",
        "chosen_longer_rate" (shares in [0, 1] or None)}.
    """
    x = np.asarray(logits, dtype=np.float64)
    diff = np.asarray(chosen_lengths, dtype=np.float64) - np.asarray(rejected_lengths, dtype=np.float64)
    decided = np.ones(x.shape, dtype=bool) if ties is None else ~np.asarray(ties, dtype=bool)
    unequal = (diff > 0) | (diff < 0)
    picks_longer = ((diff > 0) & (x > 0)) | ((diff < 0) & (x < 0))
    longer, shorter = (diff > 0) & decided, (diff < 0) & decided
    correct = x > 0

    def share(mask: np.ndarray, of: np.ndarray) -> float | None:
        return float(mask[of].mean()) if of.any() else None

    return {
        "pairs_unequal_length": int(unequal.sum()),
        "pairs_chosen_longer": int(longer.sum()),
        "pairs_chosen_shorter": int(shorter.sum()),
        "accuracy_chosen_longer": share(correct, longer),
        "accuracy_chosen_shorter": share(correct, shorter),
        "prefers_longer_rate": share(picks_longer, unequal),
        "chosen_longer_rate": share(longer, unequal & decided),
    }


def uninformative_metrics(target: np.ndarray, weights: np.ndarray, n_bins: int, level: float = 0.95,
                          prompts: int | None = None) -> dict[str, Any]:
    """The p = 0.5 predictor (logit 0) on the same pairs: NLL = ln 2 always, the symmetric ECE 0 always
    (both orientations of every pair fall in the middle bin), Brier mean (1/2 - t)^2 depends on the targets.

    Args:
        target: [n] soft targets in [0, 1].
        weights: [B, n] prompt-resample weights.
        n_bins: 10-15 equal-width bins.
        level: the interval's coverage.
        prompts: distinct prompts behind the weights (intervals left out below MIN_INTERVAL_PROMPTS).

    Returns:
        {"ece", "brier", "nll"}: each {value, low, high, level[, prompts]} (``bootstrap_estimate``).
    """
    statistics = pair_metric_statistics(np.zeros(np.asarray(target).shape), target, n_bins)
    return {name: bootstrap_estimate(statistics[name], weights, level, prompts) for name in ("ece", "brier", "nll")}


def calibration_report(logits: Any, target: Any, n_bins: int = 10) -> dict[str, float]:
    """Symmetric ECE, Brier and NLL (nats) of logits against soft targets, on every pair given.

    The value at weights 1 of the same weighted statistics the intervals and paired tests use
    (pair_metric_statistics): there is one implementation of each. (Here, beside them, so that
    metrics.py, which they build on, does not import this module back.)

    Args:
        logits: [n] logit of P(chosen > rejected).
        target: [n] soft target in [0, 1].
        n_bins: 10-15 equal-width bins.

    Returns:
        {"ece", "brier", "nll", "pairs"}: ECE and Brier in probability units, NLL in nats per pair.
    """
    x = _as_array(logits, "logits")
    statistics = pair_metric_statistics(x, _as_array(target, "target"), n_bins)
    ones = np.ones((1, x.size))
    return {**{name: float(statistics[name](ones)[0]) for name in ("ece", "brier", "nll")}, "pairs": int(x.size)}
