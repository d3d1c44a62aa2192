"""The import graph of src/prefalign has no cycle, and the layers point down only.

Every module is parsed (``ast``), and EVERY import counts: module level, inside functions, and
under ``if TYPE_CHECKING:`` (a function-level import hides a cycle from the interpreter at load
time, not from the reader). Layers, lowest first (issue 21): infrastructure (``core.training``:
loop, batching, packing, launch) -> objectives (losses, heads: ``core.reward``, ``core.policy``,
``core.objectives`` except the registry) -> registry (``core.objectives.registry``,
``core.objectives.train_objective``) -> pipelines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "prefalign"


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its source)."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}

    def target(name: str) -> str | None:
        # ``from a.b import c``: c may be a module (a.b.c) or a name in a.b
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node)
                names = [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] != package:
                    continue
                found = target(name)
                # a package's __init__ importing its own submodule, or a module itself, is no edge
                if found and found != module:
                    graph[module].add(found)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle
    path through it (a -> b -> ... -> a), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(_cycle_through(graph, set(c)) for c in components)


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle a -> ... -> a inside a strongly connected component (breadth-first from its first module)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


# (layer name, module prefixes), lowest first; a module imports only from its own layer or below
LAYERS = [
    ("infrastructure", ("prefalign.core.training",)),
    ("objectives", ("prefalign.core.reward", "prefalign.core.policy", "prefalign.core.objectives.soft_label")),
    ("registry", ("prefalign.core.objectives.registry", "prefalign.core.objectives.train_objective")),
    ("pipelines", ("prefalign.pipelines",)),
]


def layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a (layer) -> b (higher layer)`` for every import that points up."""
    bad = []
    for module, targets in sorted(graph.items()):
        rank = layer_of(module)
        for t in sorted(targets):
            other = layer_of(t)
            if rank is not None and other is not None and other > rank:
                bad.append(f"{module} ({LAYERS[rank][0]}) -> {t} ({LAYERS[other][0]})")
    return bad


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/prefalign:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layers_point_down():
    bad = upward_imports(import_graph())
    assert not bad, "imports that point up a layer (infrastructure -> objectives -> registry -> pipelines):\n" + "\n".join(bad)


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path):
    """The graph, cycle and layer checks themselves, on a planted package (function-level and
    TYPE_CHECKING imports count)."""
    pkg = tmp_path / "prefalign"
    (pkg / "core" / "training").mkdir(parents=True)
    (pkg / "core" / "reward").mkdir(parents=True)
    for d in (pkg, pkg / "core", pkg / "core" / "training", pkg / "core" / "reward"):
        (d / "__init__.py").write_text("")
    (pkg / "core" / "training" / "launch.py").write_text(
        "def main():\n    from prefalign.core.reward.training import train\n")
    (pkg / "core" / "reward" / "training.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prefalign.core.reward import objective\n")
    (pkg / "core" / "reward" / "objective.py").write_text("from ..training.launch import main\n")
    graph = import_graph(tmp_path)
    assert find_cycles(graph) == [["prefalign.core.reward.objective", "prefalign.core.training.launch",
                                   "prefalign.core.reward.training", "prefalign.core.reward.objective"]]
    assert upward_imports(graph) == [
        "prefalign.core.training.launch (infrastructure) -> prefalign.core.reward.training (objectives)"]


@pytest.mark.parametrize("module", ["prefalign.core.objectives.registry", "prefalign.core.training.launch"])
def test_the_graph_sees_the_registry_and_launcher(module):
    assert module in import_graph()
