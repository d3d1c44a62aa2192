"""The validation contract as configured in `conf/base/parameters_validation.yml` (key `validation:`).

Parsing happens once, up front, so a typo in YAML fails before any data is touched and the
error names the key to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from prefalign.core.config_utils import to_plain
from prefalign.core.schema import ALL_SPLITS, FEEDBACK_KINDS, SIGNALS

# Expectations whose kwargs name columns in these keys; used to convert only needed columns.
COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list")


@dataclass(frozen=True)
class ExpectationSpec:
    """One configured expectation: a unique name (used as the quarantine reason), a GX class name, kwargs."""

    name: str
    type: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class ValidationConfig:
    expectations: list[ExpectationSpec]
    source_row_bounds: dict[str, tuple[int | None, int | None]]
    max_quarantine_fraction_overall: float
    max_quarantine_fraction_per_source: float
    example_count: int = 5
    control_characters: str = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]"


def _fraction(value: Any, key: str) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"validation.{key} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"validation.{key} must be in [0, 1], got {fraction}")
    return fraction


def _bound(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"validation.{key} must be a non-negative integer or null, got {value!r}")
    return value


FEEDBACK_SOURCES = "feedback_sources"  # a value_set that stands for the configured feedback sources
# value_set names that stand for the code's own lists (core/schema.py), so YAML never copies them
CODE_VALUE_SETS: dict[str, tuple[str, ...]] = {"splits": ALL_SPLITS, "feedback_kinds": FEEDBACK_KINDS, "signals": SIGNALS}


def parse_validation_config(params: Mapping[str, Any],
                            feedback_sources: Mapping[str, Any] | Sequence[str] | None = None) -> ValidationConfig:
    """Turn the `validation:` parameter block into a checked ValidationConfig.

    `expectations` is a mapping name -> {type, kwargs}; a name set to null is dropped, which is
    how an environment (ci, local) removes an expectation without copying the whole suite.

    Args:
        params: the `validation:` block.
        feedback_sources: the sources configured under feedback.sources: their names, or the
            ``feedback.sources`` mapping itself (name -> block). A kwarg ``value_set:
            feedback_sources`` becomes the list of names (so the allowed sources are never a
            hand-kept copy); ``value_set: splits | feedback_kinds | signals`` becomes the code's
            list (``CODE_VALUE_SETS``, core/schema.py). Given the mapping, the row bounds follow it: a source whose block says
            ``enabled: false`` yields no rows by design, so its ``source_row_bounds`` entry is
            dropped (training on your own table alone passes validation).

    Returns:
        The checked ValidationConfig (expectations, quarantine limits, row bounds, example count).

    Raises:
        ValueError: a malformed key (named), or ``value_set: feedback_sources`` without sources.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"parameters `validation` must be a mapping, got {type(params).__name__}")
    raw_expectations = params.get("expectations")
    if not isinstance(raw_expectations, Mapping) or not raw_expectations:
        raise ValueError(
            "validation.expectations must be a non-empty mapping name -> {type: ExpectSomething, kwargs: {...}}"
        )
    specs: list[ExpectationSpec] = []
    for name, body in raw_expectations.items():
        if body is None:  # dropped by an environment override
            continue
        if not isinstance(body, Mapping) or "type" not in body:
            raise ValueError(
                f"validation.expectations.{name} must have a `type` (a Great Expectations class name "
                f"such as ExpectColumnValuesToBeBetween) and optional `kwargs`, got {body!r}"
            )
        kwargs = to_plain(body.get("kwargs") or {})  # handed to Great Expectations as they are
        if isinstance(kwargs.get("value_set"), str) and kwargs["value_set"] in CODE_VALUE_SETS:
            kwargs["value_set"] = list(CODE_VALUE_SETS[kwargs["value_set"]])
        elif kwargs.get("value_set") == FEEDBACK_SOURCES:
            if feedback_sources is None:
                raise ValueError(f"validation.expectations.{name}.kwargs.value_set is {FEEDBACK_SOURCES!r}, but the "
                                 "feedback.sources parameters were not given to validation")
            kwargs["value_set"] = list(feedback_sources)
        specs.append(ExpectationSpec(name=str(name), type=str(body["type"]), kwargs=kwargs))

    disabled = {str(name) for name, block in feedback_sources.items()
                if isinstance(block, Mapping) and block.get("enabled", True) is False} \
        if isinstance(feedback_sources, Mapping) else set()
    bounds: dict[str, tuple[int | None, int | None]] = {}
    for source, body in (params.get("source_row_bounds") or {}).items():
        if body is None or str(source) in disabled:
            continue
        if not isinstance(body, Mapping):
            raise ValueError(f"validation.source_row_bounds.{source} must be {{min: int, max: int|null}}, got {body!r}")
        low = _bound(body.get("min"), f"source_row_bounds.{source}.min")
        high = _bound(body.get("max"), f"source_row_bounds.{source}.max")
        if low is not None and high is not None and low > high:
            raise ValueError(f"validation.source_row_bounds.{source}: min {low} is above max {high}")
        bounds[str(source)] = (low, high)

    limits = params.get("max_quarantine_fraction")
    if not isinstance(limits, Mapping) or {"overall", "per_source"} - set(limits):
        raise ValueError(
            "validation.max_quarantine_fraction must be {overall: <fraction>, per_source: <fraction>}, "
            f"got {limits!r}"
        )
    return ValidationConfig(
        expectations=specs,
        source_row_bounds=bounds,
        max_quarantine_fraction_overall=_fraction(limits["overall"], "max_quarantine_fraction.overall"),
        max_quarantine_fraction_per_source=_fraction(limits["per_source"], "max_quarantine_fraction.per_source"),
        example_count=int(params.get("example_count", 5)),
        control_characters=str(params.get("control_characters", r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]")),
    )
