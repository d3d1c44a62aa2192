"""Validation of a pairs table too big for one frame: the same suite, batch by batch.

``validate_pairs`` (validate.py) holds the table, its check frame and GX's pandas copy at once.
``validate_pairs_batched`` gives the SAME verdict and the SAME quarantined rows with the same
reasons (tests/validation/test_batched.py) on a lazy table (a parquet folder), holding one batch:

* the two checks that look across rows are computed first, on their key columns, with polars'
  streaming engine: ``pair_id_is_repeat`` (a pair_id seen at an earlier row) and
  ``prompt_split_leak`` (rows outside the split that holds most of their prompt's rows). Only the
  pair_ids that repeat and the prompts that sit in several splits are kept (none in a good table);
  each batch's values are then looked up, so they equal the whole-table values;
* row-level expectations run per batch of ``batch_rows`` rows; the failing rows are kept by their
  position in the table (the first ``example_count`` of them as examples, in row order, as the
  in-memory report shows them);
* table-level expectations (row counts, per source) run once, on a frame of only the columns they
  name, gathered batch by batch (the label columns as categories).

GX's per-expectation ``success`` for a row-level expectation is taken over all rows: no failing
row, or, with ``mostly``, the failing fraction of non-missing values at most 1 - mostly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from prefalign.core.schema import ALL_SPLITS, PAIR_COLUMNS, PAIRS_SCHEMA
from prefalign.core.validation.checks import FAILED_COLUMN, NULLABLE_COLUMNS, check_frame, schema_problems
from prefalign.core.validation.config import ValidationConfig
from prefalign.core.validation.gx_suite import ExpectationOutcome, columns_named, is_row_level, run_expectations
from prefalign.core.validation.validate import (
    SCHEMA_PASSED,
    _examples,
    full_suite,
    outcome_entry,
    results_from_counts,
    validate_pairs,
)

ROW = "_row"
DEFAULT_BATCH_ROWS = 100_000


@dataclass(frozen=True)
class BatchedCheck:
    """What the batched validation hands on in place of the checked frame: the table (lazy), the
    failing rows (_row, failed_expectations) and the quarantined rows."""

    pairs: pl.LazyFrame
    failures: pl.DataFrame
    quarantined: pl.DataFrame
GLOBAL_CHECKS = ("pair_id_is_repeat", "prompt_split_leak")


def _suspects(pairs: pl.LazyFrame, column: str, by_group: pl.Expr) -> pl.LazyFrame:
    """Rows whose ``column`` value may break a whole-table rule, found on a 64-bit hash of the value
    (the group-by holds integers, not 24-character ids): every group with ``by_group`` true, so the
    exact check runs on these rows only (a hash collision only adds rows to check, never hides one)."""
    hashed = pairs.select(column, "split").with_row_index(ROW).drop_nulls(column).with_columns(_h=pl.col(column).hash())
    flagged = hashed.group_by("_h").agg(by_group.alias("_flag")).filter(pl.col("_flag")).select("_h")
    return hashed.join(flagged, on="_h", how="semi")


def _repeats(pairs: pl.LazyFrame) -> pl.DataFrame:
    """(pair_id, _first): the pair_ids seen more than once and their first row."""
    return (_suspects(pairs, "pair_id", pl.len() > 1).collect(engine="streaming").group_by("pair_id")
            .agg(pl.col(ROW).min().alias("_first"), pl.len().alias("_n")).filter(pl.col("_n") > 1)
            .select("pair_id", "_first"))


def _kept_splits(pairs: pl.LazyFrame) -> pl.DataFrame:
    """(prompt_id, _kept) for the prompts seen in several splits: the split holding most of their
    rows (ties: train, val, test, heldout), as checks._prompt_split_leak keeps it."""
    rank = {name: i for i, name in enumerate(ALL_SPLITS)}
    suspects = _suspects(pairs.filter(pl.col("split").is_not_null()), "prompt_id", pl.col("split").n_unique() > 1)
    counts = suspects.collect(engine="streaming").group_by("prompt_id", "split").len()
    several = counts.group_by("prompt_id").len(name="_splits").filter(pl.col("_splits") > 1).select("prompt_id")
    return (
        counts.join(several, on="prompt_id", how="semi")
        .with_columns(pl.col("split").replace_strict(rank, default=len(rank), return_dtype=pl.Int32).alias("_rank"))
        .sort(["prompt_id", "len", "_rank", "split"], descending=[False, True, False, False])
        .group_by("prompt_id", maintain_order=True).first().select("prompt_id", pl.col("split").alias("_kept"))
    )


def _global_columns(batch: pl.DataFrame, repeats: pl.DataFrame | None, kept: pl.DataFrame | None) -> pl.DataFrame:
    """The batch (with ROW) plus the whole-table checks it needs, equal to checks.py's builders on the table."""
    if repeats is not None:
        batch = batch.join(repeats, on="pair_id", how="left", maintain_order="left").with_columns(
            pl.when(pl.col("pair_id").is_not_null()).then(pl.col("_first").is_not_null() & (pl.col(ROW) != pl.col("_first")))
            .alias("pair_id_is_repeat")).drop("_first")
    if kept is not None:
        batch = batch.join(kept, on="prompt_id", how="left", maintain_order="left").with_columns(
            pl.when(pl.col("prompt_id").is_not_null() & pl.col("split").is_not_null())
            .then(pl.col("_kept").is_not_null() & (pl.col("split") != pl.col("_kept"))).alias("prompt_split_leak")).drop("_kept")
    return batch


