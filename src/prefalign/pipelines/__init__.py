"""The project's pipelines. Node functions are module-level functions of pipelines/<name>/nodes.py,
named as the nodes kedro-viz shows; a node built per registry entry gets its entry bound with
``for_entry`` (``functools.partial``), keeping the function's name.

Which registered objectives get pipelines is the run environment's choice: its parameters may declare
``objectives: {reward: [...], policy: [...]}`` (absent or null = every registered objective of that
family). ``hooks.EnvironmentObjectivesHooks`` reads the declaration when the context is created, before
the pipelines are registered, so `kedro run --env cpu_chat` trains and evaluates exactly the
objectives that environment lists.
"""

from functools import partial
from typing import Any, Callable

from prefalign.core.objectives.registry import ObjectiveSpec, objectives

FAMILIES = ("reward", "policy")
_declared: dict[str, tuple[str, ...] | None] = {family: None for family in FAMILIES}
_judge: list[str | None] = [None]  # evaluation.generation.judge: the win-rate judge's namespace, or None (r*)


def for_entry(func: Callable, **bound: Any) -> Callable:
    """``func`` with keyword arguments bound (``namespace=`` of an objective, ``source=`` of a feedback
    source), under ``func``'s own name: Kedro's logs and kedro-viz then name the ``def`` that runs,
    so ``grep "def <name>"`` finds it.

    Args:
        func: a module-level node function whose bound arguments are keyword-only.
        **bound: the arguments to bind.

    Returns:
        A ``functools.partial`` with ``__name__``, ``__qualname__``, ``__module__`` and ``__doc__`` of ``func``.
    """
    node_function = partial(func, **bound)
    for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
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
    """
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
