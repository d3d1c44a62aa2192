"""Nodes a newcomer can find (issue 21 item 4): every node runs a module-level function of its
pipeline's nodes.py, under that function's own name, so the name Kedro logs and kedro-viz shows is
a `def` that grep finds; and no source or objective name is written into pipeline or node code."""

import importlib
import inspect
import re
from functools import partial
from pathlib import Path

from prefalign.core.objectives import registry
from prefalign.core.synthetic import CYCLIC_SOURCE, SCALAR_SOURCE

PIPELINES = Path(__file__).resolve().parents[1] / "src" / "prefalign" / "pipelines"


def test_every_node_runs_a_module_level_function_under_its_own_name():
    from kedro.framework.project import configure_project, pipelines

    configure_project("prefalign")
    nodes = pipelines["__default__"].nodes + pipelines["evaluation_reward"].nodes
    for node in nodes:
        func = node.func.func if isinstance(node.func, partial) else node.func
        module = importlib.import_module(func.__module__)
        assert module.__name__.startswith("prefalign.pipelines."), (node.name, module.__name__)
        assert getattr(module, func.__name__, None) is func, f"{node.name}: {func.__name__} is not a def of {module.__name__}"
        assert node.func.__name__ == func.__name__, node.name  # what Kedro logs and kedro-viz shows
        source = Path(inspect.getsourcefile(func)).read_text()
        assert re.search(rf"^def {func.__name__}\(", source, re.M), f"grep 'def {func.__name__}' finds no module-level def"
    names = {node.name.split(".")[-1] for node in nodes}
    assert {"train_sft", "train_policy", "train_gpo", "train_reward_model", "evaluate_reward_bt"} <= names


def test_no_source_or_objective_name_is_written_in_pipeline_code():
    names = {SCALAR_SOURCE, CYCLIC_SOURCE} | {spec.namespace for spec in registry.REGISTRY}
    for path in PIPELINES.rglob("*.py"):
        code = path.read_text()
        for name in names:
            # the literal, quoted, as wiring would write it (docstrings name them in prose, unquoted)
            assert not re.search(rf"[\"']{name}[\"'.]", code), f"{path.relative_to(PIPELINES)} writes {name!r}"
