"""Contradicting judgments of one comparison: detect them and resolve them by a configured rule.

A COMPARISON is a prompt and an UNORDERED pair of responses, in canonical text (core/text.py):
the same two answers judged twice with the seats swapped are one comparison. Its judgments
CONTRADICT when at least one says A > B (p_A > 0.5) and another says B > A (p_A < 0.5); a tie
(p_A = 0.5) contradicts nothing. Rules (``feedback.conflicts`` in parameters_feedback.yml,
docs/methods.md s8):

* within one source (``within_source``): ``pool`` -> one pair whose soft target is the mean of
  P(A > B) over the judgments, re-oriented so that p_chosen >= 0.5; ``drop`` -> no pair.
* across sources (``across_sources``), after the within-source step: ``priority`` -> keep the
  judgments of the source listed first under feedback.sources, drop the others; ``pool`` -> one
  pooled pair carrying the highest-priority source's name, feedback and signal; ``drop``.

A pooled pair's margin is recomputed from the pooled p by the inverse of its source's
soft-target rule (margin = logit(p) * scale: 1/gamma for score gaps, 1 for judge probabilities
and votes, the temperature for synthetic ground truth, null for binary labels), so margin and
p_chosen always agree in sign and size; ``true_p`` is the mean when every judgment has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import polars as pl

from prefalign.core.schema import comparison_id_of
from prefalign.core.text import canonical_memo, canonical_text

WITHIN_RULES = ("pool", "drop")
ACROSS_RULES = ("priority", "pool", "drop")
_TIE_TOLERANCE = 1e-12
TOTAL_KEY = "_total"  # counts[TOTAL_KEY]: distinct contradicting comparisons per step (not a source)  # a pooled p this close to 0.5 is a tie (the mean of p and 1 - p)


@dataclass(frozen=True)
class ConflictRule:
    """How contradicting judgments are resolved (module docstring).

    Attributes:
        within_source: ``pool`` or ``drop``.
        across_sources: ``priority``, ``pool`` or ``drop``.
        priority: source names, highest priority first; unlisted sources rank after them.
        margin_scale: source -> scale of the recomputed margin logit(p) * scale; None = null.
    """

    within_source: str = "pool"
    across_sources: str = "priority"
    priority: tuple[str, ...] = ()
    margin_scale: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.within_source not in WITHIN_RULES:
            raise ValueError(f"feedback.conflicts.within_source={self.within_source!r} is not one of {WITHIN_RULES}")
        if self.across_sources not in ACROSS_RULES:
            raise ValueError(f"feedback.conflicts.across_sources={self.across_sources!r} is not one of {ACROSS_RULES}")

    @classmethod
    def from_params(cls, conflicts: Any, sources: Mapping[str, Mapping[str, Any]]) -> "ConflictRule":
        """From ``feedback.conflicts`` ({within_source, across_sources}, or one rule name for both;
        ``priority`` applies across sources only) and ``feedback.sources`` (its order is the priority).

        Args:
            conflicts: feedback.conflicts (a mapping, one rule name, or None for the defaults).
            sources: feedback.sources, in priority order.

        Returns:
            The ConflictRule.

        Raises:
            ValueError: an unknown rule name, naming the key and the allowed values.
        """
        if conflicts is None:
            conflicts = {}
        if isinstance(conflicts, str):
            conflicts = {"within_source": "pool" if conflicts == "priority" else conflicts, "across_sources": conflicts}
        if not isinstance(conflicts, Mapping):
            raise ValueError(f"feedback.conflicts must be a rule name or {{within_source, across_sources}}, got {conflicts!r}")
        unknown = sorted(set(conflicts) - {"within_source", "across_sources"})
        if unknown:
            raise ValueError(f"feedback.conflicts has unknown keys {unknown}; use within_source and across_sources")
        return cls(str(conflicts.get("within_source", "pool")), str(conflicts.get("across_sources", "priority")),
                   tuple(sources), {name: margin_scale(p) for name, p in sources.items()})


def margin_scale(source_params: Mapping[str, Any]) -> float | None:
    """The scale s of a source's margin as a function of its soft target, m = logit(p) * s
    (the inverse of methods.md s1's rules); None for binary labels (no margin).

    Args:
        source_params: feedback.sources.<source> (signal, gamma, temperature).

    Returns:
        1/gamma for score gaps, the temperature for ground truth, 1 for judge probabilities and
        votes, None for binary.
    """
    signal = source_params.get("signal")
    if signal == "binary":
        return None
    if signal == "score_gap":
        return 1.0 / float(source_params["gamma"])
    if signal == "ground_truth":
        return float(source_params.get("temperature", 1.0))
    return 1.0


def _logit(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return math.copysign(math.inf, p - 0.5)
    return math.log(p / (1.0 - p))


def resolve_conflicts(rows: pl.DataFrame, rule: ConflictRule) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """Detect and resolve contradicting judgments in pair rows (PAIR_ROW_COLUMNS, priority order).

    Args:
        rows: pair rows of every source; row order is kept for everything not resolved, and a
            pooled pair takes the place of its group's first row.
        rule: the ConflictRule.

    Returns:
        (rows, counts): counts[source] = {"within_source": {comparisons, judgments, pairs_out,
        resolution}, "across_sources": {comparisons, judgments, kept, dropped, resolution}} for
        every source involved in a contradiction, and counts[TOTAL_KEY] = {"within_source": n,
        "across_sources": n}, the number of distinct contradicting comparisons per step.
    """
    if rows.height == 0:
        return rows, {TOTAL_KEY: {"within_source": 0, "across_sources": 0}}
    keys, a_is_chosen = [], []
    with canonical_memo():  # a text repeated across judgments is canonicalised once
        for prompt, chosen, rejected in zip(rows["prompt"].to_list(), rows["chosen"].to_list(), rows["rejected"].to_list()):
            keys.append(comparison_id_of(prompt, chosen, rejected))
            a_is_chosen.append(canonical_text(chosen) <= canonical_text(rejected))  # seat a = the smaller canonical response, as in the id
    work = rows.with_columns(
        _key=pl.Series(keys, dtype=pl.String), _a_chosen=pl.Series(a_is_chosen, dtype=pl.Boolean),
    ).with_row_index("_i").with_columns(_p_a=p_a_expr())
    work, counts = resolve_keyed(work, rule)
    return work.drop("_i", "_key", "_a_chosen", "_p_a"), counts


def p_a_expr() -> pl.Expr:
    """P(A > B) of a pair row, seat A being the smaller canonical response (``_a_chosen``).

    Returns:
        The expression p_chosen where A is the chosen response, else 1 - p_chosen.
    """
    return pl.when(pl.col("_a_chosen")).then(pl.col("p_chosen")).otherwise(1.0 - pl.col("p_chosen"))


def resolve_keyed(work: pl.DataFrame, rule: ConflictRule) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """``resolve_conflicts`` on rows that already carry their keys: the streaming path
    (core/feedback/streaming.py) computes them chunk by chunk and resolves only the rows of the
    comparisons judged both ways (module docstring; docs/methods.md s8).

    Args:
        work: pair rows plus ``_i`` (the row's rank in priority order), ``_key`` (comparison_id_of),
            ``_a_chosen`` (seat A is the chosen response) and ``_p_a`` (p_a_expr). Every judgment
            of a comparison must be present: a group is resolved as a whole.
        rule: the ConflictRule.

    Returns:
        (rows sorted by ``_i``, helper columns kept; counts as ``resolve_conflicts`` gives them).
    """
    counts: dict[str, dict[str, Any]] = {TOTAL_KEY: {"within_source": 0, "across_sources": 0}}
    if work.height == 0:
        return work, counts
    totals = {}
    work, totals["within_source"] = _resolve(work, ["source", "_key"], rule.within_source, rule, counts, "within_source")
    work, totals["across_sources"] = _resolve(work, ["_key"], rule.across_sources, rule, counts, "across_sources")
    counts[TOTAL_KEY] = totals
    return work.sort("_i"), counts


def _conflicting_groups(work: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return (work.group_by(by).agg(_pos=(pl.col("_p_a") > 0.5).any(), _neg=(pl.col("_p_a") < 0.5).any(),
                                   _rows=pl.col("_i"))
            .filter(pl.col("_pos") & pl.col("_neg")))


def _resolve(work: pl.DataFrame, by: list[str], how: str, rule: ConflictRule,
             counts: dict[str, dict[str, Any]], scope: str) -> tuple[pl.DataFrame, int]:
    groups = _conflicting_groups(work, by)
    if groups.height == 0:
        return work, 0
    rank = {name: i for i, name in enumerate(rule.priority)}
    by_index = {r["_i"]: r for r in work.filter(pl.col("_i").is_in(groups["_rows"].explode().implode())).iter_rows(named=True)}
    removed: list[int] = []
    added: list[dict[str, Any]] = []
    for members in groups["_rows"].to_list():
        judged = sorted((by_index[i] for i in members), key=lambda r: (rank.get(r["source"], len(rank)), r["_i"]))
        best = judged[0]["source"]
        for source in {r["source"] for r in judged}:
            entry = counts.setdefault(source, {}).setdefault(scope, {"comparisons": 0, "judgments": 0, "resolution": how})
            entry["comparisons"] += 1
            mine = sum(r["source"] == source for r in judged)
            entry["judgments"] += mine
            if scope == "within_source":
                entry["pairs_out"] = entry.get("pairs_out", 0) + (1 if how == "pool" else 0)
            else:
                kept = mine if (how == "priority" and source == best) else 0
                entry["kept"] = entry.get("kept", 0) + kept
                entry["dropped"] = entry.get("dropped", 0) + mine - kept
                if how == "pool" and source == best:
                    entry["pooled_pairs_out"] = entry.get("pooled_pairs_out", 0) + 1
        if how == "priority":
            removed += [r["_i"] for r in judged if r["source"] != best]
            continue
        removed += [r["_i"] for r in judged]
        if how == "pool":
            added.append(_pooled(judged, rule.margin_scale.get(best, 1.0)))
    kept = work.filter(~pl.col("_i").is_in(removed))
    if not added:
        return kept, groups.height
    return pl.concat([kept, pl.DataFrame(added, schema=work.schema, orient="row")]), groups.height


def _pooled(judged: list[dict[str, Any]], scale: float | None) -> dict[str, Any]:
    """One pair from contradicting judgments: mean P(A > B), oriented so p_chosen >= 0.5, the
    margin recomputed from it (module docstring), texts and fields of the first judgment."""
    first = judged[0]
    text_a, text_b = (first["chosen"], first["rejected"]) if first["_a_chosen"] else (first["rejected"], first["chosen"])
    p_a = sum(r["_p_a"] for r in judged) / len(judged)
    if abs(p_a - 0.5) < _TIE_TOLERANCE:
        p_a = 0.5
    a_wins = p_a >= 0.5  # a tie keeps the canonical order A, B
    p = p_a if a_wins else 1.0 - p_a
    true_ps = [r["true_p"] if r["_a_chosen"] else 1.0 - r["true_p"] for r in judged if r["true_p"] is not None]
    true_p = sum(true_ps) / len(true_ps) if len(true_ps) == len(judged) else None
    return {**first, "chosen": text_a if a_wins else text_b, "rejected": text_b if a_wins else text_a,
            "p_chosen": p, "margin": None if scale is None else _logit(p) * scale,
            "true_p": None if true_p is None else (true_p if a_wins else 1.0 - true_p),
            "_a_chosen": a_wins, "_p_a": p_a, "_i": min(r["_i"] for r in judged)}
