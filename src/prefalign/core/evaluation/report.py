"""The run report: a verdict first, then data, models, comparison tables per evaluated set and model
kind, benchmarks, generation, truncation, paired tests and plots; Markdown and HTML from one story.

Every metric column carries its direction (↑ higher is better, ↓ lower is better) and its unit.
"""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Sequence

import polars as pl

from prefalign.core.evaluation.comparison import (BASELINES, NO_INTERVAL, PAIR_METRICS, SETS, _dig,
                                                  format_estimate, format_p)

def explanations(level: str = "95%") -> list[str]:
    """The report's definitions, with the intervals' coverage as they were computed (e.g. "95%").

    Args:
        level: the intervals' coverage label, e.g. "95%".

    Returns:
        One sentence per definition (metrics, baselines, tests, verdict), in report order.
    """
    return [
        f"accuracy ↑: share of the pairs with a preference (label ties, p_chosen = 1/2, set aside and counted "
        f"under 'ties') where the model strictly prefers the chosen response (a predicted 0 is wrong); "
        f"[low, high] is a {level} bootstrap interval over prompts (all pairs of a resampled prompt move together).",
        "ECE ↓, Brier ↓, NLL ↓ (nats): calibration of the predicted P(chosen > rejected) against the source's "
        "soft target p_chosen, on every pair (ties included). ECE is symmetric: each pair counted in both "
        "orientations, (p, t) and (1 - p, 1 - t), over 10 equal-width bins, so it does not depend on which side is "
        "listed first; NLL is computed from the logit (no clipping). The p = 0.5 row is the uninformative "
        "predictor (NLL = ln 2 = 0.693 nats, symmetric ECE 0).",
        "prefers longer: share of pairs of unequal length (in characters) where the model picks the longer "
        "response (0.5 = no length preference); acc. chosen longer ↑ / shorter ↑: accuracy on the non-tie pairs "
        "where the chosen response is the longer / the shorter one. pick-the-longer / pick-the-shorter: "
        "length-only baselines.",
        f"RewardBench ↑: mean of section scores (v1: each the prompt-weighted accuracy of its subsets, math-prm "
        f"counted as 984 prompts; v2: best-of-N accuracy per subset and the Ties score, plain mean), with {level} "
        "bootstrap intervals over prompts; ECE ↓ there is the symmetric ECE against target 1; cyclic ↑: share "
        "of the three pairs of A > B > C > A triples predicted right (a scalar model's ceiling is 2/3).",
        "win rate ↑ [95% Wilson]: policy vs the SFT reference under the held-out judge; LC win rate ↑: the same "
        "at equal length (logistic regression on the normalised length difference); mean length in characters; "
        "KL ↓ (nats): KL(policy || reference) on the policy's own samples (lower = closer to the reference).",
        f"paired tests: paired bootstrap of each difference (same resampled prompts for both models; a p-value "
        f"of 0 counts as 1/B), Holm-adjusted within each family (one set, one model kind with its baselines, one "
        f"metric); significant = adjusted p < {1 - float(level.rstrip('%')) / 100:.2f}. McNemar's test on the "
        "discordant non-tie pairs is in the metrics JSON for accuracy, Holm-adjusted the same way.",
        "verdict: 'beats the baseline' = the top model's interval lies wholly on the better side of the baseline "
        "(accuracy: pick-the-longer, or chance 0.5 where pick-the-longer is below it; ECE, Brier, NLL: the "
        "uninformative p = 0.5 on the same pairs; win rate: 0.5, a tie with SFT). The p = 0.5 predictor's "
        "symmetric ECE is 0, so no model beats it on ECE: ECE ranks calibration, not skill.",
        f"intervals from fewer than 10 prompts are not computed ('{NO_INTERVAL}'): a bootstrap over a handful of "
        "prompts has a meaningless, often zero, width.",
    ]


EXPLANATIONS = explanations()


