"""The streaming feedback path: pairs built chunk by chunk on disk, memory flat in the number of pairs.

The in-memory path (ingest.py, pairs.py) holds every record and pair row of every source at once.
This path gives EXACTLY the same pairs table (ids, splits, conflicts and duplicates resolved the
same way; tests/feedback/test_streaming.py), in three steps:

1. ``ingest_source_chunks``: a per-record source (STREAMABLE_PARSERS: one judgment per record,
   no join table, no grouping of responses) is parsed ``chunk_records`` records at a time with
   the same parser and ``to_pair_rows``; each chunk's pair rows get their row-local keys
   (``keyed_pair_rows``: pair_id, prompt_id, the comparison key, the split drawn from prompt_id,
   the priority rank ``_i``) and are written as one parquet part. Other sources (multi-response
   groups, joins of questions and answers: small files in practice) are parsed whole, as today,
   and written the same way.
2. ``build_pairs_dataset``: the whole-table steps run as polars lazy queries on the parts,
   executed by the streaming engine on the key columns only: the comparisons judged both ways
   (both signs of P(A > B)) are found by a group-by, and only their rows are loaded and resolved
   by the in-memory rule (conflicts.resolve_keyed); the first row of each pair_id is kept (by
   ``_i``, the in-memory order); prompts of held-out sources move to ``heldout``. The table is
   written with ``sink_parquet`` as a folder of parquet files (PairsPartsDataset reads it back).
3. ``summarise_dataset``: the feedback summary of ``ingest.summarise``, computed per source.

``_i`` = rank of the source under feedback.sources x 2^40 + the row's index within its source, so
sorting by ``_i`` is the in-memory row order (priority, then raw order).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from prefalign.core.feedback.conflicts import TOTAL_KEY, ConflictRule, p_a_expr, resolve_keyed
from prefalign.core.feedback.ingest import _reasons, check_rejected_counts, check_source_params
from prefalign.core.feedback.pairs import PAIR_ROW_COLUMNS, split_rule, to_pair_rows, within_group_pairs
from prefalign.core.feedback.parsers import REJECTED_SCHEMA, get_parser
from prefalign.core.feedback.records import RawRecord
from prefalign.core.schema import (
    HELDOUT,
    PAIR_COLUMNS,
    PAIRS_SCHEMA,
    comparison_id_of,
    pair_id_of,
    prompt_id_of,
    source_names,
    with_prompt_messages,
)
from prefalign.core.text import canonical_memo, canonical_text

# parsers whose every record is judged on its own (one role, "records"): exact when chunked
STREAMABLE_PARSERS = ("ultrafeedback_pairs", "hh_rlhf_dialogues", "pandalm_votes", "preference_table")
RANK_SHIFT = 2**40  # rows per source before two sources' _i would overlap (10^12)
KEY_COLUMNS: dict[str, pl.DataType] = {
    "_i": pl.Int64, "_key": pl.String, "_key_hi": pl.UInt64, "_key_lo": pl.UInt64, "_a_chosen": pl.Boolean,
    "_p_a": pl.Float64, "pair_id": pl.String, "_pair_hi": pl.UInt64, "_pair_lo": pl.UInt64, "prompt_id": pl.String,
    "split": pl.String,
}
PART_SCHEMA: dict[str, pl.DataType] = {**PAIR_ROW_COLUMNS, **KEY_COLUMNS}
_COMPARISON = ["_key_hi", "_key_lo"]
_PAIR = ["_pair_hi", "_pair_lo"]


def _halves(hex_id: str) -> tuple[int, int]:
    """A 24-hex-digit id as two integers (64 + 32 bits): exact keys that group and join cheaply."""
    return int(hex_id[:16], 16), int(hex_id[16:], 16)


def keyed_pair_rows(rows: pl.DataFrame, rank: int, start: int, split: dict[str, Any]) -> pl.DataFrame:
    """Pair rows with the row-local keys of the streaming path (PART_SCHEMA).

    Args:
        rows: pair rows of one source (PAIR_ROW_COLUMNS; prompt_messages optional).
        rank: the source's position under feedback.sources (its priority).
        start: how many rows of this source came before (earlier chunks).
        split: feedback.split (ratios, salt).

    Returns:
        The rows plus ``_i`` (rank * 2^40 + start + row), the comparison key (``_key``, its two
        integer halves, ``_a_chosen``, ``_p_a``), pair_id (and halves), prompt_id, and the
        train/val/test split drawn from prompt_id (assign_split's rule; held-out prompts are moved
        later, table-wide).

    Raises:
        ValueError: a source with 2^40 rows or more, or bad split ratios.
    """
    if start + rows.height >= RANK_SHIFT:
        raise ValueError(f"a source with {start + rows.height} pair rows is above the streaming path's limit of 2^40")
    rows = with_prompt_messages(rows).select([pl.col(c).cast(t) for c, t in PAIR_ROW_COLUMNS.items()])
    split_of = split_rule(split["ratios"], str(split.get("salt", "")))
    keys, a_chosen, pair_ids, prompt_ids, splits = [], [], [], [], []
    with canonical_memo():  # a prompt or response repeated within the chunk is canonicalised once
        by_prompt: dict[str, tuple[str, str]] = {}
        for prompt, chosen, rejected in zip(rows["prompt"].to_list(), rows["chosen"].to_list(), rows["rejected"].to_list()):
            keys.append(comparison_id_of(prompt, chosen, rejected))
            a_chosen.append(canonical_text(chosen) <= canonical_text(rejected))
            pair_ids.append(pair_id_of(prompt, chosen, rejected))
            if prompt not in by_prompt:
                pid = prompt_id_of(prompt)
                by_prompt[prompt] = (pid, split_of(pid))
            pid, s = by_prompt[prompt]
            prompt_ids.append(pid)
            splits.append(s)
    key_halves = [_halves(k) for k in keys]
    pair_halves = [_halves(k) for k in pair_ids]
    return rows.with_columns(
        _i=pl.int_range(start, start + rows.height, dtype=pl.Int64) + rank * RANK_SHIFT,
        _key=pl.Series(keys, dtype=pl.String),
        _key_hi=pl.Series([h for h, _ in key_halves], dtype=pl.UInt64),
        _key_lo=pl.Series([lo for _, lo in key_halves], dtype=pl.UInt64),
        _a_chosen=pl.Series(a_chosen, dtype=pl.Boolean),
    ).with_columns(
        _p_a=p_a_expr(),
        pair_id=pl.Series(pair_ids, dtype=pl.String),
        _pair_hi=pl.Series([h for h, _ in pair_halves], dtype=pl.UInt64),
        _pair_lo=pl.Series([lo for _, lo in pair_halves], dtype=pl.UInt64),
        prompt_id=pl.Series(prompt_ids, dtype=pl.String),
        split=pl.Series(splits, dtype=pl.String),
    ).select([pl.col(c).cast(t) for c, t in PART_SCHEMA.items()])


def source_folder(parts_dir: str | Path, rank: int, source: str) -> Path:
    """``<parts_dir>/<rank>-<source>``: folders sort in priority order."""
    return Path(parts_dir) / f"{rank:04d}-{source}"


def _write_part(frame: pl.DataFrame, folder: Path, index: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / f"part-{index:06d}.parquet")


def _empty_stats(source: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"source": source, "parser": params["parser"], "signal": params["signal"], "feedback": params["feedback"],
            "records_read": 0, "records_rejected": 0, "records_used": 0, "auxiliary_records_read": 0,
            "auxiliary_records_rejected": 0, "join_duplicates": {}}


def ingest_source_chunks(source: str, rank: int, chunks: dict[str, Iterable[list[RawRecord]]], params: dict[str, Any],
                         split: dict[str, Any], parts_dir: str | Path, rejected_dir: str | Path,
                         max_rejected_fraction: float | None = None) -> dict[str, Any]:
    """One raw source, chunk by chunk, into pair-row parts (PART_SCHEMA) and rejected parts.

    Args:
        source: the source name (feedback.sources.<source>).
        rank: its position under feedback.sources.
        chunks: role -> iterable of record chunks (RawReader.chunks). A source whose parser is
            not in STREAMABLE_PARSERS has its chunks joined and is parsed whole.
        params: the source's parameters.
        split: feedback.split.
        parts_dir: folder of the pair-row parts (one subfolder per source, source_folder).
        rejected_dir: folder of the rejected-record parts (REJECTED_SCHEMA).
        max_rejected_fraction: feedback.max_rejected_fraction_per_file (the source's own
            ``max_rejected_fraction`` overrides it); None = no limit.

    Returns:
        The source's stats, key for key as ``ingest.ingest_source`` gives them.

    Raises:
        ValueError: bad source parameters. RawFileError: an unreadable file, or a file whose
        rejected fraction is above the limit (checked once the source is read, as a whole).
    """
    check_source_params(source, params)
    folder, bad_folder = source_folder(parts_dir, rank, source), source_folder(rejected_dir, rank, source)
    for old in (folder, bad_folder):
        shutil.rmtree(old, ignore_errors=True)
    if params["parser"] in STREAMABLE_PARSERS and set(chunks) == {"records"}:
        batches: Iterator[dict[str, list[RawRecord]]] = ({"records": c} for c in chunks["records"])
    else:
        batches = iter([{role: [r for c in parts for r in c] for role, parts in chunks.items()}])
    stats = _empty_stats(source, params)
    counters = dict.fromkeys(("candidate_pairs", "capped_dropped", "comparisons", "identical_dropped", "ties",
                              "ties_dropped", "pair_rows"), 0)
    read: dict[tuple[str, str], int] = {}
    all_rejected: list[dict[str, Any]] = []
    start, index, scored = 0, 0, False
    limit = params.get("max_rejected_fraction", max_rejected_fraction)
    for inputs in batches:
        with canonical_memo():
            parsed = get_parser(params["parser"])(inputs, params)
            for role, records in inputs.items():
                for rec in records:
                    read[(role, rec.file)] = read.get((role, rec.file), 0) + 1
            stats["records_read"] += parsed.records_read
            stats["records_rejected"] += parsed.records_rejected
            stats["auxiliary_records_read"] += parsed.auxiliary_read
            stats["auxiliary_records_rejected"] += parsed.auxiliary_rejected
            stats["join_duplicates"] = parsed.join_duplicates  # join tables: a source parsed whole
            if parsed.kind == "scored":
                scored = True
                comparisons, candidates, identical = within_group_pairs(parsed.frame, params.get("max_pairs_per_prompt"))
                stats.update(responses=parsed.frame.height, prompts=parsed.frame["group"].n_unique())
                counters["candidate_pairs"] += candidates
                counters["capped_dropped"] += candidates - identical - comparisons.height
            else:
                comparisons, identical = parsed.frame, 0
                counters["candidate_pairs"] += comparisons.height
            pair_rows, dropped = to_pair_rows(comparisons, source, params)
        counters["comparisons"] += comparisons.height
        counters["identical_dropped"] += dropped["identical_dropped"] + identical
        counters["ties"] += dropped["ties"]
        counters["ties_dropped"] += dropped["ties_dropped"]
        counters["pair_rows"] += pair_rows.height
        if parsed.rejected:
            all_rejected += [dict(r, source=source) for r in parsed.rejected]
        if pair_rows.height:
            _write_part(keyed_pair_rows(pair_rows, rank, start, split), folder, index)
            start += pair_rows.height
            index += 1
    if limit is not None:
        check_rejected_counts(source, read, all_rejected, float(limit))
    rejected = pl.DataFrame(all_rejected, schema=REJECTED_SCHEMA, orient="row") if all_rejected else pl.DataFrame(schema=REJECTED_SCHEMA)
    if rejected.height:
        _write_part(rejected, bad_folder, 0)
    stats["records_used"] = stats["records_read"] - stats["records_rejected"]
    stats.update(candidate_pairs=counters["candidate_pairs"], capped_dropped=counters["capped_dropped"])
    stats.update(comparisons=counters["comparisons"], identical_dropped=counters["identical_dropped"],
                 ties=counters["ties"], ties_dropped=counters["ties_dropped"], pair_rows=counters["pair_rows"])
    stats["rejected_by_reason"] = _reasons(rejected)
    return stats


def write_generated_rows(source: str, rank: int, rows: pl.DataFrame, split: dict[str, Any], parts_dir: str | Path) -> None:
    """A generated source's pair rows (e.g. synthetic) as one part of the streaming path."""
    folder = source_folder(parts_dir, rank, source)
    shutil.rmtree(folder, ignore_errors=True)
    if rows.height:
        _write_part(keyed_pair_rows(rows, rank, 0, split), folder, 0)


