"""Every parameter of every shipped environment is read by something (issue 21, "parameter-read test").

Each environment's parameters are loaded as a run loads them (Kedro's OmegaConfigLoader with the
project's settings: the soft merge over base, the globals resolver), wrapped in a mapping that
records which keys are read, and given to what a run does with them before its first node: the
hook that declares the environment's objectives and judge (hooks.EnvironmentObjectivesHooks) and
the parameter checks of every pipeline (pipelines/parameter_checks.py), which build the same
configs the nodes build. A leaf key whose value nothing reads fails the test, naming it.

What counts as read: the code took the value (``params[key]``, ``.get``, ``.items()``,
``.values()``, ``dict(params)`` or ``{**params}``). Copying a block (``copy.deepcopy``, the deep
merge of ``defaults`` under an objective's block) is not a read: the copy remembers where each value
came from, and reading it there counts for the original key. A block given to a strict config parser
(``dataclass_from_params``: unknown keys fail) is read key by key by that parser.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from kedro.config import OmegaConfigLoader

from prefalign.hooks import EnvironmentObjectivesHooks
from prefalign.pipelines import declare_judge, declare_objectives
from prefalign.pipelines.parameter_checks import check_pipeline_parameters
from prefalign.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[2] / "conf"
ENVIRONMENTS = sorted(path.name for path in CONF.iterdir() if path.is_dir() and path.name != "accelerate")


class ReadRecorder(dict):
    """A parameters mapping that records the path of every value the code reads from it.

    Nested mappings are ReadRecorders too; ``reads`` is shared by the whole tree (and its copies).
    Iterating over the keys alone (``for key in block``, ``set(block)``) is not a read: an
    unknown-key check looks at the names, not at the values.
    """

    def __init__(self, data: dict[str, Any], path: tuple = (), reads: set | None = None):
        self._path = path
        self._reads = set() if reads is None else reads
        super().__init__({key: _record(value, (*path, key), self._reads) for key, value in data.items()})

    @property
    def reads(self) -> set:
        return self._reads

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self._reads.add((*self._path, key))
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __iter__(self) -> Iterator:  # an overridden __iter__ also makes dict(self) and {**self} use __getitem__
        return iter(list(super().keys()))

    def items(self):
        return [(key, self[key]) for key in list(super().keys())]

    def values(self):
        return [self[key] for key in list(super().keys())]

    def copy(self) -> dict:
        return dict(self.items())

    def pop(self, key, *default):
        if key in self:
            value = self[key]
            super().pop(key)
            return value
        return default[0] if default else super().pop(key)

    def __deepcopy__(self, memo) -> "ReadRecorder":
        clone = ReadRecorder({}, self._path, self._reads)
        for key, value in dict.items(self):
            dict.__setitem__(clone, key, copy.deepcopy(value, memo))
        return clone


def _record(value: Any, path: tuple, reads: set) -> Any:
    return ReadRecorder(value, path, reads) if isinstance(value, dict) else value


def leaves(tree: dict, path: tuple = ()) -> Iterator[tuple]:
    """The path of every leaf value (a non-mapping, or an empty mapping)."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key)


def parameters(env: str) -> dict:
    loader = OmegaConfigLoader(str(CONF), env=env, **{k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"})
    return loader["parameters"]


def unread_leaves(params: dict) -> list[str]:
    """The leaves of ``params`` that the run's start (the objectives hook, every parameter check) never reads."""
    recorder = ReadRecorder(params)
    try:
        EnvironmentObjectivesHooks().after_context_created(SimpleNamespace(config_loader={"parameters": recorder}))
        check_pipeline_parameters(recorder, None)
    finally:  # the hook declares this environment's objectives and judge for the process: back to every one
        declare_objectives(None)
        declare_judge(None)
    return [".".join(map(str, leaf)) for leaf in leaves(params) if leaf not in recorder.reads]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_parameter_of_every_environment_is_read(env):
    params = parameters(env)
    assert len(list(leaves(params))) > 300  # the whole tree was loaded, not an empty environment
    assert unread_leaves(params) == []


@pytest.mark.parametrize("path", [
    ("seed",),                                       # a top-level key nothing reads (base had one)
    ("validation", "report_path"),                   # beside keys that are read one by one
    ("policy", "sft", "objective", "beta"),          # SFT has no objective config: nothing parses it
    ("feedback", "split", "holdout_sources"),        # a misspelt key in a block read key by key
])
def test_a_parameter_that_nothing_reads_fails(path):
    params = parameters("base")
    node = params
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = 0
    assert unread_leaves(params) == [".".join(path)]


def test_the_recorder_counts_reads_not_copies_or_key_listings():
    recorder = ReadRecorder({"a": {"x": 1, "y": 2}, "b": 3, "c": {"z": 4}})
    clone = copy.deepcopy(recorder)
    assert sorted(recorder["a"]) == ["x", "y"] and "b" in recorder and recorder.reads == {("a",)}
    assert clone["c"]["z"] == 4  # a read of the copy is a read of the original key
    assert dict(recorder["a"]) == {"x": 1, "y": 2}
    assert recorder.reads == {("a",), ("a", "x"), ("a", "y"), ("c",), ("c", "z")}
    assert [".".join(leaf) for leaf in leaves(recorder)] == ["a.x", "a.y", "b", "c.z"]
