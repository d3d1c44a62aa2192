"""Nodes a newcomer can find (issue 21 item 4): every node runs a module-level function of its
pipeline's nodes.py, under that function's own name, so the name Kedro logs and kedro-viz shows is
a `def` that grep finds; and no source or objective name is written into pipeline or node code."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

from prefalign.core.objectives import registry
from prefalign.core.synthetic import CYCLIC_SOURCE, SCALAR_SOURCE

PIPELINES = Path(__file__).resolve().parents[1] / "src" / "prefalign" / "pipelines"


def test_every_node_runs_a_module_level_function_under_its_own_name():
    from kedro.framework.project import configure_project, pipelines

    configure_project("prefalign")
    nodes = pipelines["__default__"].nodes + pipelines["evaluation_reward"].nodes
    for node in nodes:
        func = node.func
        module = importlib.import_module(func.__module__)
        assert module.__name__.startswith("prefalign.pipelines."), (node.name, module.__name__)
        defined = getattr(module, func.__name__, None)
        assert defined is not None and defined.__code__ is func.__code__, \
            f"{node.name}: {func.__name__} is not a def of {module.__name__}"
        # what kedro-viz's code panel and file show (it shows neither for a functools.partial)
        assert inspect.isfunction(func) and inspect.getsource(func) == inspect.getsource(defined), node.name
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


def test_for_entry_binds_keyword_only_arguments_and_refuses_others():
    from prefalign.pipelines import for_entry

    def node(a, b=2, *, namespace, flag=False):
        """doc"""
        return a, b, namespace, flag

    bound = for_entry(node, namespace="reward_bt")
    assert bound(1) == (1, 2, "reward_bt", False) and bound(1, 3, flag=True) == (1, 3, "reward_bt", True)
    assert node.__kwdefaults__ == {"flag": False}  # the original is unchanged
    assert (bound.__name__, bound.__doc__) == ("node", "doc")
    with pytest.raises(TypeError, match=r"no keyword-only parameters \['a'\]"):
        for_entry(node, a=1)
