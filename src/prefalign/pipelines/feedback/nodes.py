"""Thin nodes of the feedback pipeline; the method lives in prefalign.core.feedback."""

from __future__ import annotations

import logging
from typing import Any, Callable

import polars as pl

from prefalign.core.feedback.conflicts import ConflictRule
from prefalign.core.feedback.ingest import generated_source_stats, ingest_source, rejected_table, summarise
from prefalign.core.feedback.pairs import PAIR_ROW_COLUMNS, build_pairs_table, check_heldout_sources
from prefalign.core.feedback.parsers import REJECTED_SCHEMA
from prefalign.core.feedback.records import RawRecord
from prefalign.core.feedback.streaming import (build_pairs_lazy, check_engine, ingest_source_chunks, streaming_settings,
                                               summarise_dataset, write_rows)
from prefalign.core.schema import with_prompt_messages

SourceOutputs = tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]

log = logging.getLogger(__name__)


def _disabled(source: str) -> SourceOutputs:
    return pl.DataFrame(schema=PAIR_ROW_COLUMNS), pl.DataFrame(schema=REJECTED_SCHEMA), {"source": source, "enabled": False}


def ingest_raw_source(source_params: dict[str, Any], max_rejected_fraction: float | None,
                      feedback: dict[str, Any] | None = None, *, source: str, **raw_loaders: Any) -> SourceOutputs:
    """Node ``ingest_<source>`` of one raw source: its parameters and its raw loaders (role -> lazy
    loader; a disabled source never reads its files). ``source`` is bound in pipeline.py.

    ``feedback`` (the whole block) gives the engine: with ``feedback.engine: streaming`` the records
    are read ``feedback.streaming.chunk_records`` at a time and the pair rows go to parquet parts
    under ``feedback.streaming.parts_dir``, keyed with ``feedback.split``: the node returns a scan
    of them (core/feedback/streaming.py)."""
    if not source_params.get("enabled", True):
        return _disabled(source)  # the raw files are never read
    feedback = feedback or {}
    if check_engine(feedback.get("engine")) == "streaming":
        settings = streaming_settings(feedback.get("streaming"))
        return ingest_source_chunks(source, {role: load.chunks(settings["chunk_records"]) for role, load in raw_loaders.items()},
                                    source_params, feedback["split"], settings["parts_dir"], max_rejected_fraction)
    return ingest_source(source, {role: load() for role, load in raw_loaders.items()}, source_params, max_rejected_fraction)


def generate_source(source_params: dict[str, Any], *, source: str,
                    generate: Callable[[dict[str, Any]], pl.DataFrame]) -> SourceOutputs:
    """Node ``generate_<source>`` of a source generated from parameters (no raw file), e.g. synthetic
    pairs: ``generate(source_params)`` returns pair rows (PAIR_ROW_COLUMNS). ``source`` and
    ``generate`` are bound in pipeline.py."""
    if not source_params.get("enabled", True):
        return _disabled(source)
    rows = generate(source_params).with_columns(source=pl.lit(source))
    return rows, pl.DataFrame(schema=REJECTED_SCHEMA), generated_source_stats(source, rows, source_params)


def ingest_tables(sources: dict[str, dict[str, Any]], max_rejected_fraction: float | None,
                  read_table: Callable[..., list[RawRecord]]) -> tuple[pl.DataFrame, pl.DataFrame, list[dict[str, Any]]]:
    """Every enabled user table: a source under feedback.sources with ``parser: preference_table``
    and ``table: <file or folder under the tables folder>`` (optional ``file_format``, ``glob``).
    One parameters block per table is all it takes (README, "Bring your own preference table")."""
    frames, rejected, stats = [pl.DataFrame(schema=PAIR_ROW_COLUMNS)], [pl.DataFrame(schema=REJECTED_SCHEMA)], []
    for source, params in (sources or {}).items():
        if params.get("parser") != "preference_table" or "table" not in params or not params.get("enabled", True):
            continue
        records = read_table(str(params["table"]), params.get("file_format"), params.get("glob"))
        rows, bad, source_stats = ingest_source(source, {"records": records}, params, max_rejected_fraction)
        frames.append(rows)
        rejected.append(bad)
        stats.append(source_stats)
    return pl.concat(frames), pl.concat(rejected), stats


