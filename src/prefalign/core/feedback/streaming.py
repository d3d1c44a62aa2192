"""The streaming feedback path: pairs built chunk by chunk on disk, memory flat in the number of pairs.

The in-memory path (ingest.py, pairs.py) holds every record and pair row of every source at once.
This path gives EXACTLY the same pairs table (ids, splits, conflicts and duplicates resolved the
same way; tests/feedback/test_streaming.py), in three steps:

1. ``ingest_source_chunks``: a per-record source (STREAMABLE_PARSERS: one judgment per record,
   no join table, no grouping of responses) is parsed ``chunk_records`` records at a time with
   the same parser and ``to_pair_rows``; each chunk's pair rows get their row-local keys
   (``keyed_pair_rows``: pair_id, prompt_id, the comparison key, the split drawn from prompt_id,
   the row's index ``_i``) and are written as one parquet part. Other sources (multi-response
   groups, joins of questions and answers: small files in practice) are parsed whole, as today,
   and written the same way.
2. ``build_pairs_lazy``: the whole-table steps run as polars lazy queries on the parts,
   executed by the streaming engine on the key columns only: the comparisons judged both ways
   (both signs of P(A > B)) are found by a group-by, and only their rows are loaded and resolved
   by the in-memory rule (conflicts.resolve_keyed); the first row of each pair_id is kept (by
   ``_i``, the in-memory order); prompts of held-out sources move to ``heldout``. The table is a
   lazy query: ``sink_pairs`` or the catalog's ParquetPartsDataset runs it into a parquet folder.
3. ``summarise_dataset``: the feedback summary of ``ingest.summarise``, computed per source.

A part's ``_i`` is the row's index within its source; the table step adds the source's rank under
feedback.sources x 2^40, so sorting by ``_i`` is the in-memory row order (priority, then raw order).
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
# parquet row groups and files small enough that reading or writing one (texts of ~3 KB a pair)
# holds tens of MB, not GB: polars decodes a whole row group, and a sink buffers a whole file
ROW_GROUP_ROWS = 20_000
ROWS_PER_FILE = 200_000
_COMPARISON = ["_key_hi", "_key_lo"]
_PAIR = ["_pair_hi", "_pair_lo"]


def _halves(hex_id: str) -> tuple[int, int]:
    """A 24-hex-digit id as two integers (64 + 32 bits): exact keys that group and join cheaply."""
    return int(hex_id[:16], 16), int(hex_id[16:], 16)


def keyed_pair_rows(rows: pl.DataFrame, start: int, split: dict[str, Any]) -> pl.DataFrame:
    """Pair rows with the row-local keys of the streaming path (PART_SCHEMA).

    Args:
        rows: pair rows of one source (PAIR_ROW_COLUMNS; prompt_messages optional).
        start: how many rows of this source came before (earlier chunks).
        split: feedback.split (ratios, salt).

    Returns:
        The rows plus ``_i`` (start + row: the row's index within its source), the comparison key (``_key``, its two
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
        _i=pl.int_range(start, start + rows.height, dtype=pl.Int64),
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


def source_folder(parts_dir: str | Path, source: str) -> Path:
    """Where one source's pair-row parts go.

    Args:
        parts_dir: feedback.streaming.parts_dir.
        source: the source name.

    Returns:
        ``<parts_dir>/<source>``.
    """
    return Path(parts_dir) / source


def scan_folder(folder: Path) -> pl.LazyFrame:
    """The parts of one folder as one lazy frame.

    Args:
        folder: a source's parts folder (source_folder).

    Returns:
        A scan of its ``part-*.parquet`` files in name (= write) order (PART_SCHEMA); an empty
        frame when it has none.
    """
    files = sorted(folder.glob("part-*.parquet"))
    return pl.scan_parquet([str(f) for f in files]) if files else pl.LazyFrame(schema=PART_SCHEMA)


def _write_part(frame: pl.DataFrame, folder: Path, index: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / f"part-{index:06d}.parquet", row_group_size=ROW_GROUP_ROWS)


def _empty_stats(source: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"source": source, "parser": params["parser"], "signal": params["signal"], "feedback": params["feedback"],
            "records_read": 0, "records_rejected": 0, "records_used": 0, "auxiliary_records_read": 0,
            "auxiliary_records_rejected": 0, "join_duplicates": {}}


def ingest_source_chunks(source: str, chunks: dict[str, Iterable[list[RawRecord]]], params: dict[str, Any],
                         split: dict[str, Any], parts_dir: str | Path,
                         max_rejected_fraction: float | None = None) -> tuple[pl.LazyFrame, pl.DataFrame, dict[str, Any]]:
    """One raw source, chunk by chunk, into pair-row parts (PART_SCHEMA) on disk.

    Args:
        source: the source name (feedback.sources.<source>).
        chunks: role -> iterable of record chunks (RawReader.chunks). A source whose parser is
            not in STREAMABLE_PARSERS has its chunks joined and is parsed whole.
        params: the source's parameters.
        split: feedback.split.
        parts_dir: folder of the pair-row parts (one subfolder per source, source_folder; the
            source's subfolder is rewritten).
        max_rejected_fraction: feedback.max_rejected_fraction_per_file (the source's own
            ``max_rejected_fraction`` overrides it); None = no limit.

    Returns:
        (pair rows: a scan of the source's parts, rejected records (REJECTED_SCHEMA), stats): the
        same rows, rejected records and stats, key for key, as ``ingest.ingest_source`` gives.

    Raises:
        ValueError: bad source parameters. RawFileError: an unreadable file, or a file whose
        rejected fraction is above the limit (checked once the source is read, as a whole).
    """
    check_source_params(source, params)
    folder = source_folder(parts_dir, source)
    shutil.rmtree(folder, ignore_errors=True)
    if params["parser"] in STREAMABLE_PARSERS and set(chunks) == {"records"}:
        batches: Iterator[dict[str, list[RawRecord]]] = ({"records": c} for c in chunks["records"])
    else:
        batches = iter([{role: [r for c in parts for r in c] for role, parts in chunks.items()}])
    stats = _empty_stats(source, params)
    counters = dict.fromkeys(("candidate_pairs", "capped_dropped", "comparisons", "identical_dropped", "ties",
                              "ties_dropped", "pair_rows"), 0)
    read: dict[tuple[str, str], int] = {}
    all_rejected: list[dict[str, Any]] = []
    start, index = 0, 0
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
            _write_part(keyed_pair_rows(pair_rows, start, split), folder, index)
            start += pair_rows.height
            index += 1
    if limit is not None:
        check_rejected_counts(source, read, all_rejected, float(limit))
    rejected = pl.DataFrame(all_rejected, schema=REJECTED_SCHEMA, orient="row") if all_rejected else pl.DataFrame(schema=REJECTED_SCHEMA)
    stats["records_used"] = stats["records_read"] - stats["records_rejected"]
    stats.update(candidate_pairs=counters["candidate_pairs"], capped_dropped=counters["capped_dropped"])
    stats.update(comparisons=counters["comparisons"], identical_dropped=counters["identical_dropped"],
                 ties=counters["ties"], ties_dropped=counters["ties_dropped"], pair_rows=counters["pair_rows"])
    stats["rejected_by_reason"] = _reasons(rejected)
    return scan_folder(folder), rejected, stats


def write_rows(rows: pl.DataFrame, split: dict[str, Any], parts_dir: str | Path) -> list[pl.LazyFrame]:
    """Pair rows held in memory (a generated source, the user tables) as parts of the streaming
    path, one folder per source in the frame (row order kept within each source).

    Args:
        rows: pair rows (PAIR_ROW_COLUMNS) of one or more sources.
        split: feedback.split.
        parts_dir: folder of the parts (each source's subfolder is rewritten).

    Returns:
        One scan (PART_SCHEMA) per source in the frame.
    """
    scans = []
    for source in rows["source"].unique(maintain_order=True).to_list() if rows.height else []:
        folder = source_folder(parts_dir, source)
        shutil.rmtree(folder, ignore_errors=True)
        _write_part(keyed_pair_rows(rows.filter(pl.col("source") == source), 0, split), folder, 0)
        scans.append(scan_folder(folder))
    return scans


def scan_parts(parts_dir: str | Path) -> pl.LazyFrame:
    """Every pair-row part under ``parts_dir`` as one lazy frame.

    Args:
        parts_dir: feedback.streaming.parts_dir (one folder per source).

    Returns:
        A scan of every ``<source>/part-*.parquet`` (PART_SCHEMA); an empty frame when none.
    """
    files = sorted(Path(parts_dir).glob("*/part-*.parquet"))
    if not files:
        return pl.LazyFrame(schema=PART_SCHEMA)
    return pl.scan_parquet([str(f) for f in files])


def build_pairs_lazy(parts: list[pl.LazyFrame], priority: list[str], split: dict[str, Any],
                     rule: ConflictRule) -> tuple[pl.LazyFrame, dict[str, Any]]:
    """The pairs table from the parts, as a lazy query to sink, and what was resolved.

    Args:
        parts: scans of the pair-row parts (ingest_source_chunks, write_rows), any order; each
            holds one source.
        priority: the source names under feedback.sources, highest priority first (unlisted
            sources share the last rank: every pipeline source is listed there).
        split: feedback.split (its heldout_sources move to ``heldout`` here).
        rule: the ConflictRule.

    Returns:
        (pairs, resolution): ``pairs`` a LazyFrame (PAIRS_SCHEMA) of build_pairs_table's rows, in
        priority order except that a pooled conflict row comes after the others (sink it with
        the streaming engine, e.g. ParquetPartsDataset); ``resolution`` = {"duplicates": {source:
        rows dropped as a repeated pair_id}, "conflicts": counts}, equal to build_pairs_table's.
    """
    # each part scan holds one source: its rank is added as a literal (an expression on the source
    # column, replace_strict or when/then, makes the streaming engine hold far more of the rows)
    rank = {name: i for i, name in enumerate(priority)}
    ranked = []
    for scan in parts:
        first = scan.select("source").head(1).collect()
        if first.height:
            ranked.append(scan.with_columns(_i=pl.col("_i") + rank.get(first["source"][0], len(rank)) * RANK_SHIFT))
    lf = pl.concat(ranked, how="vertical") if ranked else pl.LazyFrame(schema=PART_SCHEMA)
    # comparisons judged both ways, found on the integer keys alone. Joins run on key columns only
    # and the wide rows are then picked by filters on _i (a join of the wide rows is not streamed)
    both = (lf.group_by(_COMPARISON).agg(_pos=(pl.col("_p_a") > 0.5).any(), _neg=(pl.col("_p_a") < 0.5).any())
            .filter(pl.col("_pos") & pl.col("_neg")).select(_COMPARISON).collect(engine="streaming"))
    judged_both = lf.select(_COMPARISON + ["_i"]).join(both.lazy(), on=_COMPARISON, how="semi").collect(engine="streaming")["_i"]
    resolved, conflicts = resolve_keyed(lf.filter(pl.col("_i").is_in(judged_both.implode())).collect(engine="streaming"), rule)
    if resolved.height:  # a pooled row may have swapped its texts: its pair_id is computed again
        with canonical_memo():
            ids = [pair_id_of(p, c, r) for p, c, r in zip(resolved["prompt"].to_list(), resolved["chosen"].to_list(),
                                                        resolved["rejected"].to_list())]
        halves = [_halves(i) for i in ids]
        resolved = resolved.with_columns(pair_id=pl.Series(ids, dtype=pl.String),
                                         _pair_hi=pl.Series([h for h, _ in halves], dtype=pl.UInt64),
                                         _pair_lo=pl.Series([lo for _, lo in halves], dtype=pl.UInt64))
    rows = pl.concat([lf.filter(~pl.col("_i").is_in(judged_both.implode())),
                      resolved.lazy().select([pl.col(c).cast(t) for c, t in PART_SCHEMA.items()])], how="vertical")
    # the first row of each pair_id, by _i (priority, then raw order): the later rows are dropped
    keys = rows.select(_PAIR + ["_i", "source"])
    repeated = keys.group_by(_PAIR).agg(pl.len().alias("_n")).filter(pl.col("_n") > 1).select(_PAIR)
    later = (keys.join(repeated, on=_PAIR, how="semi").collect(engine="streaming")
             .filter(pl.col("_i") != pl.col("_i").min().over(_PAIR)))
    duplicates = {s: int(n) for s, n in later.group_by("source").len().iter_rows()}
    kept = rows.filter(~pl.col("_i").is_in(later["_i"].implode()))
    heldout = source_names(split.get("heldout_sources") or None) or []
    split_col = pl.col("split")
    if heldout:
        held = kept.filter(pl.col("source").is_in(heldout)).select("prompt_id").unique().collect(engine="streaming")["prompt_id"]
        split_col = pl.when(pl.col("prompt_id").is_in(held.implode())).then(pl.lit(HELDOUT)).otherwise(pl.col("split"))
    pairs = kept.with_columns(split_col.alias("split")).select([pl.col(c).cast(t) for c, t in PAIRS_SCHEMA.items()])
    return pairs, {"duplicates": duplicates, "conflicts": conflicts}


def sink_pairs(pairs: pl.LazyFrame, folder: str | Path, max_rows_per_file: int = ROWS_PER_FILE) -> None:
    """Run the pairs query with the streaming engine into a folder of parquet files (what
    ParquetPartsDataset.save does in a pipeline run).

    Args:
        pairs: the query of build_pairs_lazy (or any LazyFrame).
        folder: the output folder; rewritten.
        max_rows_per_file: rows per parquet file.
    """
    out = Path(folder)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    pairs.sink_parquet(pl.PartitionBy(str(out), max_rows_per_file=max_rows_per_file), row_group_size=ROW_GROUP_ROWS,
                       engine="streaming", mkdir=True)


def scan_pairs(folder: str | Path) -> pl.LazyFrame:
    """A pairs folder (sink_pairs, ParquetPartsDataset) as one lazy frame.

    Args:
        folder: the folder; every ``*.parquet`` below it is read, in path order.

    Returns:
        A scan with the contract's columns in order (PAIRS_SCHEMA); an empty frame when none.
    """
    files = sorted(Path(folder).rglob("*.parquet"))
    if not files:
        return pl.LazyFrame(schema=PAIRS_SCHEMA)
    return pl.scan_parquet([str(f) for f in files], hive_partitioning=False).select(PAIR_COLUMNS)


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
    totals = pairs.select(pairs=pl.len(), ties=(pl.col("p_chosen") == 0.5).sum()).collect(engine="streaming").row(0, named=True)
    # distinct prompt_ids counted on two 64-bit hashes (a 128-bit key: the group-by holds integers, not ids)
    totals["prompts"] = (pairs.select(_a=pl.col("prompt_id").hash(1), _b=pl.col("prompt_id").hash(2))
                         .group_by("_a", "_b").len().select(pl.len()).collect(engine="streaming").item())
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


__all__ = ["STREAMABLE_PARSERS", "PART_SCHEMA", "build_pairs_lazy", "ingest_source_chunks", "keyed_pair_rows",
           "scan_pairs", "scan_parts", "sink_pairs", "summarise_dataset", "write_rows"]


ENGINES = ("in_memory", "streaming")


def check_engine(engine: str | None) -> str:
    """``feedback.engine``, checked (docs/feedback.md).

    Args:
        engine: ``in_memory``, ``streaming``, or None (= ``in_memory``).

    Returns:
        The engine's name.

    Raises:
        ValueError: any other value, naming it and the engines.
    """
    engine = engine or "in_memory"
    if engine not in ENGINES:
        raise ValueError(f"feedback.engine={engine!r} is not one of {ENGINES}; see conf/base/parameters_feedback.yml")
    return engine


def streaming_settings(streaming: dict[str, Any] | None) -> dict[str, Any]:
    """``feedback.streaming`` with its defaults.

    Args:
        streaming: the block: ``chunk_records`` (records parsed at a time) and ``parts_dir`` (where
            the pair-row parquet parts go); None = the defaults.

    Returns:
        ``{"chunk_records": int, "parts_dir": str, ...}``.

    Raises:
        ValueError: ``chunk_records`` is not an integer >= 1.
    """
    settings = {"chunk_records": 20_000, "parts_dir": "data/02_intermediate/feedback_parts", **(streaming or {})}
    if not isinstance(settings["chunk_records"], int) or settings["chunk_records"] < 1:
        raise ValueError(f"feedback.streaming.chunk_records={settings['chunk_records']!r} must be an integer >= 1")
    return settings
