"""All models side by side: baselines, paired tests, comparison table and the verdict (docs/methods.md s9).

Evaluated tables ("sets"): `pairs` is the in-distribution test split, `heldout` the pairs of the
held-out sources (feedback.split.heldout_sources). Every model's metrics carry, per set, the
evaluation of `evaluate.evaluate_pair_scores`; `_scores` (dropped before the metrics JSON is
written) holds the per-pair logits the paired tests need.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from itertools import combinations
from typing import Any, Mapping, Sequence

import polars as pl

from prefalign.core.evaluation import evaluate
from prefalign.core.evaluation import metrics as m
from prefalign.core.evaluation import statistics as st
from prefalign.core.evaluation.config import EvaluationConfig

log = logging.getLogger(__name__)

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

    Args:
        tables: set name -> evaluated pairs (chosen, rejected, prompt_id, pair_id, p_chosen); empty sets skipped.
        bootstrap: resamples, seed and level of the prompt-clustered intervals.

    Returns:
        {"baseline_longer" | "baseline_shorter": {"kind": "baseline", "description", "_scores": {set: pair_id,
        prompt_id, logit lists}, set: {"pairs", "label_ties", "accuracy_pairs", "accuracy", "intervals"}}}.
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
                                             bootstrap.level, st.count_prompts(table["prompt_id"]))
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

    Each group's tests of one metric on one set are one family: their p-values are Holm-adjusted
    together (holm_family).

    Returns:
        rows {set, a, b, metric, pairs, ties_set_aside, difference, low, high, level, p_value,
        significant, mcnemar_p, mcnemar_method, family_size, p_holm, significant_holm,
        mcnemar_p_holm}; significant = the paired-bootstrap interval at `bootstrap.level` excludes 0
        (unadjusted); significant_holm = p_holm < 1 - level.

    Source: docs/methods.md s9.3.

    Args:
        models: model name -> its metrics, with ``_scores`` {set: {pair_id, prompt_id, logit}} and ``kind``.
        tables: set name -> the evaluated pairs (pair_id, p_chosen).
        groups: lists of model names compared among themselves.
        bootstrap: resamples, seed, level and the exact-McNemar threshold.
        n_bins: equal-width bins of the ECE.
    """
    rows: list[dict[str, Any]] = []
    for set_name, table in tables.items():
        if table.is_empty():
            continue
        target = table.select("pair_id", "p_chosen")
        for group in groups:
            start = len(rows)
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
            for metric in PAIR_METRICS:
                holm_family([r for r in rows[start:] if r["metric"] == metric], bootstrap.level)
    return rows


