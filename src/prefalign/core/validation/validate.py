"""Validate a pairs table: schema, the configured GX suite, the row mask, the verdict.

`validate_pairs` returns the pairs with a `failed_expectations` column and a JSON-able results
dict; `split_checked` (checks.py) and `stop_message` turn those into validated / quarantined rows
and, when the table itself is wrong, the error that stops the run.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from prefalign.core.schema import PAIR_COLUMNS
from prefalign.core.validation.checks import (
    FAILED_COLUMN,
    conform_nullable,
    check_frame,
    failed_expectations_per_row,
    quarantine_fractions,
    schema_problems,
)
from prefalign.core.validation.config import ExpectationSpec, ValidationConfig
from prefalign.core.validation.gx_suite import ExpectationOutcome, columns_named, run_expectations

SCHEMA_EXPECTATION = "pairs_schema"


def source_row_count_specs(config: ValidationConfig) -> list[ExpectationSpec]:
    """One ExpectTableRowCountToBeBetween per configured source, restricted to that source's rows.

    Args:
        config: the ValidationConfig (its source_row_bounds).

    Returns:
        Specs named ``row_count[<source>]``.
    """
    specs = []
    for source, (low, high) in config.source_row_bounds.items():
        condition = {"type": "comparison", "column": {"name": "source"}, "operator": "==", "parameter": source}
        kwargs: dict[str, Any] = {"row_condition": condition}
        if low is not None:
            kwargs["min_value"] = low
        if high is not None:
            kwargs["max_value"] = high
        specs.append(ExpectationSpec(name=f"row_count[{source}]", type="ExpectTableRowCountToBeBetween", kwargs=kwargs))
    return specs


def full_suite(config: ValidationConfig) -> list[ExpectationSpec]:
    """The configured expectations plus the per-source row counts.

    Args:
        config: the ValidationConfig.

    Returns:
        The specs in order.

    Raises:
        ValueError: a name used twice.
    """
    suite = list(config.expectations) + source_row_count_specs(config)
    names = [spec.name for spec in suite]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"validation expectation names must be unique, repeated: {duplicated}")
    return suite


def _examples(pairs: pl.DataFrame, outcome: ExpectationOutcome, check: pl.DataFrame, count: int) -> list[dict]:
    """A few failing rows as {pair_id, source, value} so a person can find them again."""
    rows = outcome.unexpected_rows[:count]
    if rows.size == 0:
        return []
    column = outcome.kwargs.get("column")
    picked = pairs[rows.tolist()]
    values = check.get_column(column)[rows.tolist()].to_list() if isinstance(column, str) and column in check.columns else [None] * len(rows)
    return [
        {"pair_id": pid, "source": src, "value": _short(value)}
        for pid, src, value in zip(picked.get_column("pair_id").to_list(), picked.get_column("source").to_list(), values)
    ]


def _short(value: Any, limit: int = 80) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... ({len(value)} chars)"
    return value


def validate_pairs(pairs: pl.DataFrame, config: ValidationConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Run the contract on `pairs` (the whole table in memory; batched.py for a lazy one).

    Args:
        pairs: the pairs table (PAIRS_SCHEMA expected; a wrong schema is reported, not raised).
        config: the ValidationConfig (parameters_validation.yml).

    Returns:
        (checked, results): `checked` is `pairs` plus `failed_expectations` (list of names,
        empty for a clean row), `results` is the report's data (JSON-able): per expectation
        outcome, row counts, quarantine fractions, and `failures`, the reasons the run must stop
        (empty = go on).

    Raises:
        ValueError: a bad suite (unknown expectation type or column, repeated name).
    """
    problems = schema_problems(pairs)
    if problems:
        # Without the contract's columns the suite cannot run: report the schema alone and stop.
        checked = pairs.with_columns(pl.lit([], dtype=pl.List(pl.String)).alias(FAILED_COLUMN))
        schema_entry = {"name": SCHEMA_EXPECTATION, "type": "schema", "level": "table", "success": False,
                        "unexpected_count": None, "observed": problems, "examples": [], "kwargs": {}}
        return checked, _results(checked, [schema_entry], config, [f"{SCHEMA_EXPECTATION}: " + "; ".join(problems)])

    pairs = conform_nullable(pairs).select(PAIR_COLUMNS)  # contract column order downstream
    suite = full_suite(config)
    check = check_frame(pairs, columns_named(suite, pairs.columns), config.control_characters)
    outcomes = run_expectations(check, suite, config.example_count)
    mask = failed_expectations_per_row(pairs.height, {o.name: o.unexpected_rows for o in outcomes if o.row_level})
    checked = pairs.with_columns(mask.alias(FAILED_COLUMN))

    entries = [SCHEMA_PASSED] + [outcome_entry(o, _examples(pairs, o, check, config.example_count)) for o in outcomes]
    return checked, _results(checked, entries, config)