def build_pairs(feedback_params: dict[str, Any], *pair_rows: pl.DataFrame | pl.LazyFrame) -> tuple[pl.DataFrame | pl.LazyFrame, dict[str, Any]]:
    """Every source's pair rows -> the pairs table (conflicts resolved, deduplicated, split by prompt_id),
    and the resolution counts (duplicates and conflicts per source).

    A pair produced by several sources (PandaLM's humans and its AI judges label the same pairs)
    is kept once, from the source listed first under feedback.sources: the order is the priority.
    Contradicting judgments follow feedback.conflicts (core/feedback/conflicts.py)."""
    sources = feedback_params.get("sources", {}) or {}
    priority = {name: i for i, name in enumerate(sources)}
    if check_engine(feedback_params.get("engine")) == "streaming":
        return _build_pairs_streaming(feedback_params, list(pair_rows))
    frames = [f for f in pair_rows if f.height]
    rows = pl.concat([with_prompt_messages(f).select([pl.col(c).cast(t) for c, t in PAIR_ROW_COLUMNS.items()]) for f in frames]) \
        if frames else pl.DataFrame(schema=PAIR_ROW_COLUMNS)
    # stable sort by the source's rank: a frame may hold several sources (the user tables)
    rows = rows.sort(pl.col("source").replace_strict(priority, default=len(priority), return_dtype=pl.Int64), maintain_order=True)
    check_heldout_sources(feedback_params["split"].get("heldout_sources"), priority)
    rule = ConflictRule.from_params(feedback_params.get("conflicts"), sources)
    return build_pairs_table([rows], feedback_params["split"], rule)


def _build_pairs_streaming(feedback_params: dict[str, Any], pair_rows: list[pl.DataFrame | pl.LazyFrame]) -> tuple[pl.LazyFrame, dict[str, Any]]:
    """build_pairs with the streaming engine: in-memory rows (generated sources, user tables) join
    the parts on disk; the table is a lazy query that the `pairs` dataset sinks."""
    sources = feedback_params.get("sources", {}) or {}
    check_heldout_sources(feedback_params["split"].get("heldout_sources"), sources)
    parts_dir = streaming_settings(feedback_params.get("streaming"))["parts_dir"]
    scans = []
    for frame in pair_rows:
        if isinstance(frame, pl.LazyFrame):
            scans.append(frame)
        elif frame.height:
            scans += write_rows(with_prompt_messages(frame), feedback_params["split"], parts_dir)
    rule = ConflictRule.from_params(feedback_params.get("conflicts"), sources)
    return build_pairs_lazy(scans, list(sources), feedback_params["split"], rule)


def collect_rejected(*rejected: pl.DataFrame) -> pl.DataFrame:
    return rejected_table(list(rejected))


def summarise_feedback(pairs: pl.DataFrame | pl.LazyFrame, resolution: dict[str, Any], *source_stats: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    """The feedback summary; an argument may be one source's stats or a list of them (user tables).

    Logs, per source that lost rows to deduplication, how many and why (a pair already produced,
    by an earlier row of the same source or by a source listed earlier under feedback.sources, is
    kept there)."""
    flat = [s for item in source_stats for s in (item if isinstance(item, list) else [item])]
    summarise_table = summarise_dataset if isinstance(pairs, pl.LazyFrame) else summarise
    summary = summarise_table(pairs, [s for s in flat if s.get("enabled", True)], resolution["duplicates"],
                              resolution.get("conflicts"))
    for name, stats in summary["sources"].items():
        if stats.get("duplicates_dropped"):
            log.info(
                "feedback %s: %d records read -> %d pairs; %d pair rows dropped as duplicates of a pair "
                "already produced by this source or a higher-priority one (a pair is kept once, from "
                "the source listed first under feedback.sources)",
                name, stats["records_read"], stats["pairs"], stats["duplicates_dropped"],
            )
    return summary
