"""Config dataclasses built from parameter dicts, failing on unknown keys and wrong types before any work starts."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Callable, TypeVar, Union

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter has an unknown key, a wrong type or a value outside what is allowed.

    A ``ValueError`` so that callers catching configuration errors by that type keep working.
    """


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(hint))
    if origin is not None:
        args = ", ".join(_type_name(arg) for arg in typing.get_args(hint))
        return f"{origin.__name__}[{args}]" if args else origin.__name__
    return getattr(hint, "__name__", str(hint))


def value_matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as YAML or ``--params`` gives it) fits the annotation ``hint``.

    ints are accepted for floats (YAML writes ``1`` for 1.0); bools are not accepted for numbers
    (``true`` for a step count is a mistake); lists are accepted for tuples (YAML has no tuples).
    Annotations this function does not know are accepted: it only rejects what it understands.

    Args:
        value: the parameter value.
        hint: a type annotation (resolved, not a string): builtins, unions, Literal, list/tuple/dict, Any.

    Returns:
        False only when the value clearly does not fit the annotation.
    """
    if hint is Any or hint is object:
        return True
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(value_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(value_matches(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(value_matches(v, item) for v in value)
    if container in (dict, Mapping):
        return isinstance(value, Mapping)
    return True


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved here: check keys only
        return {}


def dataclass_from_params(cls: type[T], params: dict[str, Any] | None, section: str,
                          key_path: Callable[[str], str] | None = None) -> T:
    """``cls(**params)`` after checking every key and the type of every value.

    Args:
        cls: a dataclass whose field annotations say what each key accepts.
        params: the parameter block (from YAML or ``--params``); None means all defaults.
        section: the block's name in messages, e.g. ``training`` (errors read ``training.max_steps``).
        key_path: where a field is written in the YAML block, when that differs from its name (a flat
            config read from sub-blocks: ``batch_size`` -> ``data.batch_size``); None = the name.

    Returns:
        The dataclass instance.

    Raises:
        ParameterError: an unknown key (naming the closest allowed key, e.g. ``max_step`` ->
            ``max_steps``) or a value of the wrong type (naming the key, the value and the type
            the field accepts).
    """
    if params is not None and not isinstance(params, Mapping):
        raise ParameterError(f"{section} must be a mapping of keys to values, got {params!r}")
    params = dict(params or {})
    allowed = [f.name for f in fields(cls)]
    path = key_path or (lambda key: key)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        # the keys as the block writes them: a flat config's sub-block fields show as their sub-block
        written = list(dict.fromkeys(path(key).split(".")[0] for key in allowed))
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), written, n=1)
            hints.append(f"{section}.{key}" + (f" (did you mean {section}.{close[0]}?)" if close else ""))
        raise ParameterError(f"unknown key {', '.join(hints)}; allowed keys of {section}: {', '.join(written)}")
    annotations = _hints(cls)
    for key, value in params.items():
        hint = annotations.get(key)
        if hint is not None and not value_matches(value, hint):
            raise ParameterError(
                f"{section}.{path(key)}={value!r} has the wrong type ({type(value).__name__}); it must be {_type_name(hint)}"
            )
    return cls(**params)
