"""Before the first node: does every dataset the run will load exist? (called by hooks.py)

Kedro loads a node's inputs when the node starts, so a missing checkpoint (``policy_dpo.model``
in an environment that trains only reward models) used to stop a run after the nodes before it
had worked for half an hour, saving nothing. ``missing_inputs`` asks each free input of the
selected pipeline whether it exists (a versioned dataset: whether it has a version) and
``missing_inputs_message`` writes the one line that says which are missing, what makes them, and
the command that runs what can run now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kedro.io.core import AbstractDataset
from kedro.pipeline import Pipeline


def _checkable(catalog: Any, name: str) -> bool:
    """Whether the catalog knows ``name`` and its dataset can say if it exists. Left out: datasets
    that do not implement ``_exists`` (they would answer False) and datasets read on demand
    (``loaded_on_demand``: the raw records, whose node reads them only when its source is enabled,
    so a disabled source's files may be absent)."""
    try:
        if name not in catalog:
            return False
        dataset = catalog.get(name)
    except Exception:
        return False
    return (dataset is not None and type(dataset)._exists is not AbstractDataset._exists
            and not getattr(dataset, "loaded_on_demand", False))


def missing_inputs(pipeline: Pipeline, catalog: Any) -> list[str]:
    """The free inputs of ``pipeline`` (parameters aside) that do not exist in ``catalog``, sorted.

    Args:
        pipeline: the pipeline this run will execute (already filtered by --namespaces etc.).
        catalog: the run's catalog (``--load-versions`` applied: a pinned version must exist).

    Returns:
        Dataset names; empty when every input can be loaded.
    """
    names = sorted(n for n in pipeline.inputs() if not n.startswith("params:") and n != "parameters")
    return [name for name in names if _checkable(catalog, name) and not catalog.exists(name)]


def _top_namespace(node: Any) -> str | None:
    return node.namespace.split(".")[0] if node.namespace else None


def _command(env: str | None, pipeline_name: str, namespaces: list[str] | None = None) -> str:
    parts = ["kedro run"]
    if env and env != "local":
        parts.append(f"--env {env}")
    parts.append(f"--pipelines {pipeline_name}")
    if namespaces:
        parts.append(f"--namespaces {','.join(namespaces)}")
    return " ".join(parts)


def _makers(missing: list[str], registry: Mapping[str, Pipeline], env: str | None) -> dict[str, list[str]]:
    """command -> the missing datasets it makes: per dataset the smallest registered pipeline
    producing it, narrowed to the producing nodes' namespaces (one command per pipeline)."""
    by_pipeline: dict[str, tuple[list[str], set[str | None]]] = {}
    for name in missing:
        producers = [(len(p.nodes), key) for key, p in registry.items()
                     if key != "__default__" and name in p.all_outputs()]
        if not producers:
            continue
        key = min(producers)[1]
        node = next(n for n in registry[key].nodes if name in n.outputs)
        names, spaces = by_pipeline.setdefault(key, ([], set()))
        names.append(name)
        spaces.add(_top_namespace(node))
    commands = {}
    for key, (names, spaces) in by_pipeline.items():
        every = {_top_namespace(n) for n in registry[key].nodes}
        narrowed = None if None in spaces or spaces == every else sorted(spaces)  # type: ignore[type-var]
        commands[_command(env, key, narrowed)] = names
    return commands


def runnable_command(pipeline: Pipeline, missing: list[str], registry: Mapping[str, Pipeline], catalog: Any,
                     env: str | None, selected: list[str]) -> str | None:
    """A command that runs the part of this run that does not need the missing datasets, or None.

    First a registered pipeline made of this run's nodes (same names) whose inputs all exist (e.g.
    ``evaluation_reward``, the reward models' evaluation, when no policy was trained); else the
    namespaces of this run none of whose nodes needs a missing dataset (``--namespaces``).
    """
    names = {n.name for n in pipeline.nodes}
    candidates = [(len(p.nodes), key) for key, p in registry.items()
                  if key not in selected and key != "__default__" and p.nodes
                  and {n.name for n in p.nodes} <= names and not missing_inputs(p, catalog)]
    if candidates:
        return _command(env, max(candidates)[1])
    blocked = {n.name for n in pipeline.from_inputs(*missing).nodes}
    spaces: dict[str, bool] = {}
    for node in pipeline.nodes:
        space = _top_namespace(node)
        if space:
            spaces[space] = spaces.get(space, True) and node.name not in blocked
    runnable = sorted(space for space, ok in spaces.items() if ok)
    if runnable and len(selected) == 1:
        return _command(env, selected[0], runnable)
    return None


def missing_inputs_message(pipeline: Pipeline, missing: list[str], registry: Mapping[str, Pipeline], catalog: Any,
                           run_params: Mapping[str, Any]) -> str:
    """One line: the missing datasets, the commands that make them, and what can run now.

    Args:
        pipeline: the filtered pipeline of this run; missing: ``missing_inputs(pipeline, catalog)``.
        registry: the project's registered pipelines (``kedro.framework.project.pipelines``).
        run_params: Kedro's run parameters (``env``, ``pipeline_names``, ``runtime_params``).
    """
    env = run_params.get("env")
    selected = list(run_params.get("pipeline_names") or ["__default__"])
    makers = _makers(missing, registry, env)
    message = f"missing inputs, nothing was run: {', '.join(missing)} (no saved version or file)"
    if len(makers) == 1 and len(next(iter(makers.values()))) == len(missing):
        message += f". Make {'it' if len(missing) == 1 else 'them'} with `{next(iter(makers))}`"
    elif makers:
        message += ". Make " + "; ".join(f"{', '.join(names)} with `{command}`" for command, names in makers.items())
    runnable = runnable_command(pipeline, missing, registry, catalog, env, selected)
    if runnable:
        extra = " (with your --params)" if run_params.get("runtime_params") else ""
        message += f". What can run now: `{runnable}`{extra}"
    return message
