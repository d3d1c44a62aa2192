"""Thin nodes of the feedback pipeline; the method lives in prefalign.core.feedback."""

from __future__ import annotations

import logging
from typing import Any, Callable

import polars as pl

from prefalign.core.feedback.ingest import generated_source_stats, ingest_source, rejected_table, summarise
from prefalign.core.feedback.pairs import PAIR_ROW_COLUMNS, build_pairs_table
from prefalign.core.feedback.parsers import REJECTED_SCHEMA
from prefalign.core.feedback.records import RawRecord

SourceOutputs = tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]

log = logging.getLogger(__name__)


def _disabled(source: str) -> SourceOutputs:
    return pl.DataFrame(schema=PAIR_ROW_COLUMNS), pl.DataFrame(schema=REJECTED_SCHEMA), {"source": source, "enabled": False}


def make_ingest_node(source: str) -> Callable[..., SourceOutputs]:
    """The node of one raw source: its parameters and its raw loaders (role -> lazy loader)."""

    def ingest(source_params: dict[str, Any], **raw_loaders: Callable[[], list[RawRecord]]) -> SourceOutputs:
        if not source_params.get("enabled", True):
            return _disabled(source)  # the raw files are never read
        return ingest_source(source, {role: load() for role, load in raw_loaders.items()}, source_params)

    ingest.__name__ = f"ingest_{source}"
    return ingest


def make_generated_node(source: str, generate: Callable[[dict[str, Any]], pl.DataFrame]) -> Callable[[dict[str, Any]], SourceOutputs]:
    """The node of a source generated from parameters (no raw file), e.g. synthetic pairs:
    ``generate(source_params)`` returns pair rows (PAIR_ROW_COLUMNS)."""

    def generated(source_params: dict[str, Any]) -> SourceOutputs:
        if not source_params.get("enabled", True):
            return _disabled(source)
        rows = generate(source_params).with_columns(source=pl.lit(source))
        return rows, pl.DataFrame(schema=REJECTED_SCHEMA), generated_source_stats(source, rows, source_params)

    generated.__name__ = f"generate_{source}"
    return generated


def build_pairs(feedback_params: dict[str, Any], *pair_rows: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Every source's pair rows -> the pairs table (deduplicated, split by prompt_id).

    A pair produced by several sources (PandaLM's humans and its AI judges label the same pairs)
    is kept once, from the source listed first under feedback.sources: the order is the priority."""
    priority = {name: i for i, name in enumerate(feedback_params.get("sources", {}))}
    unknown = sorted(set(feedback_params["split"].get("heldout_sources") or []) - set(priority))
    if unknown:
        raise ValueError(f"feedback.split.heldout_sources names {unknown}, which are not sources; "
                         f"use names under feedback.sources: {sorted(priority)}")
    ordered = sorted(pair_rows, key=lambda f: priority.get(f["source"][0] if f.height else "", len(priority)))
    return build_pairs_table(ordered, feedback_params["split"])


def collect_rejected(*rejected: pl.DataFrame) -> pl.DataFrame:
    return rejected_table(list(rejected))


def summarise_feedback(pairs: pl.DataFrame, duplicates: dict[str, int], *source_stats: dict[str, Any]) -> dict[str, Any]:
    """The per-source summary; logs, per source that lost rows to deduplication, how many and why
    (a pair already produced, by an earlier row of the same source or by a source listed earlier
    under feedback.sources, is kept there)."""
    summary = summarise(pairs, [s for s in source_stats if s.get("enabled", True)], duplicates)
    for name, stats in summary["sources"].items():
        if stats.get("duplicates_dropped"):
            log.info(
                "feedback %s: %d records read -> %d pairs; %d pair rows dropped as duplicates of a pair "
                "already produced by this source or a higher-priority one (a pair is kept once, from "
                "the source listed first under feedback.sources)",
                name, stats["records_read"], stats["pairs"], stats["duplicates_dropped"],
            )
    return summary
