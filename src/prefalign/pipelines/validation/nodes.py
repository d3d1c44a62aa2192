"""Thin nodes over prefalign.core.validation; the catalog does all I/O."""

from __future__ import annotations

from typing import Any

import polars as pl
from matplotlib.figure import Figure

from prefalign.core.validation import (
    parse_validation_config,
    plot_distributions,
    render_markdown,
    split_checked,
    stop_message,
    validate_pairs,
)
from prefalign.core.validation.batched import (
    DEFAULT_BATCH_ROWS,
    BatchedCheck,
    report_frame,
    validate_pairs_batched,
    validated_rows,
)


REPORT_DATASET = "the validation_report dataset"  # where the catalog writes it: named by the run's hook


class ValidationError(RuntimeError):
    """The pairs table failed a table-level expectation or a quarantine limit.

    ``results`` are the validation results the message was made from: the run's hook names the
    report file the catalog wrote in it (hooks.RunSummaryHooks.on_node_error).
    """

    def __init__(self, message: str, results: dict[str, Any] | None = None):
        super().__init__(message)
        self.results = results


def check_pairs(pairs: pl.DataFrame | pl.LazyFrame, params: dict[str, Any],
                feedback_sources: dict[str, Any] | None = None) -> tuple[pl.DataFrame | BatchedCheck, dict[str, Any]]:
    """Run the configured contract: pairs with their failed expectations, and the results JSON.
    The allowed sources are the ones configured under feedback.sources; the row bounds of the
    disabled ones are not checked. A lazy table (the streaming path's parquet folder) is validated
    in batches of ``validation.batch_rows`` rows: the same verdict and quarantined rows."""
    config = parse_validation_config(params, dict(feedback_sources or {}))
    if isinstance(pairs, pl.LazyFrame):
        failures, quarantined, results = validate_pairs_batched(pairs, config, int(params.get("batch_rows", DEFAULT_BATCH_ROWS)))
        return BatchedCheck(pairs, failures, quarantined), results
    return validate_pairs(pairs, config)


def quarantine_pairs(checked_pairs: pl.DataFrame | BatchedCheck) -> tuple[pl.DataFrame, pl.DataFrame | pl.LazyFrame]:
    """Rows that failed a row-level expectation (with reasons), and the rows that passed (lazy for
    a batched check: the catalog sinks them)."""
    if isinstance(checked_pairs, BatchedCheck):
        return checked_pairs.quarantined, validated_rows(checked_pairs.pairs, checked_pairs.failures)
    passed, quarantined = split_checked(checked_pairs)
    return quarantined, passed


def write_report(checked_pairs: pl.DataFrame | BatchedCheck, validation_results: dict[str, Any]) -> tuple[str, Figure]:
    if isinstance(checked_pairs, BatchedCheck):  # the report reads source, p_chosen, margin and the reasons only
        checked_pairs = report_frame(checked_pairs.pairs, checked_pairs.failures)
    return render_markdown(validation_results, checked_pairs), plot_distributions(checked_pairs)


def gate_validated_pairs(
    passed_pairs: pl.DataFrame | pl.LazyFrame,
    validation_results: dict[str, Any],
    validation_report: str,  # noqa: ARG001 - an input only so this runs after the report is saved
    quarantined_pairs: pl.DataFrame,  # noqa: ARG001 - likewise, after the quarantine is saved
) -> pl.DataFrame | pl.LazyFrame:
    """Pass the clean rows on as validated_pairs, or stop the run with the reasons."""
    message = stop_message(validation_results, REPORT_DATASET)
    if message:
        raise ValidationError(message, validation_results)
    return passed_pairs