def _level(metrics: Mapping[str, Any]) -> str:
    """The coverage the run's intervals were computed at, as a label ("95%")."""
    return f"{float(metrics.get('interval_level', 0.95)):.0%}"


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(frame: pl.DataFrame) -> str:
    """A polars table as a Markdown pipe table (floats to 3 decimals, None and NaN as empty cells).

    Args:
        frame: the table.

    Returns:
        The Markdown text, header and rule included, without a trailing newline.
    """
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_format(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *body])


def _html_table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>"
                   for row in frame.iter_rows())
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


def _ci(estimate: Mapping[str, float] | None) -> str:
    """A table cell: "value [low, high]", empty when there is no estimate."""
    return format_estimate(estimate, missing="")


def _constant_or_ci(estimate: Mapping[str, Any] | None) -> str:
    """A cell for the p = 0.5 predictor: its value alone where it is the same on every resample
    (NLL ln 2, symmetric ECE 0), else "value [low, high]"."""
    if estimate and estimate.get("low") is not None and estimate["high"] - estimate["low"] < 1e-12:
        return f"{estimate['value']:.3f}"
    return _ci(estimate)


def _kind_of(name: str, metrics: Mapping[str, Any]) -> str:
    kind = str(metrics.get("kind", ""))
    if kind == "reward model":
        return "reward models"
    if kind.startswith("policy"):
        return "policies"
    return kind


def _pair_table(models: Mapping[str, Mapping[str, Any]], set_name: str, names: Sequence[str],
                uninformative: Mapping[str, Any] | None, level: str = "95%") -> pl.DataFrame:
    rows = []
    labels = {"baseline_longer": "pick-the-longer", "baseline_shorter": "pick-the-shorter"}
    for name in names:
        evaluated = _dig(models, [name, set_name]) or {}
        if not evaluated:
            continue
        intervals = evaluated.get("intervals") or {}
        bias = evaluated.get("length_bias") or {}
        rows.append({
            "model": labels.get(name, name), "pairs": str(evaluated.get("pairs", "")),
            "ties": str(evaluated.get("label_ties", "")),
            f"accuracy ↑ [{level} CI]": _ci(intervals.get("accuracy")),
            "ECE ↓": _ci(intervals.get("ece_p_chosen")),
            "Brier ↓": _ci(intervals.get("brier_p_chosen")),
            "NLL ↓ (nats)": _ci(intervals.get("nll_p_chosen")),
            "prefers longer": _format(bias.get("prefers_longer_rate")),
            "acc. chosen longer ↑": _format(bias.get("accuracy_chosen_longer")),
            "acc. chosen shorter ↑": _format(bias.get("accuracy_chosen_shorter")),
        })
    if uninformative and rows:
        rows.append({"model": "p = 0.5 (uninformative)", "pairs": str(uninformative.get("pairs", "")), "ties": "",
                     f"accuracy ↑ [{level} CI]": "",
                     "ECE ↓": _constant_or_ci(uninformative.get("ece")),
                     "Brier ↓": _constant_or_ci(uninformative.get("brier")),
                     "NLL ↓ (nats)": _constant_or_ci(uninformative.get("nll")), "prefers longer": "",
                     "acc. chosen longer ↑": "", "acc. chosen shorter ↑": ""})
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def _source_cell(entry: Mapping[str, Any]) -> str:
    """One source's accuracy [interval] (n=pairs, ties); a source whose pairs are all ties has no accuracy."""
    pairs, ties = entry.get("pairs"), entry.get("label_ties") or 0
    estimate = _dig(entry, ["intervals", "accuracy"])
    if not estimate:
        return f"no accuracy: all {pairs} pairs are ties"
    counts = f"n={pairs}" + (f", {ties} ties set aside" if ties else "")
    if estimate.get("low") is None:
        return f"{estimate['value']:.3f} ({counts}; {NO_INTERVAL})"
    return f"{_ci(estimate)} ({counts})"


