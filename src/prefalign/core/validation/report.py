"""Human-readable validation report: Markdown summary and a small distribution plot."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from prefalign.core.validation.checks import FAILED_COLUMN


def _cell(value: Any) -> str:
    text = str(value).replace("|", "\\|").replace("\n", "\\n")
    return text if len(text) <= 120 else text[:117] + "..."


def _has_contract_stats_columns(checked: pl.DataFrame) -> bool:
    """Per-source statistics need the contract's dtypes; a table that failed the schema has none."""
    schema = checked.schema
    return (
        schema.get("source") == pl.String
        and schema.get("p_chosen") == pl.Float64
        and schema.get("margin") == pl.Float64
        and FAILED_COLUMN in schema
    )


def render_markdown(results: dict[str, Any], checked: pl.DataFrame) -> str:
    """The human-readable report (validation_report).

    Args:
        results: validate_pairs' results.
        checked: a frame with source, p_chosen, margin and failed_expectations (the checked table,
            or batched.report_frame's text-free columns).

    Returns:
        Markdown: the verdict, why the run stopped, one row per expectation, per-source statistics.
    """
    rows = results["rows"]
    lines = [
        "# Validation report: pairs",
        "",
        f"**Verdict: {'PASSED' if results['passed'] else 'STOPPED'}**. "
        f"{rows['in']} rows in, {rows['validated']} validated, {rows['quarantined']} quarantined "
        f"({results['quarantined_fraction']:.2%}; limits: overall {results['limits']['overall']:.0%}, "
        f"per source {results['limits']['per_source']:.0%}).",
        "",
    ]
    if results["failures"]:
        lines += ["## Why the run stopped", ""] + [f"- {_cell(f)}" for f in results["failures"]] + [""]
    lines += [
        "## Expectations",
        "",
        "| expectation | type | level | result | unexpected | observed / examples (pair_id: value) |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results["expectations"]:
        examples = "; ".join(f"{e['pair_id']}: {e['value']!r}" for e in entry["examples"])
        detail = examples if examples else ("" if entry["observed"] is None else entry["observed"])
        lines.append(
            f"| {entry['name']} | {entry['type']} | {entry['level']} | {'pass' if entry['success'] else 'FAIL'} "
            f"| {'' if entry['unexpected_count'] is None else entry['unexpected_count']} | {_cell(detail)} |"
        )
    lines += ["", "## Per source", ""]
    if results["sources"] and _has_contract_stats_columns(checked):
        stats = (
            checked.group_by("source")
            .agg(
                pl.len().alias("rows"),
                (pl.col(FAILED_COLUMN).list.len() > 0).sum().alias("quarantined"),
                pl.col("p_chosen").mean().alias("p_mean"),
                pl.col("p_chosen").quantile(0.1).alias("p_q10"),
                pl.col("p_chosen").quantile(0.9).alias("p_q90"),
                pl.col("margin").is_null().mean().alias("margin_null"),
                pl.col("margin").median().alias("margin_median"),
            )
            .sort("source", nulls_last=True)
        )
        lines += [
            "| source | rows | quarantined | p_chosen mean [q10, q90] | margin null | margin median |",
            "|---|---|---|---|---|---|",
        ]
        for r in stats.iter_rows(named=True):
            lines.append(
                f"| {r['source']} | {r['rows']} | {r['quarantined']} | {_num(r['p_mean'])} [{_num(r['p_q10'])}, {_num(r['p_q90'])}] "
                f"| {_num(r['margin_null'], pct=True)} | {_num(r['margin_median'])} |"
            )
        lines += ["", "Distributions: see the `validation_plot` dataset (p_chosen and margin per source)."]
    else:
        lines.append("No per-source statistics: the table did not match the pairs schema.")
    return "\n".join(lines) + "\n"


def _num(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.1%}" if pct else f"{value:.3g}"


def plot_distributions(checked: pl.DataFrame, max_sources: int = 12) -> plt.Figure:
    """p_chosen histogram and margin box per source (the validated rows and the quarantined ones).

    Args:
        checked: as for render_markdown.
        max_sources: sources drawn (the first by name).

    Returns:
        The matplotlib figure (validation_plot).
    """
    figure, (ax_p, ax_m) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    if not _has_contract_stats_columns(checked) or checked.height == 0:
        ax_p.text(0.5, 0.5, "nothing to plot (no rows, or not the pairs schema)", ha="center")
        return figure
    sources = checked.get_column("source").drop_nulls().unique().sort().to_list()[:max_sources]
    bins = np.linspace(0.5, 1.0, 21)
    margins, labels = [], []
    for source in sources:
        rows = checked.filter(pl.col("source") == source)
        p = rows.get_column("p_chosen").drop_nulls().drop_nans().to_numpy()
        ax_p.hist(np.clip(p, 0.5, 1.0), bins=bins, histtype="step", label=f"{source} ({rows.height})")
        m = rows.get_column("margin").drop_nulls().drop_nans().to_numpy()
        if m.size:
            margins.append(m)
            labels.append(source)
    ax_p.set(title="p_chosen per source (clipped to [0.5, 1])", xlabel="p_chosen", ylabel="rows")
    ax_p.legend(fontsize=7)
    if margins:
        ax_m.boxplot(margins, orientation="horizontal", showfliers=False)
        ax_m.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax_m.set(title="margin per source (non-null; source units)", xlabel="margin")
    return figure
