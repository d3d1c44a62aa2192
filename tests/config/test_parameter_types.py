"""Configuration errors fail before any work: unknown keys (with the close match), wrong types
(naming the key, the value and the type), and a bad value anywhere in a selected pipeline."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from prefalign.core.models.params import ParameterError, dataclass_from_params, value_matches
from prefalign.core.reward.training import deep_merge
from prefalign.core.training.loop import TrainConfig
from prefalign.pipelines.parameter_checks import PIPELINE_CHECKS, check_pipeline_parameters

CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class Example:
    steps: int = 1
    rate: float = 0.1
    name: str = "a"
    flag: bool = False
    cap: int | None = None
    sources: list[str] | None = None
    extra: dict = field(default_factory=dict)


def _params(env: str) -> dict:
    merged: dict = {}
    for folder in ["base"] + ([env] if env != "base" else []):
        for path in sorted((CONF / folder).glob("parameters*.yml")):
            merged = deep_merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


@pytest.mark.parametrize("value, hint, ok", [
    (3, int, True), (True, int, False), ("3", int, False), (3, float, True), (3.5, float, True),
    ("fast", float, False), (None, int | None, True), ("x", int | None, False),
    (["a", "b"], list[str] | None, True), (["a", 1], list[str], False), ("a", list[str], False),
    ({"k": 1}, dict, True), ([1, 2], tuple[int, int], True), (True, bool, True), (1, bool, False),
])
def test_value_matches_the_annotation(value, hint, ok):
    assert value_matches(value, hint) is ok


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ParameterError) as raised:
        dataclass_from_params(Example, {"steps": "fast"}, "training")
    assert str(raised.value) == "training.steps='fast' has the wrong type (str); it must be int"


def test_bool_is_not_a_count_and_int_is_a_float():
    with pytest.raises(ParameterError, match=r"training.steps=True"):
        dataclass_from_params(Example, {"steps": True}, "training")
    assert dataclass_from_params(Example, {"rate": 1, "cap": None, "sources": ["x"]}, "training").rate == 1


def test_unknown_key_names_the_close_match():
    with pytest.raises(ParameterError) as raised:
        dataclass_from_params(TrainConfig, {"max_step": 5}, "training")
    message = str(raised.value)
    assert "training.max_step (did you mean training.max_steps?)" in message
    assert "max_steps" in message.split("allowed keys of training:")[1]


@pytest.mark.parametrize("env", ["base", "ci", "gpu"])
def test_shipped_configurations_pass_every_check(env):
    assert check_pipeline_parameters(_params(env), ["__default__"]) == list(PIPELINE_CHECKS)


@pytest.mark.parametrize("pipeline, path, value, expected", [
    ("policy", ["policy", "dpo", "objective", "beta"], -1, ["policy.dpo", "objective.beta=-1", "> 0"]),
    ("reward", ["reward", "defaults", "training", "max_steps"], "fast", ["reward.bt", "training.max_steps='fast'", "int"]),
    ("reward", ["reward", "gpm", "head", "gpm_k"], "two", ["reward.gpm", "gpm_k='two'"]),
    ("policy", ["policy", "gpo", "gpo", "sampling", "top_p"], 1.5, ["policy.gpo", "top_p=1.5"]),
    ("policy", ["policy", "sft", "training", "max_step"], 5, ["policy.sft", "max_step", "did you mean training.max_steps"]),
    ("feedback", ["feedback", "sources", "ultrafeedback", "gamma"], -1, ["feedback.sources.ultrafeedback", "gamma=-1"]),
    ("validation", ["validation", "max_quarantine_fraction", "overall"], 2, ["validation", "overall", "2"]),
    ("evaluation", ["evaluation", "splits"], ["tset"], ["evaluation.splits=['tset']", "train, val, test"]),
    ("evaluation", ["evaluation", "generation", "sampling", "max_new_tokens"], "many", ["max_new_tokens='many'", "int"]),
])
def test_a_bad_value_in_a_selected_pipeline_is_named(pipeline, path, value, expected):
    params = copy.deepcopy(_params("ci"))
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParameterError) as raised:
        check_pipeline_parameters(params, [pipeline])
    for text in expected:
        assert text in str(raised.value), str(raised.value)
    # The other pipelines' checks do not read this block: a run of those is not stopped by it.
    check_pipeline_parameters(params, [name for name in PIPELINE_CHECKS if name != pipeline])
