"""Config dataclasses from parameter dicts: an unknown key fails before any work, naming it."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], params: dict[str, Any] | None, section: str) -> T:
    """`cls(**params)` after checking every key is a field of `cls`."""
    params = dict(params or {})
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown {section} key(s) {unknown}; allowed keys: {sorted(allowed)}")
    return cls(**params)