def scan_parts(parts_dir: str | Path) -> pl.LazyFrame:
    """Every pair-row part under ``parts_dir`` as one lazy frame (PART_SCHEMA); empty when none."""
    files = sorted(Path(parts_dir).glob("*/part-*.parquet"))
    if not files:
        return pl.LazyFrame(schema=PART_SCHEMA)
    return pl.scan_parquet([str(f) for f in files])


def build_pairs_dataset(parts_dir: str | Path, out_dir: str | Path, split: dict[str, Any], rule: ConflictRule,
                        max_rows_per_file: int = 1_000_000) -> dict[str, Any]:
    """The pairs table from the parts, written as a parquet folder, with what was resolved.

    Args:
        parts_dir: the pair-row parts (ingest_source_chunks, write_generated_rows).
        out_dir: the pairs folder to (re)write: ``part-*.parquet`` files (PAIRS_SCHEMA), rows in
            the in-memory path's order except that a pooled conflict row comes after the others.
        split: feedback.split (its heldout_sources are moved to ``heldout`` here).
        rule: the ConflictRule.
        max_rows_per_file: rows per parquet file of the output.

    Returns:
        {"duplicates": {source: rows dropped as a repeated pair_id}, "conflicts": counts}, equal to
        ``build_pairs_table``'s.
    """
    lf = scan_parts(parts_dir)
    # comparisons judged both ways, found on the integer keys alone
    both = (lf.group_by(_COMPARISON).agg(_pos=(pl.col("_p_a") > 0.5).any(), _neg=(pl.col("_p_a") < 0.5).any())
            .filter(pl.col("_pos") & pl.col("_neg")).select(_COMPARISON).collect(engine="streaming"))
    resolved, conflicts = resolve_keyed(lf.join(both.lazy(), on=_COMPARISON, how="semi").collect(engine="streaming"), rule)
    if resolved.height:  # a pooled row may have swapped its texts: its pair_id is computed again
        with canonical_memo():
            ids = [pair_id_of(p, c, r) for p, c, r in zip(resolved["prompt"].to_list(), resolved["chosen"].to_list(),
                                                        resolved["rejected"].to_list())]
        halves = [_halves(i) for i in ids]
        resolved = resolved.with_columns(pair_id=pl.Series(ids, dtype=pl.String),
                                         _pair_hi=pl.Series([h for h, _ in halves], dtype=pl.UInt64),
                                         _pair_lo=pl.Series([lo for _, lo in halves], dtype=pl.UInt64))
    rows = pl.concat([lf.join(both.lazy(), on=_COMPARISON, how="anti"),
                      resolved.lazy().select([pl.col(c).cast(t) for c, t in PART_SCHEMA.items()])], how="vertical")
    # the first row of each pair_id, by _i (priority, then raw order)
    first = rows.group_by(_PAIR).agg(pl.col("_i").min()).select("_i").collect(engine="streaming")
    kept = rows.join(first.lazy(), on="_i", how="semi")
    counts_in = dict(rows.group_by("source").len().collect(engine="streaming").iter_rows())
    counts_out = dict(kept.group_by("source").len().collect(engine="streaming").iter_rows())
    duplicates = {s: n - counts_out.get(s, 0) for s, n in counts_in.items() if n - counts_out.get(s, 0)}
    del first
    heldout = source_names(split.get("heldout_sources") or None) or []
    split_col = pl.col("split")
    if heldout:
        held = kept.filter(pl.col("source").is_in(heldout)).select("prompt_id").unique().collect(engine="streaming")
        kept = kept.join(held.lazy().with_columns(_held=pl.lit(True)), on="prompt_id", how="left")
        split_col = pl.when(pl.col("_held").fill_null(False)).then(pl.lit(HELDOUT)).otherwise(pl.col("split"))
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    kept.with_columns(split_col.alias("split")).select([pl.col(c).cast(t) for c, t in PAIRS_SCHEMA.items()]).sink_parquet(
        pl.PartitionBy(str(out), max_rows_per_file=max_rows_per_file), engine="streaming", mkdir=True)
    return {"duplicates": duplicates, "conflicts": conflicts}


