"""From normalised feedback to the pairs table (docs/architecture.md, "The one contract").

Steps, each a pure function on polars frames:

1. ``within_group_pairs``: a multi-response source's scored responses -> comparisons. The rule:
   every unordered pair of distinct responses to the same prompt (k responses give k(k-1)/2);
   when that is more than ``max_pairs_per_prompt``, keep the pairs with the smallest
   pseudo-random rank (the XOR of the two responses' stable hashes), so the kept pairs are a reproducible,
   unbiased sample of all pairs (not biased towards big or small margins).
2. ``to_pair_rows``: comparisons -> oriented pair rows with margin and p_chosen (margins.py),
   dropping ties if the source says ``drop_ties`` and pairs whose two texts are identical.
3. ``build_pairs_table``: the pair rows of every source (parsed or generated) -> one table with
   pair_id and prompt_id, contradicting judgments of one comparison resolved (``conflicts.py``),
   deduplicated by pair_id (first occurrence wins, sources in the order given), and a split
   assigned by a hash of prompt_id. Every comparison and hash uses the canonical text
   (core/text.py, docs/methods.md s8).

``PAIR_ROW_COLUMNS`` is the extension point for generated sources (e.g. synthetic data): a
frame with these columns can be passed to ``build_pairs_table`` beside the parsed sources.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import polars as pl

from prefalign.core.feedback.conflicts import ConflictRule, resolve_conflicts
from prefalign.core.feedback.margins import orient, signed_target
from prefalign.core.schema import (
    HELDOUT,
    PAIRS_SCHEMA,
    SPLITS,
    conform_to_pairs_schema,
    pair_id_of,
    prompt_id_of,
    source_names,
    stable_hash,
    with_prompt_messages,
)
from prefalign.core.text import canonical_memo, canonical_text

PAIR_ROW_COLUMNS: dict[str, pl.DataType] = {
    c: PAIRS_SCHEMA[c] for c in ("prompt", "prompt_messages", "chosen", "rejected", "margin", "p_chosen", "source",
                                 "feedback", "signal", "true_p")
}
# a generated source may leave prompt_messages out: it is then one user turn holding the prompt
REQUIRED_PAIR_ROW_COLUMNS = tuple(c for c in PAIR_ROW_COLUMNS if c != "prompt_messages")
_HASH_HEX = 15  # 60-bit integers from the stable hash


def _stable_int(*parts: str) -> int:
    return int(stable_hash(*parts)[:_HASH_HEX], 16)


def within_group_pairs(scored: pl.DataFrame, max_pairs_per_prompt: int | None) -> tuple[pl.DataFrame, int, int]:
    """Scored responses (group, prompt, response, value, responder, record) -> comparisons
    (prompt, response_a, response_b, value_a, value_b, ties, record), the number of candidate
    pairs, and how many of them had identical texts (dropped before the cap). Response a is the
    one that came first in the raw files.

    Args:
        scored: one row per judged response (parsers.SCORED_SCHEMA).
        max_pairs_per_prompt: the cap per group (the pairs of smallest pseudo-random rank are
            kept, module docstring); None = all k(k-1)/2.

    Returns:
        (comparisons, candidate pairs, identical-text pairs dropped).
    """
    # one stable hash per response; the XOR of the two is the pair's rank: uniform, and the same
    # whichever response comes first in the files. Equal hashes = identical texts.
    # canonical text: responses that are the same to a reader hash alike (and count as identical)
    response_hash = pl.Series([_stable_int("rank", g, canonical_text(r)) for g, r in zip(
        scored["group"].to_list(), scored["response"].to_list())], dtype=pl.UInt64)
    # the self-join runs on small integer keys only; texts are gathered once, for the kept pairs
    keys = scored.select(_g=pl.col("group").rank("dense"), _h=response_hash).with_row_index("_i")
    candidates = keys.join(keys, on="_g", suffix="_b").filter(pl.col("_i") < pl.col("_i_b"))
    n_candidates = candidates.height
    # identical texts carry no preference: drop them before the cap so they take no pair's place
    candidates = candidates.filter(pl.col("_h") != pl.col("_h_b"))
    n_identical = n_candidates - candidates.height
    if max_pairs_per_prompt is not None:
        rank = pl.col("_h").xor(pl.col("_h_b")).rank("ordinal").over("_g")
        candidates = candidates.filter(rank <= int(max_pairs_per_prompt))
    candidates = candidates.sort("_i", "_i_b")
    a, b = scored[candidates["_i"]], scored[candidates["_i_b"]]
    messages = {"prompt_messages": a["prompt_messages"]} if "prompt_messages" in scored.columns else {}
    comparisons = pl.DataFrame({
        "prompt": a["prompt"], **messages, "response_a": a["response"], "response_b": b["response"],
        "value_a": a["value"], "value_b": b["value"], "ties": pl.Series([None] * a.height, dtype=pl.Float64),
        "record": a["record"] + " vs " + b["record"],
    })
    return comparisons, n_candidates, n_identical


def to_pair_rows(comparisons: pl.DataFrame, source: str, params: dict[str, Any]) -> tuple[pl.DataFrame, dict[str, int]]:
    """Comparisons -> oriented pair rows of one source, and the counts of what was dropped.

    params: signal, feedback, drop_ties, and the signal's own keys (gamma, eps, laplace_alpha,
    binary_p). Ties (p = 0.5) are kept unless drop_ties: MMPO learns "equal" from them.

    Args:
        comparisons: one row per judged pair (parsers.COMPARISON_SCHEMA).
        source: the source name written in every row.
        params: the source's parameters.

    Returns:
        (pair rows (PAIR_ROW_COLUMNS), {identical_dropped, ties, ties_dropped}).

    Raises:
        ValueError: an unknown signal (margins.signed_target).
    """
    margin, p_a = signed_target(params["signal"], params)
    rows = with_prompt_messages(orient(comparisons, margin, p_a))
    with canonical_memo():  # a response sits in many pairs of its prompt: canonicalised once
        same = pl.Series([canonical_text(c) == canonical_text(r) for c, r in zip(rows["chosen"].to_list(), rows["rejected"].to_list())],
                         dtype=pl.Boolean)
    identical = int(same.sum())
    rows = rows.filter(~same)
    is_tie = pl.col("p_chosen") == 0.5
    ties = rows.filter(is_tie).height
    if params.get("drop_ties", False):
        rows = rows.filter(~is_tie)
    rows = rows.with_columns(
        source=pl.lit(source), feedback=pl.lit(params["feedback"]), signal=pl.lit(params["signal"]),
        true_p=pl.lit(None, dtype=pl.Float64),
    ).select([pl.col(c).cast(t) for c, t in PAIR_ROW_COLUMNS.items()])
    return rows, {"identical_dropped": identical, "ties": ties,
                  "ties_dropped": ties if params.get("drop_ties", False) else 0}


def assign_split(prompt_ids: pl.Series, ratios: dict[str, float], salt: str) -> pl.Series:
    """train/val/test by a stable hash of (salt, prompt_id): the same on every machine and run,
    and a prompt is in exactly one split (docs/methods.md s8).

    Args:
        prompt_ids: one per row.
        ratios: {"train": .8, "val": .1, "test": .1} (feedback.split.ratios).
        salt: feedback.split.salt.

    Returns:
        The split of each row (split_rule, computed once per distinct prompt_id).

    Raises:
        ValueError: negative ratios, or ratios that do not sum to 1.
    """
    split_of = split_rule(ratios, salt)
    unique = prompt_ids.unique()
    lookup = pl.DataFrame({"prompt_id": unique, "split": [split_of(p) for p in unique]},
                          schema={"prompt_id": pl.String, "split": pl.String})
    return pl.DataFrame({"prompt_id": prompt_ids}).join(lookup, on="prompt_id", how="left", maintain_order="left")["split"]


def split_rule(ratios: dict[str, float], salt: str) -> Callable[[str], str]:
    """The function prompt_id -> train/val/test of ``assign_split``, one prompt at a time (the
    streaming path splits chunk by chunk; docs/methods.md s8).

    Args:
        ratios: {"train": .8, "val": .1, "test": .1} (feedback.split.ratios).
        salt: feedback.split.salt.

    Returns:
        split_of(prompt_id): the first split whose cumulative ratio exceeds the prompt's uniform
        draw u = stable_hash("split", salt, prompt_id) / 16^15.

    Raises:
        ValueError: negative ratios, or ratios that do not sum to 1.
    """
    weights = [float(ratios.get(s, 0.0)) for s in SPLITS]
    if any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-9:
        raise ValueError(f"split ratios {ratios} must be >= 0 and sum to 1 (keys {SPLITS})")
    bounds = [sum(weights[: i + 1]) for i in range(len(SPLITS))]

    def split_of(prompt_id: str) -> str:
        u = _stable_int("split", salt, prompt_id) / float(16**_HASH_HEX)
        return next((s for s, b in zip(SPLITS, bounds) if u < b), SPLITS[-1])

    return split_of


def check_heldout_sources(heldout_sources: str | list[str] | tuple[str, ...] | None, sources: Iterable[str]) -> list[str]:
    """``feedback.split.heldout_sources`` checked against the configured sources.

    Args:
        heldout_sources: a list of names, one string of names separated by spaces, or None.
        sources: the names under ``feedback.sources``.

    Returns:
        The held-out source names (a list; empty for None).

    Raises:
        ValueError: a name that is not a configured source, naming it and the sources.
    """
    names = source_names(heldout_sources) or []
    known = list(sources)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"feedback.split.heldout_sources names {unknown}, which are not sources; "
                         f"use names under feedback.sources: {sorted(known)}")
    return list(names)


def hold_out_sources(pairs: pl.DataFrame, heldout_sources: str | list[str] | tuple[str, ...] | None) -> pl.DataFrame:
    """Move every prompt of a held-out source to split ``heldout``, whatever source its rows come from.

    Sources can share prompts (PandaLM's human and AI-judge sources label the same pairs), so the
    unit held out is the prompt: a prompt that any held-out source has is in no train, val or test
    split of any source, and a held-out source is evaluated on prompts no model was trained on.
    ``heldout_sources`` may be one string of names separated by spaces (``core.schema.source_names``).

    Args:
        pairs: the pairs table (prompt_id, source, split).
        heldout_sources: feedback.split.heldout_sources.

    Returns:
        The table with split = ``heldout`` for every row of such a prompt.
    """
    if not heldout_sources:
        return pairs
    heldout_sources = source_names(heldout_sources)
    prompts = pairs.filter(pl.col("source").is_in(list(heldout_sources)))["prompt_id"].unique()
    return pairs.with_columns(
        pl.when(pl.col("prompt_id").is_in(prompts.implode())).then(pl.lit(HELDOUT)).otherwise(pl.col("split")).alias("split"))


def build_pairs_table(pair_rows: list[pl.DataFrame], split: dict[str, Any],
                      conflicts: ConflictRule | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Every source's pair rows -> the pairs table (PAIRS_SCHEMA), and what was resolved.

    Args:
        pair_rows: one frame per source (PAIR_ROW_COLUMNS; prompt_messages optional), in priority
            order: on a repeated pair_id the first row wins, and ``conflicts`` ranks sources so.
        split: ``{"ratios": {...}, "salt": str}`` (feedback.split).
        conflicts: the rule for contradicting judgments (default: pool within a source, keep the
            higher-priority source across sources; docs/methods.md s8).

    Returns:
        (pairs, resolution): resolution = {"duplicates": {source: rows dropped as a repeated
        pair_id}, "conflicts": per-source counts from ``resolve_conflicts``}.

    Raises:
        ValueError: a frame lacks a required column.
    """
    for frame in pair_rows:
        missing = [c for c in REQUIRED_PAIR_ROW_COLUMNS if c not in frame.columns]
        if missing:
            source = frame["source"][0] if "source" in frame.columns and frame.height else "?"
            raise ValueError(f"pair rows of source {source!r} lack columns {missing}; a source must give {list(REQUIRED_PAIR_ROW_COLUMNS)}")
    rows = pl.concat([with_prompt_messages(f).select([pl.col(c).cast(t) for c, t in PAIR_ROW_COLUMNS.items()]) for f in pair_rows]) \
        if pair_rows else pl.DataFrame(schema=PAIR_ROW_COLUMNS)
    with canonical_memo():  # conflicts, pair_id and prompt_id canonicalise each distinct text once
        rows, conflict_counts = resolve_conflicts(rows, conflicts or ConflictRule())
        # hashes in plain Python loops: stable_hash is Python, and a loop beats map_elements' per-row dicts
        prompts = rows["prompt"].unique()
        prompt_ids = pl.DataFrame({"prompt": prompts, "prompt_id": [prompt_id_of(p) for p in prompts.to_list()]},
                                  schema={"prompt": pl.String, "prompt_id": pl.String})
        rows = rows.with_columns(pair_id=pl.Series([pair_id_of(p, c, r) for p, c, r in zip(
            rows["prompt"].to_list(), rows["chosen"].to_list(), rows["rejected"].to_list())], dtype=pl.String))
    rows = rows.join(prompt_ids, on="prompt", how="left", maintain_order="left")
    first = rows.with_row_index("_i").with_columns(_first=pl.col("_i").min().over("pair_id"))
    duplicates = dict(first.filter(pl.col("_i") != pl.col("_first")).group_by("source").len().iter_rows())
    pairs = first.filter(pl.col("_i") == pl.col("_first")).drop("_i", "_first")
    pairs = pairs.with_columns(split=assign_split(pairs["prompt_id"], split["ratios"], str(split.get("salt", ""))))
    pairs = hold_out_sources(pairs, split.get("heldout_sources") or [])
    return conform_to_pairs_schema(pairs), {"duplicates": duplicates, "conflicts": conflict_counts}
