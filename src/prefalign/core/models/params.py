"""Config dataclasses built from parameter dicts, failing on unknown keys before any work starts."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_params(cls: type[T], params: dict[str, Any] | None, section: str) -> T:
    """``cls(**params)``; an unknown key raises naming it, the ``section`` and the allowed keys."""
    params = dict(params or {})
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown {section} key(s) {unknown}; allowed keys: {sorted(allowed)}")
    return cls(**params)
