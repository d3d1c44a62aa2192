"""From score tables to one model's metrics (docs/methods.md s5).

A score table is the evaluated rows plus a `logit` column: the model's logit of
P(chosen > rejected) (pairs, RewardBench rows) or, for triples, `logit_ab`, `logit_bc`,
`logit_ca`. Everything model-specific happens before (core/evaluation/scoring.py); everything
here is plain arithmetic on those numbers.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import polars as pl

from prefalign.core.evaluation import metrics as m
from prefalign.core.evaluation import statistics as st
from prefalign.core.schema import ALL_SPLITS


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def evaluate_pair_scores(scored: pl.DataFrame, n_bins: int = 10,
                         bootstrap: st.BootstrapConfig | None = None) -> dict[str, Any]:
    """One model on one table of pairs: accuracy, calibration, intervals, length bias.

    `scored` is pairs with `logit`; an optional boolean column `identical_after_truncation` marks
    pairs whose two sides are the same tokens once truncated: the model cannot tell them apart, so
    they are counted and reported apart, not scored (as wrong or otherwise). Intervals are 95%
    prompt-clustered bootstrap intervals (statistics.py; docs/methods.md s9) under `intervals`.
    """
    if scored.is_empty():
        raise ValueError("no scored pairs to evaluate: is the evaluated split empty? check evaluation.splits")
    bootstrap = bootstrap or st.BootstrapConfig()
    identical = 0
    if "identical_after_truncation" in scored.columns:
        identical = int(scored["identical_after_truncation"].sum())
        scored = scored.filter(~pl.col("identical_after_truncation"))
        if scored.is_empty():
            raise ValueError(f"all {identical} pairs are token-identical after truncation: raise the model's "
                             "max_length / max_prompt_length")
    result: dict[str, Any] = {
        "pairs": scored.height,
        "identical_after_truncation": identical,
        "accuracy": m.pair_accuracy(scored["logit"]),
        "accuracy_by_source_split": _rows(m.accuracy_by(scored, ["source", "split"])),
        "calibration_p_chosen": m.calibration_report(scored["logit"], scored["p_chosen"], n_bins),
        "reliability_p_chosen": _rows(m.reliability_bins(m.sigmoid(scored["logit"].to_numpy()),
                                                         scored["p_chosen"], n_bins)),
        "calibration_by_source": {},
    }
    weights = st.prompt_resample_weights(scored["prompt_id"].to_list(), bootstrap.resamples, bootstrap.seed)
    logits, p_chosen = scored["logit"].to_numpy(), scored["p_chosen"].to_numpy()
    intervals = st.pair_metric_intervals(logits, p_chosen, weights, n_bins, bootstrap.level)
    result["intervals"] = {"accuracy": intervals["accuracy"],
                           **{f"{name}_p_chosen": intervals[name] for name in ("ece", "brier", "nll")}}
    lengths = scored.select(pl.col("chosen").str.len_chars(), pl.col("rejected").str.len_chars())
    result["length_bias"] = st.length_bias(logits, lengths["chosen"].to_numpy(), lengths["rejected"].to_numpy())
    with_truth = scored.filter(pl.col("true_p").is_not_null())
    if with_truth.height:
        result["calibration_true_p"] = m.calibration_report(with_truth["logit"], with_truth["true_p"], n_bins)
        result["reliability_true_p"] = _rows(m.reliability_bins(m.sigmoid(with_truth["logit"].to_numpy()),
                                                                with_truth["true_p"], n_bins))
        truth_weights = st.prompt_resample_weights(with_truth["prompt_id"].to_list(), bootstrap.resamples,
                                                   bootstrap.seed)
        truth = st.pair_metric_intervals(with_truth["logit"].to_numpy(), with_truth["true_p"].to_numpy(),
                                         truth_weights, n_bins, bootstrap.level)
        result["intervals"].update({f"{name}_true_p": truth[name] for name in ("ece", "brier", "nll")})
    for (source,), group in scored.group_by(["source"], maintain_order=True):
        target = "true_p" if group["true_p"].null_count() == 0 else "p_chosen"
        report = m.calibration_report(group["logit"], group[target], n_bins)
        group_weights = st.prompt_resample_weights(group["prompt_id"].to_list(), bootstrap.resamples, bootstrap.seed)
        result["calibration_by_source"][source] = {
            **report, "target": target, "accuracy": m.pair_accuracy(group["logit"]),
            "intervals": st.pair_metric_intervals(group["logit"].to_numpy(), group[target].to_numpy(), group_weights,
                                                  n_bins, bootstrap.level)}
    return result


def pair_score_record(scored: pl.DataFrame) -> dict[str, list]:
    """The per-pair numbers paired tests need (pair_id, prompt_id, logit), scored pairs only."""
    if "identical_after_truncation" in scored.columns:
        scored = scored.filter(~pl.col("identical_after_truncation"))
    return {c: scored[c].to_list() for c in ("pair_id", "prompt_id", "logit")}


def evaluate_triples(scored: pl.DataFrame) -> dict[str, Any]:
    return m.cyclic_consistency(scored["logit_ab"], scored["logit_bc"], scored["logit_ca"])


def evaluate_generations(generations: pl.DataFrame) -> dict[str, Any]:
    """Win rates, mean length and KL of a policy against the reference on held-out prompts.

    `generations` has one row per prompt: judge_p (the judge's P(policy beats reference)),
    policy_length, reference_length, and optionally policy_logp / reference_logp: the
    sequence log-probs of the policy's sample under the policy and under the reference.
    """
    result = m.win_rates(generations["judge_p"], generations["policy_length"], generations["reference_length"])
    result["mean_length"] = float(generations["policy_length"].mean())
    result["reference_mean_length"] = float(generations["reference_length"].mean())
    if {"policy_logp", "reference_logp"} <= set(generations.columns):
        result.update(m.kl_to_reference(generations["policy_logp"], generations["reference_logp"]))
    return result


def data_summary(pairs: pl.DataFrame) -> pl.DataFrame:
    """Pairs per source, feedback kind and split: the 'data' part of a run's story."""
    return (
        pairs.group_by(["source", "feedback", "signal"]).agg(
            pl.len().alias("pairs"),
            *[(pl.col("split") == s).sum().alias(s) for s in ALL_SPLITS],
            pl.col("margin").mean().alias("mean_margin"),
            pl.col("p_chosen").mean().alias("mean_p_chosen"),
        ).sort("source")
    )