def _merge(name: str, parts: list[tuple[int, ExpectationOutcome]], example_count: int) -> ExpectationOutcome:
    """One row-level outcome from its batches' (offset, outcome): rows shifted to table positions."""
    first = parts[0][1]
    exception = next((o.exception for _, o in parts if o.exception), None)
    rows = np.concatenate([o.unexpected_rows + offset for offset, o in parts]) if parts else np.array([], np.int64)
    result: dict[str, Any] = dict(first.result)
    for key in ("element_count", "missing_count", "unexpected_count"):
        if all(isinstance(o.result.get(key), int) for _, o in parts):
            result[key] = sum(o.result[key] for _, o in parts)
    nonmissing = result.get("element_count", 0) - result.get("missing_count", 0)
    if isinstance(result.get("unexpected_count"), int):
        total = result.get("element_count", 0)
        result["unexpected_percent_total"] = 100.0 * result["unexpected_count"] / total if total else 0.0
        result["unexpected_percent_nonmissing"] = 100.0 * result["unexpected_count"] / nonmissing if nonmissing else 0.0
        result["unexpected_percent"] = result["unexpected_percent_nonmissing"]
        result["missing_percent"] = 100.0 * result.get("missing_count", 0) / total if total else 0.0
        partial = [v for _, o in parts for v in (o.result.get("partial_unexpected_list") or [])]
        if "partial_unexpected_list" in result:
            result["partial_unexpected_list"] = partial[:example_count]
    mostly = first.kwargs.get("mostly")
    if exception is not None:
        success = False
    elif mostly is None:
        success = all(o.success for _, o in parts)
    else:
        success = (rows.size / nonmissing if nonmissing else 0.0) <= 1.0 - float(mostly) + 1e-12
    return ExpectationOutcome(name, first.type, first.kwargs, first.row_level and exception is None, success,
                              rows if exception is None else np.array([], np.int64), result, exception)