def holm_family(rows: Sequence[dict[str, Any]], level: float = 0.95) -> None:
    """Holm-adjust one family of paired tests in place (statistics.holm_adjust, Holm 1979).

    Adds family_size (m), p_holm (the adjusted bootstrap p-value; a bootstrap p of 0 is first
    raised to its bound 1/B, so p_holm is an upper bound there), significant_holm (p_holm < 1 -
    level) and, for accuracy, mcnemar_p_holm (McNemar's p-values adjusted the same way).

    Args:
        rows: the tests of one metric among one group of models on one set (paired_tests rows).
        level: the intervals' coverage; the family-wise error rate is 1 - level.
    """
    if not rows:
        return
    raw = [max(r["p_value"], 1.0 / r["resamples"]) if r.get("resamples") else r["p_value"] for r in rows]
    for row, adjusted in zip(rows, st.holm_adjust(raw)):
        row.update(family_size=len(rows), p_holm=float(adjusted), significant_holm=bool(adjusted < 1.0 - level))
    if all(r.get("mcnemar_p") is not None for r in rows):
        for row, adjusted in zip(rows, st.holm_adjust([r["mcnemar_p"] for r in rows])):
            row["mcnemar_p_holm"] = float(adjusted)


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
    the model-level numbers (RewardBench, cycles, generation) repeated on each of its rows.

    Args:
        models: model name -> its metrics (per set: pairs, label_ties, intervals, length_bias, ...).

    Returns:
        A polars table, one row per (set, model); columns that are null on every row are dropped.
    """
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
                          **st.uninformative_metrics(table["p_chosen"].to_numpy(), weights, n_bins, bootstrap.level,
                                                     st.count_prompts(table["prompt_id"]))}
    return rows


NO_INTERVAL = f"n<{st.MIN_INTERVAL_PROMPTS} prompts: no interval"


def format_estimate(estimate: Mapping[str, float] | None, missing: str = "n/a") -> str:
    """An interval estimate as "value [low, high]" to 3 decimals; `missing` when there is none;
    "value (n<10 prompts: no interval)" when it was computed from too few prompts to have one.

    Args:
        estimate: {value, low, high} (statistics.bootstrap_estimate) or None.
        missing: the text for a missing estimate ("n/a" in sentences, "" in table cells).

    Returns:
        The text.
    """
    if not estimate or estimate.get("value") is None:
        return missing
    if estimate.get("low") is None or estimate.get("high") is None:
        return f"{estimate['value']:.3f} ({NO_INTERVAL})"
    return f"{estimate['value']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _find(tests: Sequence[Mapping[str, Any]], set_name: str, metric: str, a: str, b: str) -> tuple[dict | None, int]:
    for row in tests:
        if row["set"] == set_name and row["metric"] == metric and {row["a"], row["b"]} == {a, b}:
            return dict(row), (1 if row["a"] == a else -1)
    return None, 1


def format_p(p_value: float, resamples: int | None = None) -> str:
    """A p-value to 3 decimals: "p<0.001" below that (never "p=0.000"); a bootstrap p-value of 0
    (`resamples` = B given) means 'below 1/B': "p<1/B".

    Args:
        p_value: a p-value in [0, 1].
        resamples: B, when the p-value is a bootstrap one; None otherwise.

    Returns:
        e.g. "p=0.034", "p<0.001" or "p<0.001" for B = 1000 and p = 0.
    """
    if resamples and p_value < 1.0 / resamples:
        return f"p<{1.0 / resamples:.3g}"
    if p_value < 0.001:
        return "p<0.001"
    return f"p={p_value:.3f}"


def _difference_words(row: Mapping[str, Any] | None, sign: int, higher_better: bool) -> str:
    if row is None:
        return "no paired test (different pairs)"
    diff, low, high = sign * row["difference"], *sorted((sign * row["low"], sign * row["high"]))
    significant = row.get("significant_holm", row["significant"])
    words = "significant" if significant else "not significant"
    text = f"difference {diff:+.3f} [{low:+.3f}, {high:+.3f}], paired bootstrap "
    if "p_holm" in row:
        text += f"Holm-adjusted {format_p(row['p_holm'])} (of {row['family_size']} tests)"
    else:
        text += format_p(row["p_value"], row.get("resamples"))
    mcnemar = row.get("mcnemar_p_holm", row.get("mcnemar_p"))
    if mcnemar is not None:
        text += f", McNemar{' Holm-adjusted' if 'mcnemar_p_holm' in row else ''} {format_p(mcnemar)}"
    return f"{text}: {words}"


CHANCE_ACCURACY = 0.5  # a coin flip's accuracy on the non-tie pairs


def against_baseline(estimate: Mapping[str, Any] | None, baseline: float, higher_better: bool) -> str:
    """Whether an estimate's interval clears a baseline's value.

    Returns:
        "better" (the whole interval on the better side of `baseline`), "worse" (the whole interval
        on the worse side), "no better" (the interval includes it) or "no interval" (the estimate
        was computed from fewer than statistics.MIN_INTERVAL_PROMPTS prompts, or there is none).

    Args:
        estimate: {value, low, high} or None.
        baseline: the baseline's value, in the metric's units.
        higher_better: True for accuracy-like metrics, False for ECE, Brier, NLL.
    """
    if not estimate or estimate.get("low") is None or estimate.get("high") is None:
        return "no interval"
    low, high = estimate["low"], estimate["high"]
    if (low > baseline) if higher_better else (high < baseline):
        return "better"
    if (high < baseline) if higher_better else (low > baseline):
        return "worse"
    return "no better"


def _baseline_of(models: Mapping[str, Mapping[str, Any]], uninformative: Mapping[str, Any] | None, set_name: str,
                 metric: str) -> tuple[str, float | None, Mapping[str, Any] | None]:
    """(label, value the best model must clear, estimate shown) of a metric's baseline on a set:
    accuracy: the higher of pick-the-longer and chance 0.5; ECE / Brier / NLL: the uninformative p = 0.5
    on the set's pairs (NLL ln 2 even without the row)."""
    if metric == "accuracy":
        longer = _dig(models, ["baseline_longer", set_name, "intervals", "accuracy"])
        if longer is None or longer["value"] < CHANCE_ACCURACY:
            shown = "chance 0.500" + (f" (pick-the-longer {longer['value']:.3f})" if longer else "")
            return shown, CHANCE_ACCURACY, None
        return "pick-the-longer", float(longer["value"]), longer
    estimate = (uninformative or {}).get(_STATISTICS[metric])
    if estimate is None and metric == "nll_p_chosen":
        return "p = 0.5", LN2, {"value": LN2, "low": LN2, "high": LN2}
    if estimate is None:
        return "p = 0.5", None, None
    return "p = 0.5", float(estimate["value"]), estimate


