"""From score tables to one model's metrics (docs/methods.md s5).

A score table is the evaluated rows plus a `logit` column: the model's logit of
P(chosen > rejected) (pairs, RewardBench rows) or, for triples, `logit_ab`, `logit_bc`,
`logit_ca`. Everything model-specific happens before (core/evaluation/pair_scorers.py); everything
here is plain arithmetic on those numbers.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from prefalign.core.evaluation import metrics as m
from prefalign.core.evaluation import statistics as st
from prefalign.core.schema import ALL_SPLITS


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def evaluate_pair_scores(scored: pl.DataFrame, n_bins: int = 10,
                         bootstrap: st.BootstrapConfig | None = None) -> dict[str, Any]:
    """One model on one table of pairs: accuracy, calibration, intervals, length bias.

    Args:
        scored: pairs with `logit`, `p_chosen`, `true_p` (nullable), `prompt_id`, `source`, `split`,
            `chosen`, `rejected`. An optional boolean column `identical_after_truncation` marks pairs
            whose two sides are the same tokens once truncated: the model cannot tell them apart, so
            they are counted and reported apart, not scored (as wrong or otherwise).
        n_bins: equal-width calibration bins (10-15).
        bootstrap: resamples, seed and level of the prompt-clustered intervals (statistics.py;
            docs/methods.md s9).

    Returns:
        pairs (scored), label_ties (pairs whose label is a tie, p_chosen = 1/2: set aside from
        accuracy, its interval, the length-bias accuracies and the paired tests; kept in ECE /
        Brier / NLL), accuracy_pairs (the non-tie pairs accuracy is over), accuracy (None when every
        pair is a tie), accuracy_by_source_split, intervals ({value, low, high, level, prompts} per
        metric: accuracy, ece / brier / nll against p_chosen and, where known, true_p; low = high =
        None from fewer than statistics.MIN_INTERVAL_PROMPTS prompts), reliability bins,
        length_bias, by_source (per source: pairs, label_ties, target, accuracy, intervals).

    Raises:
        ValueError: no pair to score.
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
    logits, p_chosen = scored["logit"].to_numpy(), scored["p_chosen"].to_numpy()
    ties = m.label_ties(p_chosen)
    weights = st.prompt_resample_weights(scored["prompt_id"].to_list(), bootstrap.resamples, bootstrap.seed)
    intervals = st.pair_metric_intervals(logits, p_chosen, weights, n_bins, bootstrap.level, ties,
                                         st.count_prompts(scored["prompt_id"]))
    result: dict[str, Any] = {
        "pairs": scored.height,
        "label_ties": int(ties.sum()),
        "accuracy_pairs": int((~ties).sum()),
        "identical_after_truncation": identical,
        "accuracy": intervals["accuracy"]["value"] if intervals["accuracy"] else None,
        "accuracy_by_source_split": _rows(m.accuracy_by(scored, ["source", "split"])),
        "reliability_p_chosen": _rows(m.reliability_bins(logits, p_chosen, n_bins)),
        "intervals": {"accuracy": intervals["accuracy"],
                      **{f"{name}_p_chosen": intervals[name] for name in ("ece", "brier", "nll")}},
        "by_source": {},
    }
    lengths = scored.select(pl.col("chosen").str.len_chars(), pl.col("rejected").str.len_chars())
    result["length_bias"] = st.length_bias(logits, lengths["chosen"].to_numpy(), lengths["rejected"].to_numpy(), ties)
    with_truth = scored.filter(pl.col("true_p").is_not_null())
    if with_truth.height:
        truth_logits, true_p = with_truth["logit"].to_numpy(), with_truth["true_p"].to_numpy()
        result["reliability_true_p"] = _rows(m.reliability_bins(truth_logits, true_p, n_bins))
        truth_weights = st.prompt_resample_weights(with_truth["prompt_id"].to_list(), bootstrap.resamples,
                                                   bootstrap.seed)
        truth = st.pair_metric_intervals(truth_logits, true_p, truth_weights, n_bins, bootstrap.level,
                                         prompts=st.count_prompts(with_truth["prompt_id"]))
        result["intervals"].update({f"{name}_true_p": truth[name] for name in ("ece", "brier", "nll")})
    for (source,), group in scored.group_by(["source"], maintain_order=True):
        target = "true_p" if group["true_p"].null_count() == 0 else "p_chosen"
        group_ties = m.label_ties(group["p_chosen"])
        group_weights = st.prompt_resample_weights(group["prompt_id"].to_list(), bootstrap.resamples, bootstrap.seed)
        group_intervals = st.pair_metric_intervals(group["logit"].to_numpy(), group[target].to_numpy(), group_weights,
                                                   n_bins, bootstrap.level, group_ties,
                                                   st.count_prompts(group["prompt_id"]))
        result["by_source"][source] = {
            "pairs": group.height, "label_ties": int(group_ties.sum()), "target": target,
            "accuracy": group_intervals["accuracy"]["value"] if group_intervals["accuracy"] else None,
            "intervals": group_intervals}
    return result


