"""The run report: the story of one run (data, models, comparison table, plots), Markdown and HTML."""

from __future__ import annotations

import html
from typing import Any, Mapping

import polars as pl

_EXPLANATIONS = [
    "accuracy: share of test pairs where the model strictly prefers the chosen response (a tie is wrong).",
    "ece_*: expected calibration error of the predicted P(chosen > rejected) over equal-width bins, "
    "against the source's soft target p_chosen or the synthetic ground truth true_p; brier and nll alike.",
    "rewardbench: mean of section scores (each the prompt-weighted accuracy of its subsets); rb_*: sections.",
    "cyclic: share of the three pairs of A > B > C > A triples predicted right (a scalar model's ceiling is 2/3).",
    "win_rate [win_low, win_high]: policy vs the SFT reference under the held-out judge, 95% Wilson interval; "
    "lc_win_rate: the same at equal length (logistic regression on the normalised length difference); "
    "kl: KL(policy || reference) estimated on the policy's samples.",
]


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_format(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *body])


def _html_table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>"
                   for row in frame.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _story(data: pl.DataFrame, comparison: pl.DataFrame, metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The report as (kind, content) blocks, rendered identically to Markdown and HTML."""
    models = metrics.get("models", {})
    blocks: list[tuple[str, Any]] = [("h1", "prefalign run report")]
    run = metrics.get("run", {})
    if run:
        blocks.append(("p", " · ".join(f"{k}: {v}" for k, v in run.items())))
    blocks += [
        ("h2", "Data"),
        ("p", f"{data['pairs'].sum()} validated pairs from {data.height} sources "
              f"(evaluated: {run.get('evaluated_pairs', '?')} pairs of split(s) {run.get('evaluated_splits', '?')})."),
        ("table", data),
        ("h2", "Models"),
        ("list", [f"{name} ({m.get('kind')}): {m.get('description', '')}".rstrip(": ") for name, m in models.items()]),
        ("h2", "Comparison"),
        ("table", comparison),
        ("list", _EXPLANATIONS),
    ]
    unmapped = sorted({s for m in models.values() for s in (m.get("rewardbench") or {}).get("unmapped_subsets", [])})
    if unmapped:
        blocks.append(("p", f"RewardBench subsets in no section (not scored): {', '.join(unmapped)}."))
    return blocks


def render_markdown(data: pl.DataFrame, comparison: pl.DataFrame, metrics: Mapping[str, Any],
                    plot_names: list[str], plot_folder: str) -> str:
    out = []
    for kind, content in _story(data, comparison, metrics):
        if kind == "h1":
            out.append(f"# {content}\n")
        elif kind == "h2":
            out.append(f"\n## {content}\n")
        elif kind == "p":
            out.append(f"{content}\n")
        elif kind == "table":
            out.append(markdown_table(content) + "\n")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in content) + "\n")
    out.append("\n## Plots\n")
    out += [f"![{name}]({plot_folder}/{name}.png)" for name in plot_names]
    return "\n".join(out) + "\n"


def render_html(data: pl.DataFrame, comparison: pl.DataFrame, metrics: Mapping[str, Any],
                images: Mapping[str, str]) -> str:
    """A self-contained page: the plots are embedded as base64 PNG, so the file can be mailed."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>prefalign run report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>"]
    for kind, content in _story(data, comparison, metrics):
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "table":
            parts.append(_html_table(content))
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in content) + "</ul>")
    parts.append("<h2>Plots</h2>")
    parts += [f"<h3>{html.escape(n)}</h3><img alt='{html.escape(n)}' src='data:image/png;base64,{b64}'>"
              for n, b64 in images.items()]
    parts.append("</body></html>")
    return "\n".join(parts)
