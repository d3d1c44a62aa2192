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


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def evaluate_pair_scores(scored: pl.DataFrame, n_bins: int = 10) -> dict[str, Any]:
    """Accuracy per source and split, calibration against p_chosen and (where known) true_p."""
    if scored.is_empty():
        raise ValueError("no scored pairs to evaluate: is the evaluated split empty? check evaluation.splits")
    result: dict[str, Any] = {
        "accuracy": m.pair_accuracy(scored["logit"]),
        "accuracy_by_source_split": _rows(m.accuracy_by(scored, ["source", "split"])),
        "calibration_p_chosen": m.calibration_report(scored["logit"], scored["p_chosen"], n_bins),
        "reliability_p_chosen": _rows(m.reliability_bins(m.sigmoid(scored["logit"].to_numpy()),
                                                         scored["p_chosen"], n_bins)),
        "calibration_by_source": {},
    }
    with_truth = scored.filter(pl.col("true_p").is_not_null())
    if with_truth.height:
        result["calibration_true_p"] = m.calibration_report(with_truth["logit"], with_truth["true_p"], n_bins)
        result["reliability_true_p"] = _rows(m.reliability_bins(m.sigmoid(with_truth["logit"].to_numpy()),
                                                                with_truth["true_p"], n_bins))
    for (source,), group in scored.group_by(["source"], maintain_order=True):
        target = "true_p" if group["true_p"].null_count() == 0 else "p_chosen"
        report = m.calibration_report(group["logit"], group[target], n_bins)
        result["calibration_by_source"][source] = {**report, "target": target,
                                                   "accuracy": m.pair_accuracy(group["logit"])}
    return result


def evaluate_rewardbench(scored: pl.DataFrame, sections: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    return m.rewardbench_scores(scored, sections)


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


# ---------------------------------------------------------------------------------------------
# All models side by side
# ---------------------------------------------------------------------------------------------
COMPARISON_COLUMNS = [
    ("accuracy", ("pairs", "accuracy")),
    ("ece_p_chosen", ("pairs", "calibration_p_chosen", "ece")),
    ("ece_true_p", ("pairs", "calibration_true_p", "ece")),
    ("brier_true_p", ("pairs", "calibration_true_p", "brier")),
    ("nll_p_chosen", ("pairs", "calibration_p_chosen", "nll")),
    ("rewardbench", ("rewardbench", "overall")),
    ("cyclic", ("cyclic", "consistency")),
    ("win_rate", ("generation", "win_rate")),
    ("win_low", ("generation", "win_rate_low")),
    ("win_high", ("generation", "win_rate_high")),
    ("lc_win_rate", ("generation", "lc_win_rate")),
    ("mean_length", ("generation", "mean_length")),
    ("kl", ("generation", "kl")),
]


def _dig(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def comparison_table(models: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    """One row per model, the headline numbers as columns (null where a metric does not apply)."""
    sections = sorted({s for metrics in models.values() for s in (_dig(metrics, ["rewardbench", "sections"]) or {})})
    rows = []
    for name, metrics in models.items():
        row: dict[str, Any] = {"model": name, "kind": metrics.get("kind")}
        for column, path in COMPARISON_COLUMNS:
            row[column] = _dig(metrics, path)
        for section in sections:
            row[f"rb_{section}"] = _dig(metrics, ["rewardbench", "sections", section])
        rows.append(row)
    schema = {"model": pl.String, "kind": pl.String, **{c: pl.Float64 for c, _ in COMPARISON_COLUMNS},
              **{f"rb_{s}": pl.Float64 for s in sections}}
    table = pl.DataFrame(rows, schema=schema)
    return table.select([c for c in table.columns if c in ("model", "kind") or table[c].null_count() < table.height])


def data_summary(pairs: pl.DataFrame) -> pl.DataFrame:
    """Pairs per source, feedback kind and split: the 'data' part of a run's story."""
    return (
        pairs.group_by(["source", "feedback", "signal"]).agg(
            pl.len().alias("pairs"),
            *[(pl.col("split") == s).sum().alias(s) for s in ("train", "val", "test")],
            pl.col("margin").mean().alias("mean_margin"),
            pl.col("p_chosen").mean().alias("mean_p_chosen"),
        ).sort("source")
    )