def scan_pairs(folder: str | Path) -> pl.LazyFrame:
    """The pairs folder written by build_pairs_dataset as one lazy frame (PAIRS_SCHEMA)."""
    files = sorted(Path(folder).rglob("*.parquet"))
    if not files:
        return pl.LazyFrame(schema=PAIRS_SCHEMA)
    return pl.scan_parquet([str(f) for f in files], hive_partitioning=False).select(PAIR_COLUMNS)


def scan_rejected(rejected_dir: str | Path) -> pl.LazyFrame:
    """The rejected-record parts in source priority order (REJECTED_SCHEMA)."""
    files = sorted(Path(rejected_dir).glob("*/part-*.parquet"))
    if not files:
        return pl.LazyFrame(schema=REJECTED_SCHEMA)
    return pl.scan_parquet([str(f) for f in files])


def summarise_dataset(pairs: pl.LazyFrame, source_stats: list[dict[str, Any]], duplicates: dict[str, int],
                      conflicts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``ingest.summarise`` on a lazy pairs table: one source's numeric columns in memory at a time.

    Args:
        pairs: the pairs table (scan_pairs).
        source_stats, duplicates, conflicts: as for ``ingest.summarise``.

    Returns:
        The same summary dict as ``ingest.summarise`` on the collected table.
    """
    from prefalign.core.feedback.ingest import summarise

    per_source: dict[str, Any] = {}
    for stats in source_stats:
        mine = pairs.filter(pl.col("source") == stats["source"]).select("source", "p_chosen", "margin", "split",
                                                                         "prompt_id").collect(engine="streaming")
        per_source.update(summarise(mine, [stats], duplicates, conflicts)["sources"])
    totals = pairs.select(pairs=pl.len(), prompts=pl.col("prompt_id").n_unique(),
                          ties=(pl.col("p_chosen") == 0.5).sum()).collect(engine="streaming").row(0, named=True)
    splits = pairs.group_by("split").len().sort("split").collect(engine="streaming")
    conflicts = conflicts or {}
    return {
        "total": {"pairs": int(totals["pairs"]), "prompts": int(totals["prompts"]), "ties": int(totals["ties"]),
                  "conflicting_comparisons": conflicts.get(TOTAL_KEY, {"within_source": 0, "across_sources": 0}),
                  "records_read": sum(s["records_read"] for s in source_stats),
                  "records_rejected": sum(s["records_rejected"] for s in source_stats),
                  "splits": {s: int(n) for s, n in splits.iter_rows()}},
        "sources": per_source,
    }


__all__ = ["STREAMABLE_PARSERS", "PART_SCHEMA", "build_pairs_dataset", "ingest_source_chunks", "keyed_pair_rows",
           "scan_pairs", "scan_parts", "scan_rejected", "summarise_dataset", "write_generated_rows"]