SCHEMA_PASSED = {"name": SCHEMA_EXPECTATION, "type": "schema", "level": "table", "success": True,
                 "unexpected_count": 0, "observed": "columns and dtypes match PAIRS_SCHEMA", "examples": [], "kwargs": {}}


def outcome_entry(outcome: ExpectationOutcome, examples: list[dict]) -> dict[str, Any]:
    """One expectation's entry of the results (report and gate).

    Args:
        outcome: what GX found (gx_suite.ExpectationOutcome).
        examples: a few failing rows as {pair_id, source, value}.

    Returns:
        {name, type, level, success, unexpected_count, observed, examples, kwargs, gx_result}.
    """
    return {
        "name": outcome.name,
        "type": outcome.type,
        "level": "row" if outcome.row_level else "table",
        "success": outcome.success,
        "unexpected_count": int(outcome.unexpected_rows.size) if outcome.row_level else outcome.result.get("unexpected_count"),
        "observed": outcome.exception or outcome.result.get("observed_value"),
        "examples": examples,
        "kwargs": outcome.kwargs,
        "gx_result": outcome.result,
    }


def _results(
    checked: pl.DataFrame, entries: list[dict], config: ValidationConfig, failures: list[str] | None = None
) -> dict[str, Any]:
    overall, per_source = quarantine_fractions(checked) if FAILED_COLUMN in checked.columns and "source" in checked.columns else (0.0, {})
    return results_from_counts(checked.height, overall, per_source, entries, config, failures)


def results_from_counts(rows_in: int, overall: float, per_source: dict[str, dict[str, float | int]], entries: list[dict],
                        config: ValidationConfig, failures: list[str] | None = None) -> dict[str, Any]:
    """The results dict from the quarantine counts (the batched path has no whole checked frame).

    Args:
        rows_in: rows of the pairs table.
        overall, per_source: as ``checks.quarantine_fractions`` gives them.
        entries: one dict per expectation (schema first), as validate_pairs builds them.
        config: the ValidationConfig (its quarantine limits).
        failures: reasons to stop found before (e.g. the schema).

    Returns:
        The JSON-able results: passed, failures, row counts, fractions, per-source counts, entries.
    """
    quarantined = sum(s["quarantined"] for s in per_source.values())
    failures = list(failures or []) + [
        f"{e['name']} ({e['type']}) failed: observed {e['observed']!r}, expected {_expected(e['kwargs'])}"
        for e in entries
        if e["level"] == "table" and not e["success"] and e["type"] != "schema"
    ]
    if overall > config.max_quarantine_fraction_overall:
        failures.append(
            f"quarantined fraction {overall:.4f} ({quarantined}/{rows_in} rows) is above "
            f"max_quarantine_fraction.overall={config.max_quarantine_fraction_overall}"
        )
    for source, stats in per_source.items():
        if stats["fraction"] > config.max_quarantine_fraction_per_source:
            failures.append(
                f"source {source!r}: quarantined fraction {stats['fraction']:.4f} ({stats['quarantined']}/{stats['rows']} rows) "
                f"is above max_quarantine_fraction.per_source={config.max_quarantine_fraction_per_source}"
            )
    return {
        "passed": not failures,
        "schema_ok": all(e["success"] for e in entries if e["type"] == "schema"),
        "failures": failures,
        "rows": {"in": rows_in, "validated": rows_in - quarantined, "quarantined": quarantined},
        "quarantined_fraction": overall,
        "limits": {"overall": config.max_quarantine_fraction_overall, "per_source": config.max_quarantine_fraction_per_source},
        "sources": per_source,
        "expectations": entries,
    }


def _expected(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "row_condition") or "success"


def stop_message(results: dict[str, Any], report_location: str) -> str | None:
    """The error that stops the run, or None when the table passed.

    Args:
        results: validate_pairs' (or validate_pairs_batched's) results.
        report_location: where the report is (the catalog's validation_report dataset), quoted in the message.

    Returns:
        The message naming every failure, the row counts and where to look; None when passed.
    """
    if results["passed"]:
        return None
    rows = results["rows"]
    reasons = "\n  - ".join(results["failures"])
    return (
        f"validation stopped the run: {len(results['failures'])} failure(s)\n  - {reasons}\n"
        + (
            f"rows: {rows['in']} in, {rows['validated']} passed the row checks, {rows['quarantined']} quarantined. "
            if results["schema_ok"]
            else f"rows: {rows['in']} in; row checks not run (the table does not match the pairs schema). "
        )
        + f"Report: {report_location} (latest version); quarantined rows with reasons: dataset quarantined_pairs. "
        "Fix the input (feedback pipeline) or tune validation.* in conf/base/parameters_validation.yml."
    )
