"""The project's pipelines. Node functions are module-level functions of pipelines/<name>/nodes.py,
named as the nodes kedro-viz shows; a node built per registry entry gets its entry bound with
``for_entry`` (a copy of the function with keyword-only defaults), keeping its name and code.

Which registered objectives get pipelines is the run environment's choice: its parameters may declare
``objectives: {reward: [...], policy: [...]}`` (absent or null = every registered objective of that
family). ``hooks.EnvironmentObjectivesHooks`` reads the declaration when the context is created, before
the pipelines are registered, so `kedro run --env cpu_chat` trains and evaluates exactly the
objectives that environment lists.
"""

from types import FunctionType
from typing import Any, Callable

from prefalign.core.objectives.registry import ObjectiveSpec, objectives

FAMILIES = ("reward", "policy")
_declared: dict[str, tuple[str, ...] | None] = {family: None for family in FAMILIES}
_judge: list[str | None] = [None]  # evaluation.generation.judge: the win-rate judge's namespace, or None (r*)


def for_entry(func: Callable, **bound: Any) -> Callable:
    """``func`` with keyword-only arguments bound (``namespace=`` of an objective, ``source=`` of a
    feedback source): a copy of the function whose keyword-only defaults are ``bound``.

    The copy runs the same code under the same name, so Kedro's log, kedro-viz's node name, code panel
    and file all show the module-level ``def`` (``grep "def <name>"`` finds it). A ``functools.partial``
    would bind the same values, but kedro-viz shows neither the code nor the file of a partial.

    Args:
        func: a module-level node function.
        **bound: values for some of its keyword-only parameters.

    Returns:
        A function of the same code, name, module and docstring, with those parameters defaulted.

    Raises:
        TypeError: a name in ``bound`` that is not a keyword-only parameter of ``func``.
    """
    keyword_only = func.__code__.co_varnames[func.__code__.co_argcount:
                                             func.__code__.co_argcount + func.__code__.co_kwonlyargcount]
    unknown = sorted(set(bound) - set(keyword_only))
    if unknown:
        raise TypeError(f"{func.__name__} has no keyword-only parameters {unknown} to bind "
                        f"(it has {list(keyword_only)}); declare them after `*` in its def")
    node_function = FunctionType(func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__)
    node_function.__kwdefaults__ = {**(func.__kwdefaults__ or {}), **bound}
    for attribute in ("__qualname__", "__module__", "__doc__", "__annotations__"):
        setattr(node_function, attribute, getattr(func, attribute))
    return node_function


def declare_objectives(declaration: dict[str, Any] | None) -> bool:
    """Set the objectives the pipelines are built for (the environment's ``objectives`` parameter).

    Args:
        declaration: ``{family: [name, ...] | None}`` for families ``reward`` and ``policy``; None or a
            missing family = every registered objective of it.

    Returns:
        True when the declaration changed (the registered pipelines must be built again).

    Raises:
        ValueError: an unknown family or objective name, naming it and the registered ones.
    """
    declaration = declaration or {}
    unknown = sorted(set(declaration) - set(FAMILIES))
    if unknown:
        raise ValueError(f"objectives: unknown families {unknown}; declare objectives under {list(FAMILIES)}")
    new: dict[str, tuple[str, ...] | None] = {}
    for family in FAMILIES:
        names = declaration.get(family)
        if names is not None:
            registered = [spec.name for spec in objectives(family=family)]
            missing = [name for name in names if name not in registered]
            if missing:
                raise ValueError(f"objectives.{family} names {missing}, which are not registered {family} objectives "
                                 f"({registered}); see core/objectives/registry.py")
            names = tuple(names)
        new[family] = names
    changed = new != _declared
    _declared.update(new)
    return changed


def declare_judge(judge: str | None) -> bool:
    """Set the win-rate judge the evaluation pipeline wires in (``evaluation.generation.judge``).

    Returns:
        True when it changed (the pipelines must be built again).

    Raises:
        ValueError: ``judge`` is not the namespace of a registered reward objective, naming them.
    """
    reward_models = [spec.namespace for spec in objectives(family="reward")]
    if judge is not None and judge not in reward_models:
        raise ValueError(f"evaluation.generation.judge={judge!r} is not a registered reward model; use null (the "
                         f"synthetic r*) or one of {reward_models} (core/objectives/registry.py)")
    changed = judge != _judge[0]
    _judge[0] = judge
    return changed


def win_rate_judge() -> str | None:
    """The reward model namespace that judges policy samples, or None for the synthetic r*."""
    return _judge[0]


def declared_objectives(family: str, **filters: Any) -> list[ObjectiveSpec]:
    """The registered objectives of ``family`` (further filtered as ``registry.objectives``) that the
    run environment declares, in registration order."""
    names = _declared.get(family)
    return [spec for spec in objectives(family=family, **filters) if names is None or spec.name in names]
