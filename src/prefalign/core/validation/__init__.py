"""Validation of the pairs table (issue 3): a Great Expectations suite built from config,
a row-level quarantine mask, a table-level gate, and the report. No kedro import here."""

from prefalign.core.validation.checks import FAILED_COLUMN, split_checked
from prefalign.core.validation.config import ValidationConfig, parse_validation_config
from prefalign.core.validation.report import plot_distributions, render_markdown
from prefalign.core.validation.validate import stop_message, validate_pairs

__all__ = [
    "FAILED_COLUMN",
    "ValidationConfig",
    "parse_validation_config",
    "plot_distributions",
    "render_markdown",
    "split_checked",
    "stop_message",
    "validate_pairs",
]