def _by_source_table(models: Mapping[str, Mapping[str, Any]], set_name: str, names: Sequence[str]) -> pl.DataFrame:
    """Accuracy [interval] of each model on each source of a set (the held-out sources apart)."""
    sources = sorted({s for n in names for s in (_dig(models, [n, set_name, "by_source"]) or {})})
    rows = []
    for name in names:
        by_source = _dig(models, [name, set_name, "by_source"]) or {}
        if by_source:
            rows.append({"model": name, **{f"{s} ↑": _source_cell(by_source[s]) if s in by_source else ""
                                           for s in sources}})
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def _benchmark_table(models: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> pl.DataFrame:
    sections = sorted({s for n in names for s in (_dig(models, [n, "rewardbench", "sections"]) or {})})
    rows = []
    for name in names:
        metrics = models[name]
        if not (metrics.get("rewardbench") or metrics.get("cyclic")):
            continue
        def scored(name: str, value: Any) -> str:
            return _ci(_dig(metrics, ["rewardbench", "intervals", name])) or _format(value)

        row = {"model": name, "RewardBench ↑": scored("overall", _dig(metrics, ["rewardbench", "overall"]))}
        row.update({f"{s} ↑": scored(s, _dig(metrics, ["rewardbench", "sections", s])) for s in sections})
        row["ECE ↓ (target 1)"] = _ci(_dig(metrics, ["rewardbench", "calibration", "ece"]))
        row["cyclic ↑"] = _format(_dig(metrics, ["cyclic", "consistency"]))
        rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def _generation_table(models: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    rows = []
    for name, metrics in models.items():
        gen = metrics.get("generation")
        if not gen:
            continue
        kl = gen.get("kl")
        rows.append({
            "policy": name, "win rate ↑ [95% Wilson]": f"{gen['win_rate']:.3f} [{gen['win_rate_low']:.3f}, "
                                                      f"{gen['win_rate_high']:.3f}]",
            "LC win rate ↑": _format(gen.get("lc_win_rate")), "comparisons": str(gen.get("prompts", "")),
            "mean length (chars)": f"{gen['mean_length']:.0f} (SFT {gen['reference_mean_length']:.0f})",
            "KL to SFT ↓ (nats)": "" if kl is None else f"{kl:.3f} ± {1.96 * (gen.get('kl_se') or 0):.3f}",
        })
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def _truncation_table(models: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    rows = []
    for name, metrics in models.items():
        for set_name, stats in (metrics.get("truncation") or {}).items():
            label = SETS.get(set_name, "RewardBench file" if set_name == "rewardbench" else set_name)
            rows.append({"model": name, "set": label, "sequences": stats["sequences"],
                         "cut": stats["sequences_truncated"],
                         "tokens removed (mean per cut seq.)": f"{stats['mean_tokens_removed']:.1f}",
                         "max tokens removed": stats["max_tokens_removed"],
                         "pairs identical after cut (not scored)": stats["pairs_identical_after_truncation"]})
    return pl.DataFrame(rows) if rows else pl.DataFrame()


_METRIC_LABELS = {"accuracy": "accuracy ↑", "ece_p_chosen": "ECE ↓", "brier_p_chosen": "Brier ↓",
                  "nll_p_chosen": "NLL ↓ (nats)", "win_rate": "win rate vs SFT ↑"}
_OUTCOMES = {"better": "beats the baseline", "no better": "no model beats the baseline",
             "worse": "no model beats the baseline (the top one is worse)",
             "no interval": f"no claim ({NO_INTERVAL})", "no baseline": "no baseline row"}


def _test_matrix(tests: Sequence[Mapping[str, Any]], set_name: str, names: Sequence[str], metric: str) -> pl.DataFrame:
    """Models x models: the Holm-adjusted p of the paired test of row vs column, marked ▲ (row
    significantly better) or ▼ (row significantly worse); blank where the two were not tested."""
    labels = {"baseline_longer": "pick-the-longer", "baseline_shorter": "pick-the-shorter"}
    higher_better = PAIR_METRICS[metric][1]
    found = {}
    for t in tests:
        if t["set"] == set_name and t["metric"] == metric and "p_holm" in t:
            found[(t["a"], t["b"])] = (t, 1)
            found[(t["b"], t["a"])] = (t, -1)
    shown = [n for n in names if any((n, other) in found for other in names)]
    rows = []
    for a in shown:
        row = {"model": labels.get(a, a)}
        for b in shown:
            cell = "—" if a == b else ""
            if (a, b) in found:
                t, sign = found[(a, b)]
                p_text = format_p(t["p_holm"]).removeprefix("p=").removeprefix("p")
                if t["significant_holm"]:
                    better = (sign * t["difference"] > 0) == higher_better
                    cell = ("▲ " if better else "▼ ") + p_text
                else:
                    cell = p_text
            row[labels.get(b, b)] = cell
        rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def _verdict_table(rows: Sequence[Mapping[str, Any]], level: str) -> pl.DataFrame:
    """One set, one kind: per metric the top model with its interval, the baseline, the verdict, the runner-up."""
    out = []
    for v in rows:
        test = v.get("runner_up_test")
        runner = ""
        if v.get("runner_up"):
            runner = v["runner_up"]
            if test and "p_holm" in test:
                runner += f": Holm {format_p(test['p_holm'])}" + (" (significant)" if test["significant_holm"] else "")
        baseline, estimate = v["baseline"], v.get("baseline_estimate")
        if estimate:
            baseline += " " + _constant_or_ci(estimate)
        wilson = " (95% Wilson)" if v["metric"] == "win_rate" else ""
        out.append({"metric": _METRIC_LABELS.get(v["metric"], v["metric"]),
                    f"top model [{level} CI]": f"{v['best']} {format_estimate(v['estimate'])}{wilson}",
                    "baseline": baseline, "verdict": _OUTCOMES[v["outcome"]], "runner-up": runner})
    return pl.DataFrame(out) if out else pl.DataFrame()


def _rewardbench_line(models: Mapping[str, Any], names: Sequence[str], kind: str, level: str) -> str | None:
    """The top model on the RewardBench-format file, flagged CHANCE LEVEL where a v1 score's interval includes 0.5."""
    scored = [(n, _dig(models, [n, "rewardbench", "overall"])) for n in names]
    scored = [(n, v) for n, v in scored if v is not None]
    if not scored:
        return None
    best, value = max(scored, key=lambda item: item[1])
    capped = _dig(models, [best, "rewardbench", "capped_rows_per_subset"])
    singular = {"policies": "policy", "reward models": "reward model"}.get(kind, kind)
    estimate = _dig(models, [best, "rewardbench", "intervals", "overall"])
    line = (f"top {singular} on the RewardBench-format file ↑: {best} {_ci(estimate) or f'{value:.3f}'} "
            f"({level} interval over prompts; "
            + (f"CAPPED at {capped} rows per subset, not comparable with published numbers)" if capped
               else "all rows, published weighting)"))
    chance = 0.5 if _dig(models, [best, "rewardbench", "format"]) in ("v1", None) else None
    if (chance is not None and estimate and estimate.get("low") is not None
            and estimate["low"] <= chance <= estimate["high"]):
        line += f": CHANCE LEVEL (its interval includes {chance})"
    return line


def _verdict_blocks(metrics: Mapping[str, Any], kinds: Mapping[str, Sequence[str]]) -> list[tuple[str, Any]]:
    """The verdict: one compact table per evaluated set and model kind, then a few lines."""
    models = metrics.get("models", {})
    level = _level(metrics)
    blocks: list[tuple[str, Any]] = [("h2", "Verdict"), ("p", (
        "Per evaluated set and model kind: the top model per metric with its interval, against the baseline it "
        "must beat (accuracy: pick-the-longer, or chance 0.5 where that is higher; ECE, Brier, NLL: the "
        "uninformative p = 0.5; win rate: a tie with SFT). 'beats the baseline' = its interval clears the "
        "baseline's value. Runner-up: the Holm-adjusted paired test of the top two."))]
    verdict = [v for v in metrics.get("verdict") or [] if "outcome" in v]
    for set_name, label in SETS.items():
        if not any(v["set"] == set_name for v in verdict):
            continue
        for kind in kinds:
            rows = [v for v in verdict if v["set"] == set_name and v["kind"] == kind]
            if not rows:
                continue
            blocks += [("h3", f"{kind.capitalize()} on the {label}"), ("table", _verdict_table(rows, level))]
            unbeaten = [_METRIC_LABELS.get(v["metric"], v["metric"]) for v in rows if v["outcome"] != "better"]
            if len(unbeaten) == len(rows):
                blocks.append(("p", f"No model beats the baseline on any metric ({kind}, {label})."))
            elif unbeaten:
                blocks.append(("p", f"No model beats the baseline on: {', '.join(unbeaten)}."))
        baseline = _dig(models, ["baseline_longer", set_name, "accuracy"])
        biases = [(n, _dig(models, [n, set_name, "length_bias", "prefers_longer_rate"])) for n in models
                  if n not in BASELINES]
        biases = [(n, b) for n, b in biases if b is not None and _kind_of(n, models[n]) in kinds]
        if biases and baseline is not None:
            low, high = min(b for _, b in biases), max(b for _, b in biases)
            blocks.append(("p", f"Length ({label}): the models prefer the longer response in {low:.0%}-{high:.0%} of "
                                f"pairs of unequal length; pick-the-longer alone scores accuracy {baseline:.3f}."))
    extra = []
    for kind, names in kinds.items():
        line = _rewardbench_line(models, names, kind, level)
        if line:
            extra.append(line)
        cyc = [(n, _dig(models, [n, "cyclic", "consistency"])) for n in names]
        cyc = [(n, v) for n, v in cyc if v is not None]
        if cyc and kind == "reward models":
            best, value = max(cyc, key=lambda item: item[1])
            extra.append(f"top reward model on cyclic triples ↑: {best} {value:.3f} (a scalar model's ceiling is 0.667)")
    extra += metrics.get("generation_verdict") or []
    if extra:
        blocks += [("h3", "Benchmarks and generation"), ("list", extra)]
    return blocks


def _story(data: pl.DataFrame, metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The report as (kind, content) blocks, rendered identically to Markdown and HTML."""
    models = metrics.get("models", {})
    kinds: dict[str, list[str]] = {}
    for name, m in models.items():
        kind = _kind_of(name, m)
        if kind in ("reward models", "policies"):
            kinds.setdefault(kind, []).append(name)
    blocks: list[tuple[str, Any]] = [("h1", "prefalign run report")]
    level = _level(metrics)
    run = metrics.get("run", {})
    if run:
        blocks.append(("p", " · ".join(f"{k}: {v}" for k, v in run.items())))
    blocks += _verdict_blocks(metrics, kinds)
    blocks += [
        ("h2", "Data"),
        ("p", f"{data['pairs'].sum()} validated pairs from {data.height} sources. Evaluated: "
              f"{run.get('evaluated_pairs', '?')} pairs of split(s) {run.get('evaluated_splits', '?')} (in distribution) "
              f"and {run.get('heldout_pairs', 0)} held-out pairs (split heldout, by source: "
              f"{run.get('heldout_sources') or 'none'}). The held-out sources' prompts are in no train, val or test "
              "split; rows of other sources that share such a prompt are held out with them."),
        ("table", data),
        ("h2", "Models"),
        ("list", [f"{name} ({m.get('kind')}): {m.get('description', '')}".rstrip(": ") for name, m in models.items()]),
    ]
    uninformative = metrics.get("uninformative") or {}
    for set_name, label in SETS.items():
        if not any(_dig(models, [n, set_name]) for n in models):
            continue
        blocks.append(("h2", f"Comparison on the {label}"))
        everything = _dig(models, ["baseline_longer", set_name]) or {}
        if everything.get("label_ties"):
            blocks.append(("p", f"{everything['label_ties']} of the {everything['pairs']} pairs are label ties "
                                "(p_chosen = 1/2: neither side is better): set aside from accuracy, its interval, "
                                "the length-bias accuracies and the paired tests; kept in ECE, Brier and NLL. "
                                "Accuracy is over the other pairs (the 'ties' column counts each model's)."))
        for kind, names in kinds.items():
            table = _pair_table(models, set_name, [*names, *BASELINES], uninformative.get(set_name), level)
            if table.height:
                blocks += [("h3", kind.capitalize()), ("table", table)]
        if set_name == "heldout":
            per_source = _by_source_table(models, set_name, [n for names in kinds.values() for n in names])
            if per_source.height:
                blocks += [("h3", "Accuracy by held-out source"), ("table", per_source)]
        truth = _pair_table(models, set_name, ["ground_truth"], None, level)
        if truth.height:
            blocks += [("h3", "Ground truth (synthetic pairs only)"), ("table", truth)]
    benchmarks = [(kind, _benchmark_table(models, names)) for kind, names in kinds.items()]
    if any(t.height for _, t in benchmarks):
        blocks.append(("h2", "Benchmarks: RewardBench-format file and cyclic triples"))
        for kind, table in benchmarks:
            if table.height:
                blocks += [("h3", kind.capitalize()), ("table", table)]
        capped = {_dig(m, ["rewardbench", "capped_rows_per_subset"]) for m in models.values() if m.get("rewardbench")}
        capped.discard(None)
        if capped:
            blocks.append(("p", f"RewardBench scores are CAPPED at {', '.join(map(str, capped))} rows per subset "
                                "(evaluation.rewardbench.max_rows_per_subset): not comparable with published numbers."))
        unmapped = sorted({s for m in models.values() for s in (m.get("rewardbench") or {}).get("unmapped_subsets", [])})
        if unmapped:
            blocks.append(("p", f"RewardBench subsets in no section (not scored): {', '.join(unmapped)}."))
        sections = {s for m in models.values() for s in (_dig(m, ["rewardbench", "sections"]) or {})}
        if sections and "Reasoning" not in sections and any(_dig(m, ["rewardbench", "format"]) == "v1"
                                                            for m in models.values()):
            blocks.append(("p", "No Reasoning section: the file has no math-prm or hep-* rows. The shipped open file "
                                "has none because no shipped source has answers that can be checked (math with a "
                                "verified final answer, code with tests): vicuna_eval's 3 math and 7 coding questions "
                                "come without reference answers, arena_bench's reference answers are unverified GPT-4 "
                                "outputs, and preference labels are not correctness labels."))
    generation = _generation_table(models)
    if generation.height:
        blocks += [("h2", "Generation: policies vs the SFT reference"), ("table", generation)]
    truncation = _truncation_table(models)
    if truncation.height:
        blocks += [("h2", "Truncation in evaluation"),
                   ("p", "Each pair is two sequences (prompt + chosen, prompt + rejected), cut by the model's own "
                         "max_length / max_prompt_length. Pairs whose two sides are the same tokens after the cut "
                         "are reported here and left out of the scores (a model cannot tell them apart)."),
                   ("table", truncation)]
    tests = metrics.get("paired_tests") or []
    matrices = []
    for set_name, label in SETS.items():
        for kind, names in kinds.items():
            grid = []
            for metric in PAIR_METRICS:
                shown = [*names, "baseline_longer"] if metric == "accuracy" else list(names)
                matrix = _test_matrix(tests, set_name, shown, metric)
                if matrix.height:
                    grid.append((_METRIC_LABELS[metric], matrix))
            if grid:
                matrices += [("h3", f"{kind.capitalize()} on the {label}"), ("grid", grid)]
    if matrices:
        blocks += [("h2", "Paired tests (Holm-corrected)"),
                   ("p", "Each cell: the row model against the column model on the pairs both scored, paired "
                         "bootstrap p-value Holm-adjusted within the matrix's family (the tests of one set, kind "
                         "and metric; pick-the-shorter's tests included). ▲ row significantly better, ▼ row "
                         "significantly worse, a bare number: not significant. Differences, intervals, raw and "
                         "McNemar p-values: the metrics JSON (paired_tests)."),
                   *matrices]
    blocks += [("h2", "Definitions"), ("list", explanations(level))]
    return blocks


def render_markdown(data: pl.DataFrame, metrics: Mapping[str, Any], plot_names: list[str],
                    plot_folder: str = "plots") -> str:
    """The report as Markdown; images link to `<plot_folder>/<name>.png`, relative to the report's own folder.

    Args:
        data: the data summary table (``evaluate.data_summary``).
        metrics: the run's metrics (per model, tests, verdict, interval_level, ...).
        plot_names: the plots to link, in order.
        plot_folder: their folder, relative to the report.

    Returns:
        The Markdown document.
    """
    out = []
    for kind, content in _story(data, metrics):
        if kind == "h1":
            out.append(f"# {content}\n")
        elif kind == "h2":
            out.append(f"\n## {content}\n")
        elif kind == "h3":
            out.append(f"\n### {content}\n")
        elif kind == "p":
            out.append(f"{content}\n")
        elif kind == "table":
            out.append(markdown_table(content) + "\n")
        elif kind == "grid":  # captioned tables, one after the other (side by side in HTML)
            out += [f"{caption}:\n\n{markdown_table(table)}\n" for caption, table in content]
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in content) + "\n")
    out.append("\n## Plots\n")
    out += [f"![{name}]({plot_folder}/{name}.png)\n" for name in plot_names]
    return "\n".join(out) + "\n"


_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 12px}"
          "table{border-collapse:collapse;font-size:12px;margin-bottom:8px}"
          "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}"
          "td:first-child,th:first-child{text-align:left}.scroll{overflow-x:auto}"
          "h2{border-bottom:1px solid #ddd;margin-top:28px}li{margin:3px 0}img{max-width:100%}"
          ".grid{display:flex;flex-wrap:wrap;gap:4px 24px}.grid figure{margin:0}"
          "figcaption{font-size:12px;font-weight:bold;margin:2px 0}")


def render_html(data: pl.DataFrame, metrics: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """A self-contained page: the plots are embedded as base64 PNG, so the file can be mailed.

    Args:
        data: the data summary table (``evaluate.data_summary``).
        metrics: the run's metrics.
        images: plot name -> base64 PNG (``plots.figure_png_base64``).

    Returns:
        The HTML document.
    """
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>prefalign run report</title>",
             f"<style>{_STYLE}</style></head><body>"]
    for kind, content in _story(data, metrics):
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "table":
            parts.append(_html_table(content))
        elif kind == "grid":
            parts.append("<div class='grid'>" + "".join(
                f"<figure><figcaption>{html.escape(caption)}</figcaption>{_html_table(table)}</figure>"
                for caption, table in content) + "</div>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in content) + "</ul>")
    parts.append("<h2>Plots</h2>")
    parts += [f"<h3>{html.escape(n)}</h3><img alt='{html.escape(n)}' src='data:image/png;base64,{b64}'>"
              for n, b64 in images.items()]
    parts.append("</body></html>")
    return "\n".join(parts)
