"""The plots people expect, as matplotlib Figures (the catalog writes them, never this module)."""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import polars as pl
from matplotlib.figure import Figure


def _grid(count: int, columns: int = 3, size: tuple[float, float] = (3.2, 3.0)):
    rows = max(1, math.ceil(count / columns))
    cols = min(columns, max(count, 1))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def reliability_diagram(models: Mapping[str, Mapping[str, Any]], target: str = "true_p", set_name: str = "pairs",
                        set_label: str = "in-distribution test split") -> Figure:
    """Mean predicted vs mean target per bin, one small panel per model (dot size = pairs in the bin);
    the diagonal is perfect calibration. One panel each keeps every curve readable.

    Args:
        models: model name -> metrics; a model is drawn when ``metrics[set_name]`` has
            ``reliability_<target>`` bins (and ``intervals.ece_<target>``).
        target: ``true_p`` or ``p_chosen``.
        set_name: which evaluated set to draw.
        set_label: the set's words in the title.

    Returns:
        A matplotlib Figure (the caller closes it).
    """
    drawn = [(name, m[set_name]) for name, m in models.items() if (m.get(set_name) or {}).get(f"reliability_{target}")]
    fig, axes = _grid(len(drawn))
    for ax, (name, metrics) in zip(axes, drawn):
        filled = [b for b in metrics[f"reliability_{target}"] if b["count"]]
        total = sum(b["count"] for b in filled) or 1
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.plot([b["mean_predicted"] for b in filled], [b["mean_target"] for b in filled], color="tab:blue",
                linewidth=1)
        ax.scatter([b["mean_predicted"] for b in filled], [b["mean_target"] for b in filled],
                   s=[10 + 200 * b["count"] / total for b in filled], color="tab:blue", zorder=3)
        ece = metrics["intervals"][f"ece_{target}"]["value"]
        ax.set_title(f"{name}\nECE {ece:.3f}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted P(chosen > rejected)", fontsize=8)
        ax.set_ylabel(f"mean {target} in bin", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Reliability against {target}, {set_label} (dashed: perfectly calibrated; "
                 "dot area: share of pairs)", fontsize=10)
    fig.tight_layout()
    return fig


def margin_histograms(pairs: pl.DataFrame, bins: int = 20) -> Figure:
    """Histogram of the margin per source (binary sources, with null margins, are listed as such).

    Args:
        pairs: a pairs table (source, margin).
        bins: histogram bins per source.

    Returns:
        A matplotlib Figure, one row per source.
    """
    sources = sorted(pairs["source"].unique().to_list())
    fig, axes = plt.subplots(len(sources), 1, figsize=(6, 1.6 * max(len(sources), 1)), squeeze=False)
    for ax, source in zip(axes[:, 0], sources):
        margins = pairs.filter((pl.col("source") == source) & pl.col("margin").is_not_null())["margin"]
        if margins.len():
            ax.hist(margins.to_numpy(), bins=bins, color="tab:blue")
        else:
            ax.text(0.5, 0.5, "binary labels: no margin", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(source, rotation=0, ha="right", fontsize=8)
    axes[-1, 0].set_xlabel("margin (source's own unit)")
    fig.suptitle("Margins per source")
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the title above the first panel
    return fig


def win_rate_bars(models: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Raw win rate with its interval, and the length-controlled win rate, per policy.

    Args:
        models: model name -> metrics; policies with ``generation`` (win_rate, win_rate_low,
            win_rate_high, lc_win_rate) are drawn.

    Returns:
        A matplotlib Figure.
    """
    names = [n for n, metrics in models.items() if metrics.get("generation")]
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(names)), 3.5))
    raw = [models[n]["generation"]["win_rate"] for n in names]
    low = [models[n]["generation"]["win_rate_low"] for n in names]
    high = [models[n]["generation"]["win_rate_high"] for n in names]
    lc = [models[n]["generation"]["lc_win_rate"] for n in names]
    x = list(range(len(names)))
    ax.bar([i - 0.2 for i in x], raw, width=0.4, label="raw",
           yerr=[[r - lo for r, lo in zip(raw, low)], [hi - r for r, hi in zip(raw, high)]], capsize=3)
    ax.bar([i + 0.2 for i in x], lc, width=0.4, label="length-controlled")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate vs SFT reference")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the bars and their intervals
    fig.tight_layout()
    return fig


def training_curves(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> Figure:
    """Loss against step, one small panel per model (objective), each on its own y scale: the
    objectives' losses differ by orders of magnitude, so one shared axis hides most of them.

    Records with an `iteration` key (GPO: its steps restart at 1 each iteration) are drawn as one
    line per iteration, with a legend; joined into one line they would jump back to step 1.

    Args:
        curves: model name -> history records, each with ``step`` and ``loss`` (nats) and optionally ``iteration``.

    Returns:
        A matplotlib Figure.
    """
    drawn = [(name, records) for name, records in curves.items() if records]
    fig, axes = _grid(len(drawn), columns=4, size=(3.0, 2.4))
    for ax, (name, records) in zip(axes, drawn):
        iterations = sorted({r["iteration"] for r in records if r.get("iteration") is not None})
        if iterations:
            for iteration in iterations:
                line = [r for r in records if r.get("iteration") == iteration]
                ax.plot([r["step"] for r in line], [r["loss"] for r in line], linewidth=1,
                        label=f"iteration {iteration}")
            ax.legend(fontsize=6)
        else:
            ax.plot([r["step"] for r in records], [r["loss"] for r in records], color="tab:orange", linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("training loss", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Training curves (each panel its own loss scale)", fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_forest(models: Mapping[str, Mapping[str, Any]], sets: Mapping[str, str],
                    names: Sequence[str]) -> Figure:
    """Forest plot: each model's accuracy with its interval, one panel per evaluated set, against
    pick-the-longer (dashed line, its interval shaded) and chance 0.5 (dotted line).

    Args:
        models: name -> metrics (per set: intervals.accuracy {value, low, high}; baseline_longer too).
        sets: set name -> label (panel title), e.g. comparison.SETS.
        names: the models drawn, top to bottom (baselines are lines, not rows). A model whose
            interval was not computed (fewer than 10 prompts) is a hollow dot without a bar.

    Returns:
        A matplotlib Figure, one panel per set with any drawn accuracy.
    """
    panels = [(s, label) for s, label in sets.items()
              if any((models.get(n, {}).get(s) or {}).get("intervals", {}).get("accuracy") for n in names)]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5.0 * max(len(panels), 1), 0.45 * len(names) + 2.0),
                             squeeze=False, sharey=True)
    for ax, (set_name, label) in zip(axes[0], panels):
        for row, name in enumerate(names):
            estimate = ((models.get(name, {}).get(set_name) or {}).get("intervals") or {}).get("accuracy")
            if not estimate:
                continue
            if estimate.get("low") is None:
                ax.plot(estimate["value"], row, "o", markerfacecolor="white", color="tab:blue")
                continue
            ax.errorbar(estimate["value"], row, xerr=[[estimate["value"] - estimate["low"]],
                                                       [estimate["high"] - estimate["value"]]],
                        fmt="o", color="tab:blue", capsize=3)
        longer = ((models.get("baseline_longer", {}).get(set_name) or {}).get("intervals") or {}).get("accuracy")
        if longer:
            ax.axvline(longer["value"], color="tab:red", linestyle="--", linewidth=1,
                       label=f"pick-the-longer {longer['value']:.3f}")
            if longer.get("low") is not None:
                ax.axvspan(longer["low"], longer["high"], color="tab:red", alpha=0.1)
        ax.axvline(0.5, color="grey", linestyle=":", linewidth=1, label="chance 0.5")
        ax.set_title(label, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy ↑ (non-tie pairs)", fontsize=8)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)  # off the rows
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle("Accuracy with its interval per model (bars: bootstrap over prompts) against the baselines",
                 fontsize=10)
    fig.tight_layout()
    return fig


def figure_png_base64(fig: Figure) -> str:
    """PNG bytes of a figure, base64-encoded, for a self-contained HTML report.

    Args:
        fig: a matplotlib Figure (rendered at 100 dpi).

    Returns:
        ASCII base64 text of the PNG.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def report_figures(metrics: Mapping[str, Any], validated_pairs: pl.DataFrame) -> dict[str, Figure]:
    """The report's figures from the run's metrics (core/evaluation/comparison.py ``compare_models``):
    accuracy forest plot (when a model is ranked), reliability diagrams, margin histograms per source,
    win-rate bars (when policies were judged), training curves (when a model has one).

    Args:
        metrics: the comparison (``{"models": {name: that model's metrics}, ...}``).
        validated_pairs: the validated pairs table, for the margin histograms.

    Returns:
        Figure name -> matplotlib Figure: ``margins_per_source`` and ``reliability_p_chosen`` always;
        ``accuracy_forest``, ``reliability_true_p``, ``reliability_heldout_p_chosen``, ``win_rates``,
        ``training_curves`` when there is data for them.
    """
    from prefalign.core.evaluation.comparison import SETS

    models = metrics["models"]
    ranked = [n for n, m in models.items() if m.get("kind") not in ("baseline", "ground truth")]
    figures = {"margins_per_source": margin_histograms(validated_pairs),
               "reliability_p_chosen": reliability_diagram(models, "p_chosen")}
    if ranked:
        figures = {"accuracy_forest": accuracy_forest(models, SETS, ranked), **figures}
    if any((m.get("pairs") or {}).get("reliability_true_p") for m in models.values()):
        figures["reliability_true_p"] = reliability_diagram(models, "true_p")
    if any((m.get("heldout") or {}).get("reliability_p_chosen") for m in models.values()):
        figures["reliability_heldout_p_chosen"] = reliability_diagram(models, "p_chosen", "heldout", "held-out sources")
    if any(m.get("generation") for m in models.values()):
        figures["win_rates"] = win_rate_bars(models)
    curves = {name: m["training_curve"] for name, m in models.items() if m.get("training_curve")}
    if curves:
        figures["training_curves"] = training_curves(curves)
    return figures
