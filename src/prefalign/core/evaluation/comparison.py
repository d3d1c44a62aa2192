"""All models side by side: baselines, paired tests, comparison table and the verdict (docs/methods.md s9).

Evaluated tables ("sets"): `pairs` is the in-distribution test split, `heldout` the pairs of the
held-out sources (feedback.split.heldout_sources). Every model's metrics carry, per set, the
evaluation of `evaluate.evaluate_pair_scores`; `_scores` (dropped before the metrics JSON is
written) holds the per-pair logits the paired tests need.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from prefalign.core.evaluation import metrics as m
from prefalign.core.evaluation import statistics as st

LN2 = st.LN2
SETS = {"pairs": "in-distribution test split", "heldout": "held-out sources"}
BASELINES = {"baseline_longer": "longer", "baseline_shorter": "shorter"}
UNINFORMATIVE = "uninformative_p0.5"
# metric -> (label with unit, True if higher is better)
PAIR_METRICS = {
    "accuracy": ("accuracy", True),
    "ece_p_chosen": ("ECE vs p_chosen", False),
    "brier_p_chosen": ("Brier vs p_chosen", False),
    "nll_p_chosen": ("NLL vs p_chosen (nats)", False),
}
_STATISTICS = {"accuracy": "accuracy", "ece_p_chosen": "ece", "brier_p_chosen": "brier", "nll_p_chosen": "nll"}


def baseline_metrics(tables: Mapping[str, pl.DataFrame], bootstrap: st.BootstrapConfig) -> dict[str, dict[str, Any]]:
    """Pick-the-longer and pick-the-shorter (lengths in characters) on each set: accuracy with its interval.

    A length judge is a ranking, not a probability, so it gets no calibration numbers. Its accuracy
    is over the non-tie pairs, like every model's (label ties, p_chosen = 1/2, have no right side).
    """
    baselines: dict[str, dict[str, Any]] = {}
    for name, prefer in BASELINES.items():
        metrics: dict[str, Any] = {"kind": "baseline", "description": f"always prefers the {prefer} response "
                                   "(length in characters; equal lengths count wrong)", "_scores": {}}
        for set_name, table in tables.items():
            if table.is_empty():
                continue
            lengths = table.select(pl.col("chosen").str.len_chars(), pl.col("rejected").str.len_chars())
            logits = st.length_baseline_logits(lengths["chosen"].to_numpy(), lengths["rejected"].to_numpy(), prefer)
            weights = st.prompt_resample_weights(table["prompt_id"].to_list(), bootstrap.resamples, bootstrap.seed)
            ties = m.label_ties(table["p_chosen"])
            accuracy = st.bootstrap_estimate(st.weighted_mean((logits > 0).astype(float), ~ties), weights,
                                             bootstrap.level)
            metrics[set_name] = {"pairs": table.height, "label_ties": int(ties.sum()),
                                 "accuracy_pairs": int((~ties).sum()),
                                 "accuracy": accuracy["value"] if accuracy else None,
                                 "intervals": {"accuracy": accuracy}}
            metrics["_scores"][set_name] = {"pair_id": table["pair_id"].to_list(),
                                            "prompt_id": table["prompt_id"].to_list(), "logit": logits.tolist()}
        baselines[name] = metrics
    return baselines


def paired_tests(models: Mapping[str, Mapping[str, Any]], tables: Mapping[str, pl.DataFrame],
                 groups: Sequence[Sequence[str]], bootstrap: st.BootstrapConfig, n_bins: int) -> list[dict[str, Any]]:
    """Every two models of a group, on the pairs both scored: paired bootstrap of each metric's
    difference (a - b) and McNemar's test for accuracy. Baselines get accuracy only. Accuracy and
    McNemar are over the non-tie pairs (label ties, p_chosen = 1/2, set aside and counted in
    `ties_set_aside`); ECE, Brier and NLL over all the pairs both scored.

    Returns:
        rows {set, a, b, metric, pairs, ties_set_aside, difference, low, high, level, p_value,
        significant, mcnemar_p, mcnemar_method}; significant = the paired-bootstrap interval at
        `bootstrap.level` excludes 0.
    """
    rows: list[dict[str, Any]] = []
    for set_name, table in tables.items():
        if table.is_empty():
            continue
        target = table.select("pair_id", "p_chosen")
        for group in groups:
            present = [n for n in group if set_name in (models.get(n, {}).get("_scores") or {})]
            for a, b in combinations(present, 2):
                if models[a].get("kind") == "baseline" and models[b].get("kind") == "baseline":
                    continue
                joined = (pl.DataFrame(models[a]["_scores"][set_name])
                          .join(pl.DataFrame(models[b]["_scores"][set_name]).select("pair_id", "logit"),
                                on="pair_id", suffix="_b")
                          .join(target, on="pair_id").sort("pair_id"))
                if joined.is_empty():
                    continue
                weights = st.prompt_resample_weights(joined["prompt_id"].to_list(), bootstrap.resamples, bootstrap.seed)
                la, lb, t = joined["logit"].to_numpy(), joined["logit_b"].to_numpy(), joined["p_chosen"].to_numpy()
                ties = m.label_ties(t)
                stats_a = st.pair_metric_statistics(la, t, n_bins, ties)
                stats_b = st.pair_metric_statistics(lb, t, n_bins, ties)
                with_baseline = "baseline" in (models[a].get("kind"), models[b].get("kind"))
                for metric in (["accuracy"] if with_baseline else list(PAIR_METRICS)):
                    if metric == "accuracy" and ties.all():
                        continue  # every pair is a label tie: no accuracy to compare
                    diff = st.paired_difference(stats_a[_STATISTICS[metric]], stats_b[_STATISTICS[metric]],
                                                weights, bootstrap.level)
                    row = {"set": set_name, "a": a, "b": b, "metric": metric,
                           "pairs": int((~ties).sum()) if metric == "accuracy" else joined.height,
                           "ties_set_aside": int(ties.sum()) if metric == "accuracy" else 0, **diff,
                           "resamples": int(weights.shape[0]),
                           "significant": bool(diff["low"] > 0 or diff["high"] < 0),
                           "mcnemar_p": None, "mcnemar_method": None}
                    if metric == "accuracy":
                        test = st.mcnemar_test(la[~ties] > 0, lb[~ties] > 0, bootstrap.exact_mcnemar_below)
                        row.update(mcnemar_p=test["p_value"], mcnemar_method=test["method"])
                    rows.append(row)
    return rows


def _dig(tree: Any, path: Sequence[str]) -> Any:
    """``tree[path[0]][path[1]]...``, or None where a key is missing (metrics trees are ragged)."""
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


MODEL_COLUMNS = [
    ("rewardbench", ("rewardbench", "overall")),
    ("cyclic", ("cyclic", "consistency")),
    ("win_rate", ("generation", "win_rate")),
    ("win_low", ("generation", "win_rate_low")),
    ("win_high", ("generation", "win_rate_high")),
    ("lc_win_rate", ("generation", "lc_win_rate")),
    ("mean_length_chars", ("generation", "mean_length")),
    ("kl_nats", ("generation", "kl")),
    ("kl_se", ("generation", "kl_se")),
]


def comparison_table(models: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    """One row per (set, model): pair metrics with interval bounds, length bias, truncation, and
    the model-level numbers (RewardBench, cycles, generation) repeated on each of its rows."""
    sections = sorted({s for m in models.values() for s in (_dig(m, ["rewardbench", "sections"]) or {})})
    rows = []
    for set_name in SETS:
        for name, metrics in models.items():
            evaluated = metrics.get(set_name)
            if not evaluated:
                continue
            row: dict[str, Any] = {"set": set_name, "model": name, "kind": metrics.get("kind"),
                                   "pairs": evaluated.get("pairs"), "label_ties": evaluated.get("label_ties")}
            for metric in PAIR_METRICS:
                estimate = _dig(evaluated, ["intervals", metric]) or {}
                row[metric] = estimate.get("value")
                row[f"{metric}_low"], row[f"{metric}_high"] = estimate.get("low"), estimate.get("high")
            bias = evaluated.get("length_bias") or {}
            row["prefers_longer"] = bias.get("prefers_longer_rate")
            row["accuracy_chosen_longer"] = bias.get("accuracy_chosen_longer")
            row["accuracy_chosen_shorter"] = bias.get("accuracy_chosen_shorter")
            row["identical_after_truncation"] = evaluated.get("identical_after_truncation")
            row["ece_true_p"] = _dig(evaluated, ["intervals", "ece_true_p", "value"])
            for column, path in MODEL_COLUMNS:
                row[column] = _dig(metrics, path)
            for section in sections:
                row[f"rb_{section}"] = _dig(metrics, ["rewardbench", "sections", section])
            rows.append(row)
    counts = ("pairs", "label_ties", "identical_after_truncation")
    float_columns = [c for c in (rows[0] if rows else {}) if c not in ("set", "model", "kind", *counts)]
    schema = {"set": pl.String, "model": pl.String, "kind": pl.String, **{c: pl.Int64 for c in counts},
              **{c: pl.Float64 for c in float_columns}}
    table = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema={"set": pl.String, "model": pl.String})
    return table.select([c for c in table.columns if table[c].null_count() < table.height or c in ("set", "model")])


def uninformative_rows(tables: Mapping[str, pl.DataFrame], bootstrap: st.BootstrapConfig,
                       n_bins: int) -> dict[str, dict[str, Any]]:
    """Per set, the p = 0.5 predictor's ECE, Brier, NLL (NLL = ln 2) on ALL that set's pairs, once.

    It needs no model, so it is one row per set, not one copy per model (the copies differed: each
    covered only the pairs its model scored, e.g. the ground truth's synthetic pairs).

    Args:
        tables: set name -> the evaluated pairs (p_chosen, prompt_id); empty sets are skipped.
        bootstrap: resamples, seed and level of the prompt-clustered intervals (same weights as the models).
        n_bins: equal-width bins of the ECE.

    Returns:
        {set: {"pairs": n, "ece": {value, low, high}, "brier": ..., "nll": ...}}.
    """
    rows: dict[str, dict[str, Any]] = {}
    for set_name, table in tables.items():
        if table.is_empty():
            continue
        weights = st.prompt_resample_weights(table["prompt_id"].to_list(), bootstrap.resamples, bootstrap.seed)
        rows[set_name] = {"pairs": table.height,
                          **st.uninformative_metrics(table["p_chosen"].to_numpy(), weights, n_bins, bootstrap.level)}
    return rows


def format_estimate(estimate: Mapping[str, float] | None, missing: str = "n/a") -> str:
    """An interval estimate as "value [low, high]" to 3 decimals; `missing` when there is none.

    Args:
        estimate: {value, low, high} (statistics.bootstrap_estimate) or None.
        missing: the text for a missing estimate ("n/a" in sentences, "" in table cells).
    """
    if not estimate or estimate.get("value") is None:
        return missing
    return f"{estimate['value']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _find(tests: Sequence[Mapping[str, Any]], set_name: str, metric: str, a: str, b: str) -> tuple[dict | None, int]:
    for row in tests:
        if row["set"] == set_name and row["metric"] == metric and {row["a"], row["b"]} == {a, b}:
            return dict(row), (1 if row["a"] == a else -1)
    return None, 1


def format_p(p_value: float, resamples: int | None = None) -> str:
    """A bootstrap p-value of 0 means 'below 1/B', never 0."""
    if resamples and p_value < 1.0 / resamples:
        return f"p<{1.0 / resamples:.3g}"
    return f"p={p_value:.3f}"


def _difference_words(row: Mapping[str, Any] | None, sign: int, higher_better: bool) -> str:
    if row is None:
        return "no paired test (different pairs)"
    diff, low, high = sign * row["difference"], *sorted((sign * row["low"], sign * row["high"]))
    words = "significant" if row["significant"] else "not significant"
    text = (f"difference {diff:+.3f} [{low:+.3f}, {high:+.3f}], paired bootstrap "
            f"{format_p(row['p_value'], row.get('resamples'))}")
    if row.get("mcnemar_p") is not None:
        text += f", McNemar p={row['mcnemar_p']:.3f}"
    return f"{text}: {words}"


def verdict(models: Mapping[str, Mapping[str, Any]], tests: Sequence[Mapping[str, Any]],
            kinds: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Per set, kind and metric: the best model with its interval, and in words whether its lead over
    the runner-up, over pick-the-longer (accuracy) and over p = 0.5 (NLL) is significant.

    Args:
        kinds: label -> model names compared together (e.g. "reward models" -> [reward_bt, ...]).

    Returns:
        rows {set, kind, metric, best, estimate, statement}.
    """
    rows = []
    for set_name in SETS:
        for kind, names in kinds.items():
            candidates = [n for n in names if _dig(models.get(n, {}), [set_name, "intervals", "accuracy"])]
            if not candidates:
                continue
            for metric, (label, higher_better) in PAIR_METRICS.items():
                scored = [(n, models[n][set_name]["intervals"][metric]) for n in candidates
                          if _dig(models[n], [set_name, "intervals", metric])]
                if not scored:
                    continue
                scored.sort(key=lambda item: item[1]["value"], reverse=higher_better)
                best, estimate = scored[0]
                arrow = "↑" if higher_better else "↓"
                singular = {"policies": "policy", "reward models": "reward model"}.get(kind, kind)
                tied = [n for n, e in scored[1:] if e["value"] == estimate["value"]]
                parts = [f"best {singular} by {label} {arrow}: {best} {format_estimate(estimate)}"
                         + (f" (tied with {', '.join(tied)})" if tied else "")]
                if len(scored) > 1:
                    second = scored[1][0]
                    row, sign = _find(tests, set_name, metric, best, second)
                    parts.append(f"vs runner-up {second}: {_difference_words(row, sign, higher_better)}")
                if metric == "accuracy":
                    row, sign = _find(tests, set_name, metric, best, "baseline_longer")
                    if row is not None:
                        parts.append(f"vs pick-the-longer: {_difference_words(row, sign, True)}")
                if metric == "nll_p_chosen":
                    if estimate["high"] < LN2:
                        parts.append("better than the uninformative p = 0.5 (interval below ln 2 = 0.693)")
                    elif estimate["low"] > LN2:
                        parts.append("WORSE than the uninformative p = 0.5 (interval above ln 2 = 0.693)")
                    else:
                        parts.append("no better than the uninformative p = 0.5 (interval includes ln 2 = 0.693)")
                rows.append({"set": set_name, "kind": kind, "metric": metric, "best": best,
                             "estimate": estimate, "statement": "; ".join(parts) + "."})
    return rows


def generation_verdict(models: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """The best policy by raw and by length-controlled win rate against the SFT reference, in words."""
    judged = [(n, models[n]["generation"]) for n in names if _dig(models.get(n, {}), ["generation", "win_rate"]) is not None]
    if not judged:
        return []
    best, gen = max(judged, key=lambda item: item[1]["win_rate"])
    tied = [n for n, g in judged if n != best and g["win_rate"] == gen["win_rate"]]
    overlap = [n for n, g in judged if n != best and n not in tied and g["win_rate_high"] >= gen["win_rate_low"]]
    line = (f"best policy by win rate vs the SFT reference ↑: {best} {gen['win_rate']:.3f} "
            f"[{gen['win_rate_low']:.3f}, {gen['win_rate_high']:.3f}] (95% Wilson, {gen['prompts']} comparisons)")
    if tied:
        line += f"; tied with {', '.join(tied)}"
    if overlap:
        line += f"; its interval overlaps {', '.join(overlap)} (no paired test: each policy has its own samples)"
    best_lc, gen_lc = max(judged, key=lambda item: item[1]["lc_win_rate"])
    tied_lc = [n for n, g in judged if n != best_lc and g["lc_win_rate"] == gen_lc["lc_win_rate"]]
    lc_line = f"best policy by length-controlled win rate ↑: {best_lc} {gen_lc['lc_win_rate']:.3f}"
    if tied_lc:
        lc_line += f"; tied with {', '.join(tied_lc)}"
    elif best_lc != best and not tied:
        lc_line += f" (not {best}: length explains part of its raw win rate)"
    return [line, lc_line]


def significant_differences(tests: Sequence[Mapping[str, Any]], set_name: str) -> list[str]:
    """In words, every significant paired difference between two models (not baselines) on a set."""
    lines = []
    for row in tests:
        if row["set"] != set_name or not row["significant"] or "baseline" in row["a"] + row["b"]:
            continue
        label, higher_better = PAIR_METRICS[row["metric"]]
        a_better = (row["difference"] > 0) == higher_better
        better, worse = (row["a"], row["b"]) if a_better else (row["b"], row["a"])
        lines.append(f"{better} better than {worse} on {label} {'↑' if higher_better else '↓'} ({row['a']} − {row['b']} = "
                     f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}], "
                     f"{format_p(row['p_value'], row.get('resamples'))})")
    return lines
