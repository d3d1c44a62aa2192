"""The plots people expect, as matplotlib Figures (the catalog writes them, never this module)."""

from __future__ import annotations

import base64
import io
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import polars as pl
from matplotlib.figure import Figure


def reliability_diagram(models: Mapping[str, Mapping[str, Any]], target: str = "true_p") -> Figure:
    """Mean predicted vs mean target per bin, one line per model; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, metrics in models.items():
        bins = (metrics.get("pairs") or {}).get(f"reliability_{target}")
        if not bins:
            continue
        filled = [b for b in bins if b["count"]]
        ece = metrics["pairs"][f"calibration_{target}"]["ece"]
        ax.plot([b["mean_predicted"] for b in filled], [b["mean_target"] for b in filled], marker="o",
                label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("predicted P(chosen > rejected)")
    ax.set_ylabel(f"mean {target} in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"Reliability against {target}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def margin_histograms(pairs: pl.DataFrame, bins: int = 20) -> Figure:
    """Histogram of the margin per source (binary sources, with null margins, are listed as such)."""
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
    fig.tight_layout()
    return fig


def win_rate_bars(models: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Raw win rate with its interval, and the length-controlled win rate, per policy."""
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
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> Figure:
    """Loss against step per model; `curves[name]` is a list of {"step", "loss"} records."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, records in curves.items():
        if records:
            ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_png_base64(fig: Figure) -> str:
    """PNG bytes of a figure, base64-encoded, for a self-contained HTML report."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