def pair_score_record(scored: pl.DataFrame) -> dict[str, list]:
    """The per-pair numbers paired tests need (pair_id, prompt_id, logit), scored pairs only (the
    tests read each pair's label, and so its ties, from the evaluated table by pair_id).

    Args:
        scored: scored pairs with pair_id, prompt_id, logit (and optionally identical_after_truncation).

    Returns:
        {"pair_id": [...], "prompt_id": [...], "logit": [...]} over the scored pairs.
    """
    if "identical_after_truncation" in scored.columns:
        scored = scored.filter(~pl.col("identical_after_truncation"))
    return {c: scored[c].to_list() for c in ("pair_id", "prompt_id", "logit")}


def evaluate_triples(scored: pl.DataFrame) -> dict[str, Any]:
    """Cyclic consistency of one model on the triples (docs/methods.md s5, "Cyclic consistency").

    Args:
        scored: one row per triple with logit_ab, logit_bc, logit_ca.

    Returns:
        {"consistency", "all_three_right", "triples"} (metrics.cyclic_consistency).
    """
    return m.cyclic_consistency(scored["logit_ab"], scored["logit_bc"], scored["logit_ca"])


def evaluate_generations(generations: pl.DataFrame) -> dict[str, Any]:
    """Win rates, mean length and KL of a policy against the reference on held-out prompts.

    `generations` has one row per prompt: judge_p (the judge's P(policy beats reference)),
    policy_length, reference_length, and optionally policy_logp / reference_logp: the
    sequence log-probs of the policy's sample under the policy and under the reference.

    Args:
        generations: the table described above.

    Returns:
        ``metrics.win_rates``' keys plus mean_length and reference_mean_length (in the lengths' unit,
        characters here) and, with the log-prob columns, kl and kl_se (nats).

    Raises:
        ValueError: no row, or a NaN judge_p / length (``metrics.win_rates``).
    """
    result = m.win_rates(generations["judge_p"], generations["policy_length"], generations["reference_length"])
    result["mean_length"] = float(generations["policy_length"].mean())
    result["reference_mean_length"] = float(generations["reference_length"].mean())
    if {"policy_logp", "reference_logp"} <= set(generations.columns):
        result.update(m.kl_to_reference(generations["policy_logp"], generations["reference_logp"]))
    return result


def data_summary(pairs: pl.DataFrame) -> pl.DataFrame:
    """Pairs per source, feedback kind and split: the 'data' part of a run's story.

    Args:
        pairs: a pairs table (source, feedback, signal, split, margin, p_chosen).

    Returns:
        One row per (source, feedback, signal): pairs, a count per split (train, val, test, heldout),
        mean_margin (the source's unit) and mean_p_chosen; sorted by source.
    """
    return (
        pairs.group_by(["source", "feedback", "signal"]).agg(
            pl.len().alias("pairs"),
            *[(pl.col("split") == s).sum().alias(s) for s in ALL_SPLITS],
            pl.col("margin").mean().alias("mean_margin"),
            pl.col("p_chosen").mean().alias("mean_p_chosen"),
        ).sort("source")
    )
