"""Configuration errors fail before any work: unknown keys (with the close match), wrong types
(naming the key, the value and the type), and a bad value anywhere in a selected pipeline."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from prefalign.core.models.params import ParameterError, dataclass_from_params, value_matches
from prefalign.core.config_utils import deep_merge
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
    ("policy", ["policy", "gpo", "objective", "sampling", "top_p"], 1.5, ["policy.gpo", "top_p=1.5"]),
    ("policy", ["policy", "sft", "training", "max_step"], 5, ["policy.sft", "max_step", "did you mean training.max_steps"]),
    ("feedback", ["feedback", "sources", "ultrafeedback", "gamma"], -1, ["feedback.sources.ultrafeedback", "gamma=-1"]),
    # issue 21: keys that only the feedback nodes read are checked before the run too
    ("feedback", ["feedback", "split", "heldout_sources"], ["hh_rlfh"], ["heldout_sources", "hh_rlfh", "not sources"]),
    ("feedback", ["feedback", "conflicts", "within_source"], "vote", ["feedback.conflicts.within_source='vote'"]),
    ("feedback", ["feedback", "max_rejected_fraction_per_file"], 1.5, ["max_rejected_fraction", "1.5"]),
    ("feedback", ["feedback", "sources", "synthetic_scalar", "weights", "humour"], 1.0, ["synthetic_scalar", "humour"]),
    # issue 22: the streaming engine's settings, checked before the run
    ("feedback", ["feedback", "engine"], "lazy", ["feedback.engine='lazy'", "in_memory", "streaming"]),
    ("feedback", ["feedback", "streaming", "chunk_records"], 0, ["feedback.streaming.chunk_records=0", ">= 1"]),
    ("validation", ["validation", "batch_rows"], 0, ["validation.batch_rows=0", ">= 1"]),
    ("policy", ["policy", "dpo", "work_dir"], "x", ["policy.dpo.work_dir", "checkpoint_dir"]),  # the former name
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


# ---------------------------------------------------------------------------------------------
# One source of truth: every value a node rejects after training is rejected before the run.
# The guards below are what the nodes do with each value when they run (the metric code itself,
# not the config parser the check uses); the test tries a grid of bad values on every leaf of the
# evaluation block and on the reward / policy keys whose checks lived only in the nodes.
# ---------------------------------------------------------------------------------------------
BAD_VALUES = [-1, 0, 5, 9, 16, 10**9, 1.5, "bogus", None, True, [], {}]


def _evaluation_node_guards(params: dict) -> None:
    import numpy as np
    import polars as pl

    from prefalign.core.evaluation import metrics, statistics
    from prefalign.core.evaluation.rewardbench import prepare_rows
    from prefalign.core.policy.generation import SamplingConfig

    ev = params["evaluation"]
    table = pl.DataFrame({"source": ["a", "a", "b"], "split": ["test"] * 3})
    for key in ("splits", "heldout_splits"):  # select_test_pairs / select_heldout_pairs
        splits = ev[key]
        if table.filter(pl.col("split").is_in(splits)).is_empty() and key == "splits":
            raise ValueError("no rows")
    cap = ev["max_pairs_per_source"]  # the seeded cap per source
    if cap:
        table.filter(pl.int_range(pl.len()).shuffle(seed=ev["seed"]).over("source") < cap)
    metrics.reliability_bins(np.zeros(2), np.ones(2), ev["n_bins"])  # evaluate_pair_scores
    boot = statistics.BootstrapConfig.from_params(ev["bootstrap"])
    statistics.percentile_interval(np.arange(10.0), boot.level)
    rb = ev["rewardbench"]
    rows = pl.DataFrame({"prompt": ["p", "q"], "chosen": ["a", "b"], "rejected": ["c", "d"], "subset": ["s", "s"]})
    prepare_rows(rows, rb["max_rows_per_subset"], rb["seed"])
    {s: list(members) for s, members in rb["sections"].items()}  # rewardbench_scores reads the mapping
    {s: float(w) for s, w in rb["subset_weights"].items()}
    pl.DataFrame({"prompt": ["p"]}).head(ev["generation"]["max_prompts"])  # generation_prompts
    SamplingConfig.from_dict(ev["generation"]["sampling"])  # reference_samples
    float(ev["implicit_reward_beta"])


def _policy_and_reward_node_guards(params: dict) -> None:
    from pathlib import Path

    import polars as pl

    from prefalign.core.policy.gpo import make_gpo_loss_fn
    from prefalign.core.reward.heads import GPMHead

    for name in ("gpm", "gpm_synthetic"):
        k = params["reward"][name]["head"]["gpm_k"]
        GPMHead(4, min(k, 64) if isinstance(k, int) else k)  # built after the tokenizer (a huge k: memory, not a rule)
    for name in ("gpo", "gpo_bt"):
        block = params["policy"][name]
        make_gpo_loss_fn(block["objective"]["beta"])  # after the preference model scored the samples
        if block["objective"]["max_prompts"] is not None and pl.DataFrame({"p": range(5)}).head(block["objective"]["max_prompts"]).is_empty():
            raise ValueError("no training prompts for GPO to sample from")  # train_gpo on prompts.head(max_prompts)
        list(range(0, 8, block["scoring_batch_size"]))  # preference_table_fn's batches
    Path(params["policy"]["defaults"]["checkpoint_dir"])  # _work_dir


def _leaves(tree: dict, path: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key)


GUARDED = [("evaluation", path, _evaluation_node_guards) for path in _leaves(_params("ci")["evaluation"], ("evaluation",))]
GUARDED += [("reward", ("reward", name, "head", "gpm_k"), _policy_and_reward_node_guards) for name in ("gpm", "gpm_synthetic")]
GUARDED += [("policy", ("policy", name, "objective", key), _policy_and_reward_node_guards)
            for name in ("gpo", "gpo_bt") for key in ("beta", "max_prompts")]
GUARDED += [("policy", ("policy", "gpo", "scoring_batch_size"), _policy_and_reward_node_guards)]
GUARDED += [("policy", ("policy", "defaults", "checkpoint_dir"), _policy_and_reward_node_guards)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # polars on the bad split values
@pytest.mark.parametrize("pipeline, path, node_guards", GUARDED, ids=[".".join(g[1]) for g in GUARDED])
def test_what_a_node_rejects_the_check_rejects_first(pipeline, path, node_guards):
    base = _params("ci")
    node_guards(base)  # the shipped values pass the nodes
    missed = []
    for bad in BAD_VALUES:
        params = copy.deepcopy(base)
        node = params
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bad
        try:
            node_guards(params)
        except Exception:  # the node would fail on it, after the pipelines before it ran
            try:
                check_pipeline_parameters(params, [pipeline])
            except ParameterError as error:
                assert path[-1] in str(error), f"{'.'.join(path)}={bad!r}: the error does not name the key: {error}"
            else:
                missed.append(bad)
    assert not missed, f"{'.'.join(path)}: the check before the run accepts {missed}, which the node rejects"


def test_evaluation_n_bins_outside_10_to_15_fails_before_the_run():
    params = copy.deepcopy(_params("ci"))
    params["evaluation"]["n_bins"] = 5
    with pytest.raises(ParameterError, match=r"evaluation.n_bins=5: .* 10-15"):
        check_pipeline_parameters(params, ["evaluation"])