def validate_pairs_batched(pairs: pl.LazyFrame, config: ValidationConfig, batch_rows: int = DEFAULT_BATCH_ROWS,
                           ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """``validate_pairs`` on a lazy pairs table, one batch of rows in memory at a time.

    Args:
        pairs: the pairs table (e.g. streaming.scan_pairs of a parquet folder).
        config: the ValidationConfig.
        batch_rows: rows per GX run.

    Returns:
        (failures, quarantined, results): ``failures`` = (_row, failed_expectations) of every
        failing row (row = position in ``pairs``); ``quarantined`` = those rows with their pair
        columns and failed_expectations (as ``split_checked`` gives them); ``results`` = the same
        verdict, counts and entries as validate_pairs (row-level GX results summed over batches).
        The validated rows are ``validated_rows(pairs, failures)``.

    Raises:
        ValueError: a bad suite (unknown expectation type or column, repeated name), or
            batch_rows < 1.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows={batch_rows} must be >= 1 (validation.batch_rows)")
    schema = pairs.collect_schema()
    if schema_problems(pl.DataFrame(schema=schema)):  # a broken table stops the run: validate it whole, as before
        checked, results = validate_pairs(pairs.collect(), config)
        failed = checked.with_row_index(ROW).filter(pl.col(FAILED_COLUMN).list.len() > 0)
        return failed.select(ROW, FAILED_COLUMN), failed.drop(ROW), results
    pairs = pairs.with_columns([pl.col(c).cast(PAIRS_SCHEMA[c]) for c in NULLABLE_COLUMNS if schema.get(c) == pl.Null]).select(PAIR_COLUMNS)
    suite = full_suite(config)
    row_specs = [s for s in suite if is_row_level(s)]
    table_specs = [s for s in suite if not is_row_level(s)]
    row_columns = columns_named(row_specs, PAIR_COLUMNS)
    table_columns = columns_named(table_specs, PAIR_COLUMNS)
    repeats = _repeats(pairs) if "pair_id_is_repeat" in row_columns + table_columns else None
    kept = _kept_splits(pairs) if "prompt_split_leak" in row_columns + table_columns else None
    n_rows = pairs.select(pl.len()).collect(engine="streaming").item()
    parts: dict[str, list[tuple[int, ExpectationOutcome]]] = {s.name: [] for s in row_specs}
    examples: dict[str, list[dict]] = {s.name: [] for s in row_specs}
    table_frames: list[pl.DataFrame] = []
    for offset in range(0, max(n_rows, 1), batch_rows):
        batch = pairs.slice(offset, batch_rows).collect().with_row_index(ROW, offset=offset)
        batch = _global_columns(batch, repeats, kept)
        derived = [c for c in GLOBAL_CHECKS if c in batch.columns]
        body = batch.select(PAIR_COLUMNS)
        check = check_frame(batch.select(PAIR_COLUMNS + derived), row_columns, config.control_characters) if row_specs else None
        if row_specs:
            for outcome in run_expectations(check, row_specs, config.example_count):
                parts[outcome.name].append((offset, outcome))
                if len(examples[outcome.name]) < config.example_count:
                    examples[outcome.name] += _examples(body, outcome, check, config.example_count - len(examples[outcome.name]))
        if table_specs:
            frame = check_frame(batch.select(PAIR_COLUMNS + derived), table_columns, config.control_characters)
            table_frames.append(frame.with_columns([pl.col(c).cast(pl.Categorical) for c, t in frame.schema.items() if t == pl.String]))
        del batch, body, check
    outcomes = {name: _merge(name, p, config.example_count) for name, p in parts.items() if p}
    if table_specs:
        table = pl.concat(table_frames) if table_frames else pl.DataFrame(schema={c: pl.String for c in table_columns})
        table_frames.clear()
        for outcome in run_expectations(table, table_specs, config.example_count):
            outcomes[outcome.name] = outcome
        del table
    names = [s.name for s in row_specs if s.name in outcomes and outcomes[s.name].row_level]
    failures = _failure_lists({n: outcomes[n].unexpected_rows for n in names})
    quarantined = (pairs.with_row_index(ROW).filter(pl.col(ROW).is_in(failures[ROW].implode())).collect(engine="streaming")
                   .join(failures, on=ROW, how="inner").sort(ROW).drop(ROW))
    rows_per_source = pairs.group_by("source").len().collect(engine="streaming")
    bad_per_source = dict(quarantined.group_by("source").len().iter_rows())
    per_source = {}
    for source, rows in sorted(rows_per_source.iter_rows(), key=lambda r: (r[0] is None, r[0] or "")):
        bad = int(bad_per_source.get(source, 0))
        per_source[str(source)] = {"rows": int(rows), "quarantined": bad, "fraction": bad / rows}
    overall = float(quarantined.height / n_rows) if n_rows else 0.0
    entries = [SCHEMA_PASSED] + [outcome_entry(outcomes[s.name], examples.get(s.name, []) if outcomes[s.name].row_level else [])
                                 for s in suite]
    return failures, quarantined, results_from_counts(n_rows, overall, per_source if n_rows else {}, entries, config)


def _failure_lists(unexpected_rows: dict[str, np.ndarray]) -> pl.DataFrame:
    """(_row, failed_expectations) of the failing rows only; names in the suite's order."""
    names = list(unexpected_rows)
    rows = np.concatenate([np.asarray(unexpected_rows[n], dtype=np.int64) for n in names] or [np.array([], np.int64)])
    order = np.concatenate([np.full(len(unexpected_rows[n]), i, dtype=np.int32) for i, n in enumerate(names)] or [np.array([], np.int32)])
    return (pl.DataFrame({ROW: rows, "_order": order}).unique().sort(ROW, "_order").group_by(ROW, maintain_order=True)
            .agg(pl.col("_order").replace_strict(dict(enumerate(names)), return_dtype=pl.String).alias(FAILED_COLUMN))
            .with_columns(pl.col(ROW).cast(pl.UInt32)))


def validated_rows(pairs: pl.LazyFrame, failures: pl.DataFrame) -> pl.LazyFrame:
    """The rows that passed every row-level expectation.

    Args:
        pairs: the table validated.
        failures: (_row, failed_expectations) of validate_pairs_batched.

    Returns:
        A LazyFrame (PAIR_COLUMNS) of the other rows, in table order: sink it (the catalog does).
    """
    return pairs.with_row_index(ROW).filter(~pl.col(ROW).is_in(failures[ROW].implode())).drop(ROW).select(PAIR_COLUMNS)


def report_frame(pairs: pl.LazyFrame, failures: pl.DataFrame) -> pl.DataFrame:
    """What the report and the plot read, without the texts.

    Args:
        pairs: the table validated.
        failures: (_row, failed_expectations) of validate_pairs_batched.

    Returns:
        (source, p_chosen, margin, failed_expectations) of every row, in table order (an empty
        list for a clean row): render_markdown's and plot_distributions' input.
    """
    return (pairs.select("source", "p_chosen", "margin").with_row_index(ROW)
            .join(failures.lazy(), on=ROW, how="left").sort(ROW)
            .with_columns(pl.col(FAILED_COLUMN).fill_null(pl.lit([], dtype=pl.List(pl.String)))).drop(ROW)
            .collect(engine="streaming"))
