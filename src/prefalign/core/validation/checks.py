"""Polars side of validation: the schema check, the derived check columns, the row-level mask.

Great Expectations sees only a compact frame: the few pair columns an expectation names plus
cheap derived columns (text lengths, flags) computed here in polars. Long texts never cross the
pandas boundary unless a user's expectation names them directly (benchmarks/validation_1m.py
measures why).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl

from prefalign.core.schema import ALL_SPLITS, PAIRS_SCHEMA, prompt_messages_valid
from prefalign.core.text import canonical_expr

TEXT_COLUMNS = ("prompt", "chosen", "rejected")
FAILED_COLUMN = "failed_expectations"  # list of expectation names a row failed; empty = clean
NULLABLE_COLUMNS = ("margin", "true_p")  # an all-null column may arrive typed as pl.Null


def schema_problems(pairs: pl.DataFrame) -> list[str]:
    """Every way the frame's columns differ from PAIRS_SCHEMA.

    Args:
        pairs: a pairs table (only its schema is read).

    Returns:
        One message per problem (missing, extra, wrong dtype); empty when the schema matches.
    """
    problems = []
    missing = [c for c in PAIRS_SCHEMA if c not in pairs.columns]
    if missing:
        problems.append(f"missing columns {missing}")
    extra = [c for c in pairs.columns if c not in PAIRS_SCHEMA]
    if extra:
        problems.append(f"unexpected columns {extra} (the pairs contract has exactly {list(PAIRS_SCHEMA)})")
    for column, dtype in pairs.schema.items():
        expected = PAIRS_SCHEMA.get(column)
        if expected is None or dtype == expected:
            continue
        if column in NULLABLE_COLUMNS and dtype == pl.Null:
            continue
        problems.append(
            f"column {column!r} has dtype {dtype}, expected {expected} "
            "(mixed or wrongly typed values: cast them in the feedback pipeline)"
        )
    return problems


def conform_nullable(pairs: pl.DataFrame) -> pl.DataFrame:
    """Cast all-null nullable columns (dtype pl.Null) to their contract dtype.

    Args:
        pairs: a pairs table.

    Returns:
        The table with margin / true_p typed Float64 where they arrived as pl.Null.
    """
    casts = [pl.col(c).cast(PAIRS_SCHEMA[c]) for c in NULLABLE_COLUMNS if pairs.schema.get(c) == pl.Null]
    return pairs.with_columns(casts) if casts else pairs


def _pair_id_is_repeat(frame: pl.DataFrame, _: str) -> pl.Series:
    """True for the 2nd, 3rd, ... row of a pair_id; the first occurrence stays (null pair_id stays null)."""
    repeat = ~pl.col("pair_id").is_first_distinct()
    return frame.select(pl.when(pl.col("pair_id").is_not_null()).then(repeat).alias("x")).to_series()


def _prompt_split_leak(frame: pl.DataFrame, _: str) -> pl.Series:
    """True for rows of a prompt_id that sit outside that prompt's kept split.

    A prompt seen in several splits keeps the split holding most of its rows (ties: train, then
    val, then test), so the leak is removed by quarantining the fewest rows.
    """
    rank = {name: i for i, name in enumerate(ALL_SPLITS)}
    keyed = frame.select("prompt_id", "split").with_row_index("_row")
    kept = (
        keyed.drop_nulls()
        .group_by("prompt_id", "split")
        .len()
        .with_columns(pl.col("split").replace_strict(rank, default=len(rank), return_dtype=pl.Int32).alias("_rank"))
        .sort(["prompt_id", "len", "_rank", "split"], descending=[False, True, False, False])
        .group_by("prompt_id", maintain_order=True)
        .first()
        .select("prompt_id", pl.col("split").alias("_kept"))
    )
    joined = keyed.join(kept, on="prompt_id", how="left").sort("_row")
    return joined.select((pl.col("split") != pl.col("_kept")).alias("x")).to_series()


def _chosen_equals_rejected(frame: pl.DataFrame, _: str) -> pl.Series:
    """True when chosen and rejected are the same text to a reader (canonical form, core/text.py:
    whitespace, Unicode normalization and invisible characters do not count); null where either is null."""
    # Fast path: ASCII texts (most rows) need only the whitespace step; NFC and the invisible
    # characters only matter where a text holds a non-ASCII character.
    texts = frame.select("chosen", "rejected").with_row_index("_row")
    non_ascii = pl.col("chosen").str.contains(r"[^\x00-\x7F]") | pl.col("rejected").str.contains(r"[^\x00-\x7F]")
    ascii_rows = texts.filter(~non_ascii.fill_null(False))
    squeeze = lambda c: pl.col(c).str.replace_all(r"\s+", " ").str.strip_chars()  # noqa: E731
    same = pl.concat([
        ascii_rows.select("_row", (squeeze("chosen") == squeeze("rejected")).alias("x")),
        texts.filter(non_ascii.fill_null(False)).select("_row", (canonical_expr("chosen") == canonical_expr("rejected")).alias("x")),
    ])
    return texts.select("_row").join(same, on="_row", how="left").sort("_row")["x"]


def _prompt_messages_valid(frame: pl.DataFrame, _: str) -> pl.Series:
    """True when prompt_messages passes the schema's rule (core/schema.py ``prompt_messages_valid``:
    a non-empty list of turns with roles in system/user/assistant, text content, a user turn last);
    null where it is null."""
    return frame.select(prompt_messages_valid().alias("x")).to_series()


def _derived_column_builders(control_pattern: str) -> dict[str, Callable[[pl.DataFrame, str], pl.Series]]:
    builders: dict[str, Callable[[pl.DataFrame, str], pl.Series]] = {}
    for text in TEXT_COLUMNS:
        builders[f"{text}_chars"] = lambda f, _, t=text: f.get_column(t).str.len_chars()
        # "no non-space character" stops at the first letter: 3x cheaper than stripping copies
        builders[f"{text}_is_blank"] = lambda f, _, t=text: ~f.get_column(t).str.contains(r"\S")
        builders[f"{text}_has_control_chars"] = lambda f, p, t=text: f.get_column(t).str.contains(p)
    builders["chosen_equals_rejected"] = _chosen_equals_rejected
    builders["prompt_messages_valid"] = _prompt_messages_valid
    builders["pair_id_is_repeat"] = _pair_id_is_repeat
    builders["prompt_split_leak"] = _prompt_split_leak
    return builders


DERIVED_COLUMNS: tuple[str, ...] = tuple(_derived_column_builders(""))


def check_frame(pairs: pl.DataFrame, columns: list[str], control_pattern: str) -> pl.DataFrame:
    """The compact frame GX validates: the named pair columns and derived columns, row order kept.

    Args:
        pairs: the pairs table (a derived column already in it, e.g. a batch's whole-table check, is used as is).
        columns: the columns the suite names (gx_suite.columns_named).
        control_pattern: the control-character regex (validation.control_characters).

    Returns:
        One column per name, in order.

    Raises:
        ValueError: a name that is neither a pair column nor a derived check column.
    """
    builders = _derived_column_builders(control_pattern)
    unknown = [c for c in columns if c not in pairs.columns and c not in builders]
    if unknown:
        raise ValueError(
            f"validation expectations name columns {unknown} that are neither pair columns "
            f"{pairs.columns} nor derived check columns {sorted(builders)}"
        )
    series = [
        pairs.get_column(c) if c in pairs.columns else builders[c](pairs, control_pattern).alias(c) for c in columns
    ]
    return pl.DataFrame(series) if series else pl.DataFrame({"_row": np.zeros(pairs.height, dtype=np.int8)})


def failed_expectations_per_row(n_rows: int, unexpected_rows: dict[str, np.ndarray]) -> pl.Series:
    """The row-level mask, computed once: for each row the list of expectation names it failed.

    unexpected_rows maps expectation name -> row positions GX reported unexpected; names keep
    the suite's order inside each list.

    Args:
        n_rows: rows of the table.
        unexpected_rows: expectation name -> row positions.

    Returns:
        A List(String) series of n_rows (an empty list for a clean row).

    Raises:
        ValueError: a row position outside 0..n_rows-1.
    """
    names = list(unexpected_rows)
    rows = np.concatenate([np.asarray(unexpected_rows[n], dtype=np.int64) for n in names] or [np.array([], np.int64)])
    order = np.concatenate([np.full(len(unexpected_rows[n]), i, dtype=np.int32) for i, n in enumerate(names)] or [np.array([], np.int32)])
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"unexpected row index out of range 0..{n_rows - 1}: GX did not index rows by position")
    failures = (
        pl.DataFrame({"_row": rows, "_order": order})
        .unique()
        .sort("_row", "_order")
        .group_by("_row", maintain_order=True)
        .agg(pl.col("_order").replace_strict(dict(enumerate(names)), return_dtype=pl.String).alias(FAILED_COLUMN))
    )
    return (
        pl.DataFrame({"_row": np.arange(n_rows, dtype=np.int64)})
        .join(failures, on="_row", how="left")
        .sort("_row")
        .select(pl.col(FAILED_COLUMN).fill_null(pl.lit([], dtype=pl.List(pl.String))))
        .to_series()
    )


def split_checked(checked: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split the checked table by its failed_expectations column. Every row lands in exactly one.

    Args:
        checked: validate_pairs' checked table.

    Returns:
        (validated pairs without the reasons column, quarantined pairs with it).

    Raises:
        AssertionError: the counts do not reconcile (a null in the mask).
    """
    failed = pl.col(FAILED_COLUMN).list.len() > 0
    quarantined = checked.filter(failed)
    validated = checked.filter(~failed).drop(FAILED_COLUMN)
    if validated.height + quarantined.height != checked.height:  # cannot happen unless the mask has nulls
        raise AssertionError(f"rows do not reconcile: {checked.height} in, {validated.height} + {quarantined.height} out")
    return validated, quarantined


def quarantine_fractions(checked: pl.DataFrame) -> tuple[float, dict[str, dict[str, float | int]]]:
    """Overall quarantined fraction and, per source, rows / quarantined / fraction.

    Args:
        checked: a table with source and failed_expectations.

    Returns:
        (overall fraction, {source: {rows, quarantined, fraction}}), sources sorted (null last).
    """
    if checked.height == 0:
        return 0.0, {}
    per_source = (
        checked.group_by("source")
        .agg(
            pl.len().alias("rows"),
            (pl.col(FAILED_COLUMN).list.len() > 0).sum().alias("quarantined"),
        )
        .with_columns((pl.col("quarantined") / pl.col("rows")).alias("fraction"))
        .sort("source", nulls_last=True)
    )
    overall = float(per_source["quarantined"].sum() / checked.height)
    table = {
        str(row["source"]): {"rows": int(row["rows"]), "quarantined": int(row["quarantined"]), "fraction": float(row["fraction"])}
        for row in per_source.iter_rows(named=True)
    }
    return overall, table
