"""Great Expectations boundary: build the suite from config and run it in an ephemeral context.

No GX project files are written and analytics are off (the context is built with
`analytics_enabled=False`, and GX_ANALYTICS_ENABLED=false is set before GX is imported).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import pandas as pd

from prefalign.core.validation.config import COLUMN_KWARGS, ExpectationSpec

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402  (after the analytics switch above)
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.expectation import (  # noqa: E402
    ColumnMapExpectation,
    ColumnPairMapExpectation,
    MulticolumnMapExpectation,
)

ROW_LEVEL_BASES = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
NAME_META_KEY = "prefalign_name"
# Result keys that list every unexpected row: used for the mask, too big for the saved report.
BULKY_RESULT_KEYS = ("unexpected_list", "unexpected_index_list", "unexpected_index_query", "partial_unexpected_index_list")


@dataclass(frozen=True)
class ExpectationOutcome:
    """What one configured expectation found."""

    name: str
    type: str
    kwargs: dict[str, Any]
    row_level: bool  # a map expectation: failing rows are quarantined, the run goes on
    success: bool
    unexpected_rows: np.ndarray  # row positions (row-level only; empty otherwise)
    result: dict[str, Any]  # GX's result dict without the bulky per-row lists
    exception: str | None  # GX could not evaluate it (e.g. a missing column): a table-level failure


def expectation_class(spec: ExpectationSpec) -> type:
    """The Great Expectations 1.x class a spec names.

    Args:
        spec: one configured expectation.

    Returns:
        The class (gx.expectations.<spec.type>).

    Raises:
        ValueError: not a GX expectation class, naming the key and examples.
    """
    cls = getattr(gx.expectations, spec.type, None)
    if not isinstance(cls, type):
        raise ValueError(
            f"validation.expectations.{spec.name}.type {spec.type!r} is not a Great Expectations 1.x "
            "expectation class; use a name from great_expectations.expectations such as "
            "ExpectColumnValuesToBeBetween or ExpectTableRowCountToBeBetween"
        )
    return cls


def is_row_level(spec: ExpectationSpec) -> bool:
    """True for a map expectation (its failing rows are quarantined), False for a table-level one.

    Args:
        spec: one configured expectation.

    Returns:
        Whether its class derives from a column / column-pair / multicolumn map expectation.
    """
    return issubclass(expectation_class(spec), ROW_LEVEL_BASES)


def columns_named(specs: list[ExpectationSpec], known_columns: list[str]) -> list[str]:
    """Columns the suite reads: from column kwargs and from words of any row_condition.

    Args:
        specs: the suite.
        known_columns: column names a legacy string row_condition may mention.

    Returns:
        The names, first-seen order, each once.
    """
    needed: list[str] = []
    for spec in specs:
        for key in COLUMN_KWARGS:
            value = spec.kwargs.get(key)
            for column in [value] if isinstance(value, str) else (value or []):
                if column not in needed:
                    needed.append(column)
        for column in _condition_columns(spec.kwargs.get("row_condition"), known_columns):
            if column not in needed:
                needed.append(column)
    return needed


def _condition_columns(condition: Any, known_columns: list[str]) -> list[str]:
    """Columns in a row_condition: a GX condition dict ({column: {name: ...}}, nested and/or) or a legacy string."""
    if isinstance(condition, str):
        return [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", condition) if w in known_columns]
    if isinstance(condition, dict):
        found = [condition["column"]["name"]] if isinstance(condition.get("column"), dict) else []
        for inner in condition.get("conditions") or []:
            found += _condition_columns(inner, known_columns)
        return found
    return []


def build_expectation(spec: ExpectationSpec) -> Any:
    """The GX expectation object of a spec, tagged with its name (the quarantine reason).

    Args:
        spec: one configured expectation.

    Returns:
        The expectation instance.

    Raises:
        ValueError: an unknown class or kwargs GX rejects, naming the expectation.
    """
    cls = expectation_class(spec)
    try:
        return cls(**spec.kwargs, meta={NAME_META_KEY: spec.name})
    except Exception as error:  # pydantic names the bad field; we add which expectation it was
        raise ValueError(f"validation.expectations.{spec.name} ({spec.type}) has invalid kwargs {spec.kwargs}: {error}") from error


def to_gx_pandas(frame: pl.DataFrame) -> "pd.DataFrame":
    """Polars -> pandas for GX, with numbers as int64/float64 and strings as categories.

    GX's pandas range check is vectorised only for int64/float64 columns; for others (e.g. the
    UInt32 that str.len_chars gives) it calls a Python function per value: 2x slower in all at
    1M rows. The short label columns (source, split, ...) as categories make set membership and
    row conditions ~25% cheaper again (benchmarks/validation_1m.py).

    Args:
        frame: the compact check frame.

    Returns:
        The pandas frame with a RangeIndex (GX's unexpected_index_list are row positions).
    """
    casts = [
        pl.col(name).cast(pl.Float64 if dtype.is_float() else pl.Int64)
        for name, dtype in frame.schema.items()
        if dtype.is_numeric() and dtype not in (pl.Int64, pl.Float64)
    ] + [pl.col(name).cast(pl.Categorical) for name, dtype in frame.schema.items() if dtype == pl.String]
    return (frame.with_columns(casts) if casts else frame).to_pandas()


def run_expectations(frame: pl.DataFrame, specs: list[ExpectationSpec], example_count: int = 5) -> list[ExpectationOutcome]:
    """Validate `frame` (already the compact check frame) against `specs`, one GX run.

    The pandas frame keeps a RangeIndex so GX's unexpected_index_list are row positions.

    Args:
        frame: the compact check frame (checks.check_frame).
        specs: the expectations.
        example_count: failing values GX keeps per expectation (partial_unexpected_count).

    Returns:
        One ExpectationOutcome per spec, in order.

    Raises:
        ValueError: a bad spec (build_expectation), before any data is converted.
    """
    expectations = [build_expectation(spec) for spec in specs]  # fail on bad config before converting data
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            store_backend_defaults=InMemoryStoreBackendDefaults(),
        ),
    )
    batch = (
        context.data_sources.add_pandas("pairs")
        .add_dataframe_asset("pairs")
        .add_batch_definition_whole_dataframe("all")
    )
    # The suite is handed over whole: add_expectation one by one re-serialises the store each time.
    suite = context.suites.add(gx.ExpectationSuite(name="pairs_contract", expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="pairs", data=batch, suite=suite))
    results = definition.run(
        batch_parameters={"dataframe": to_gx_pandas(frame)},
        result_format={"result_format": "COMPLETE", "partial_unexpected_count": example_count},
    )

    by_name = {}
    for result in results.results:
        as_dict = result.to_json_dict()
        by_name[as_dict["expectation_config"]["meta"][NAME_META_KEY]] = (result, as_dict)
    outcomes = []
    for spec in specs:
        result, as_dict = by_name[spec.name]
        full = result.result or {}
        info = as_dict.get("exception_info") or {}
        exception = info.get("exception_message") if info.get("raised_exception") else None
        row_level = is_row_level(spec) and exception is None
        rows = np.asarray(full.get("unexpected_index_list") or [], dtype=np.int64) if row_level else np.array([], np.int64)
        outcomes.append(
            ExpectationOutcome(
                name=spec.name,
                type=spec.type,
                kwargs=spec.kwargs,
                row_level=row_level,
                success=bool(as_dict["success"]),
                unexpected_rows=rows,
                result={k: v for k, v in (as_dict.get("result") or {}).items() if k not in BULKY_RESULT_KEYS},
                exception=exception,
            )
        )
    return outcomes