def verdict(models: Mapping[str, Mapping[str, Any]], tests: Sequence[Mapping[str, Any]],
            kinds: Mapping[str, Sequence[str]],
            uninformative: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per set, kind and metric: the top model with its interval, whether that interval clears the
    metric's baseline (accuracy: pick-the-longer, or chance 0.5 where that is higher; ECE, Brier, NLL:
    the uninformative p = 0.5 on the same set), and its lead over the runner-up (Holm-adjusted paired
    test). A top model that does not clear its baseline is not called best: "no <kind> beats ...".
    Policies also get a win-rate row (95% Wilson interval against 0.5, a tie with the SFT reference)
    on the first set.

    Args:
        models: name -> metrics (per set: intervals of PAIR_METRICS).
        tests: paired_tests rows (with p_holm).
        kinds: label -> model names compared together (e.g. "reward models" -> [reward_bt, ...]).
        uninformative: set -> uninformative_rows' row (ece, brier, nll estimates); None: NLL against ln 2 only.

    Returns:
        rows {set, kind, metric, label, higher_better, best, estimate, runner_up, runner_up_test,
        baseline, baseline_value, baseline_estimate, outcome ("better" | "no better" | "worse" |
        "no interval" | "no baseline": no p = 0.5 row was given), statement}.
    """
    rows = []
    first_set = next(iter(SETS))
    for set_name in SETS:
        for kind, names in kinds.items():
            candidates = [n for n in names if _dig(models.get(n, {}), [set_name, "intervals", "accuracy"])]
            if not candidates:
                continue
            singular = {"policies": "policy", "reward models": "reward model"}.get(kind, kind)
            for metric, (label, higher_better) in PAIR_METRICS.items():
                scored = [(n, models[n][set_name]["intervals"][metric]) for n in candidates
                          if _dig(models[n], [set_name, "intervals", metric])]
                if not scored:
                    continue
                scored.sort(key=lambda item: item[1]["value"], reverse=higher_better)
                best, estimate = scored[0]
                arrow = "↑" if higher_better else "↓"
                tied = [n for n, e in scored[1:] if e["value"] == estimate["value"]]
                baseline, value, baseline_estimate = _baseline_of(models, (uninformative or {}).get(set_name),
                                                                  set_name, metric)
                outcome = against_baseline(estimate, value, higher_better) if value is not None else "no baseline"
                top = f"{best} {format_estimate(estimate)}" + (f" (tied with {', '.join(tied)})" if tied else "")
                against = baseline if value is None or baseline.startswith("chance") else f"{baseline} ({value:.3f})"
                if outcome == "no baseline":
                    parts = [f"top {singular} by {label} {arrow}: {top} (no {baseline} row to compare with)"]
                elif outcome == "better":
                    parts = [f"best {singular} by {label} {arrow}: {top}; beats {against} (interval clears it)"]
                else:
                    why = {"worse": "WORSE (interval on the wrong side)", "no better": "interval includes it",
                           "no interval": NO_INTERVAL}[outcome]
                    parts = [f"no {singular} beats {against} by {label} {arrow}: the top one, {top}: {why}"]
                runner_up, test = None, None
                if len(scored) > 1:
                    runner_up = scored[1][0]
                    test, sign = _find(tests, set_name, metric, best, runner_up)
                    parts.append(f"vs runner-up {runner_up}: {_difference_words(test, sign, higher_better)}")
                if metric == "accuracy":
                    row, sign = _find(tests, set_name, metric, best, "baseline_longer")
                    if row is not None:
                        parts.append(f"vs pick-the-longer: {_difference_words(row, sign, True)}")
                rows.append({"set": set_name, "kind": kind, "metric": metric, "label": label,
                             "higher_better": higher_better, "best": best, "estimate": estimate,
                             "runner_up": runner_up, "runner_up_test": test, "baseline": baseline,
                             "baseline_value": value, "baseline_estimate": baseline_estimate, "outcome": outcome,
                             "statement": "; ".join(parts) + "."})
            if kind == "policies" and set_name == first_set:
                rows += _win_rate_verdict(models, names, set_name, kind)
    return rows


def _win_rate_verdict(models: Mapping[str, Mapping[str, Any]], names: Sequence[str], set_name: str,
                      kind: str) -> list[dict[str, Any]]:
    """The policies' win rate vs SFT as a verdict row: the top policy's Wilson interval against 0.5."""
    judged = [(n, models[n]["generation"]) for n in names if _dig(models.get(n, {}), ["generation", "win_rate"]) is not None]
    if not judged:
        return []
    best, gen = max(judged, key=lambda item: item[1]["win_rate"])
    estimate = {"value": gen["win_rate"], "low": gen["win_rate_low"], "high": gen["win_rate_high"]}
    outcome = against_baseline(estimate, 0.5, True)
    top = f"{best} {format_estimate(estimate)} (95% Wilson, {gen.get('prompts', '?')} comparisons)"
    statement = (f"best policy by win rate vs SFT ↑: {top}; beats a tie with SFT 0.500 (interval clears it)."
                 if outcome == "better" else
                 f"no policy beats a tie with SFT 0.500 by win rate ↑: the top one, {top}: "
                 + ("WORSE (interval below 0.5)." if outcome == "worse" else "interval includes it."))
    return [{"set": set_name, "kind": kind, "metric": "win_rate", "label": "win rate vs SFT", "higher_better": True,
             "best": best, "estimate": estimate, "runner_up": None, "runner_up_test": None,
             "baseline": "tie with SFT", "baseline_value": 0.5, "baseline_estimate": None, "outcome": outcome,
             "statement": statement}]


def generation_verdict(models: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """The best policy by raw and by length-controlled win rate against the SFT reference, in words.

    Args:
        models: model name -> its metrics; a policy has ``generation`` with win_rate, its Wilson bounds,
            lc_win_rate and prompts.
        names: the policies to compare.

    Returns:
        Two sentences (raw and length-controlled win rate), or [] when no policy was judged.
    """
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


def compare_models(validated_pairs: pl.DataFrame, test_pairs: pl.DataFrame, heldout_pairs: pl.DataFrame,
                   config: EvaluationConfig, models: Mapping[str, dict[str, Any]]
                   ) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """All models side by side with the length baselines, paired tests and the verdict.

    Args:
        validated_pairs: the pairs table (for the data summary).
        test_pairs, heldout_pairs: the evaluated sets ``pairs`` and ``heldout``.
        config: the ``evaluation`` block (``model_order``, ``bootstrap``, ``n_bins``, ``splits``).
        models: name -> that model's metrics (core/evaluation/model_metrics.py), in pipeline order;
            their ``_scores`` and ``_rewardbench_scores`` are consumed (popped).

    Returns:
        (the run's metrics JSON, the comparison table with one row per evaluated set and model, the
        data summary, every model's per-row scores of the RewardBench-format file: ``model`` +
        rewardbench.score_rows).
    """
    order = config.model_order or list(models)  # default: the pipeline's (registry) order
    ordered = {name: models[name] for name in order if name in models}
    ordered.update({name: metrics for name, metrics in models.items() if name not in ordered})
    tables = {"pairs": test_pairs, "heldout": heldout_pairs}
    bootstrap = config.bootstrap
    ordered.update(baseline_metrics(tables, bootstrap))
    kinds = {"reward models": [n for n, metrics in ordered.items() if metrics.get("kind") == "reward model"],
             "policies": [n for n, metrics in ordered.items() if str(metrics.get("kind", "")).startswith("policy")]}
    groups = [names + list(BASELINES) for names in kinds.values() if names]
    tests = paired_tests(ordered, tables, groups, bootstrap, config.n_bins)
    rewardbench_scores = [metrics.pop("_rewardbench_scores").with_columns(pl.lit(name).alias("model"))
                          for name, metrics in ordered.items() if metrics.get("_rewardbench_scores") is not None]
    for metrics in ordered.values():
        metrics.pop("_scores", None)  # per-pair logits: used above, too bulky for the JSON
    data = evaluate.data_summary(validated_pairs)
    table = comparison_table(ordered)
    uninformative = uninformative_rows(tables, bootstrap, config.n_bins)
    result = {
        "run": {"evaluated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "evaluated_splits": ",".join(config.splits), "evaluated_pairs": test_pairs.height,
                "heldout_pairs": heldout_pairs.height,
                "heldout_sources": ", ".join(f"{source} {n}" for source, n in heldout_pairs.group_by("source").len()
                                             .sort(["len", "source"], descending=[True, False]).iter_rows()),
                "bootstrap": f"{bootstrap.resamples} prompt resamples, seed {bootstrap.seed}, "
                             f"{bootstrap.label} percentile intervals"},
        "interval_level": bootstrap.level,
        "data": data.to_dicts(),
        "models": ordered,
        "uninformative": uninformative,
        "paired_tests": tests,
        "verdict": verdict(ordered, tests, kinds, uninformative),
        "generation_verdict": generation_verdict(ordered, kinds["policies"]),
        "comparison": table.to_dicts(),
    }
    log.info("evaluation verdict:\n%s", "\n".join(f"  [{SETS[v['set']]}] {v['statement']}" for v in result["verdict"]))
    scores = (pl.concat(rewardbench_scores, how="diagonal_relaxed").select("model", pl.exclude("model"))
              if rewardbench_scores else pl.DataFrame(schema={"model": pl.String, "row": pl.Int64, "logit": pl.Float64}))
    return result, table, data, scores
