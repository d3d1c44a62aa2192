"""The project skeleton: Kedro finds it, and the pairs contract is what docs/architecture.md says."""

from pathlib import Path

import polars as pl
import pytest

from prefalign.core.schema import PAIR_COLUMNS, conform_to_pairs_schema, pair_id_of, prompt_id_of, stable_hash

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_stable_hash_is_fixed_across_runs_and_separates_parts():
    # Fixed values: a change to the hashing would silently re-split every dataset.
    assert stable_hash("a", "b") == "0518b2cdcb9c716334776740"
    assert pair_id_of("p", "c", "r") == "5c4bb2d055e1b311026fc842"
    assert prompt_id_of("x") == "f50cb037cc4545013f96b81f"
    assert stable_hash("ab", "c") != stable_hash("a", "bc")
    assert prompt_id_of("x") != pair_id_of("x", "", "")
    assert len(pair_id_of("p", "c", "r")) == 24


def test_conform_names_the_missing_column():
    with pytest.raises(ValueError, match="margin"):
        conform_to_pairs_schema(pl.DataFrame({c: ["x"] for c in PAIR_COLUMNS if c != "margin"}))


def test_kedro_finds_every_pipeline():
    from kedro.framework.project import configure_project, pipelines

    configure_project("prefalign")
    names = {"feedback", "validation", "reward", "policy", "evaluation"}
    assert set(pipelines) == names | {"__default__", "evaluation_reward"}
    for name in names:
        assert len(pipelines[name].nodes) > 0, name
    assert set(pipelines["__default__"].nodes) == set().union(*(pipelines[n].nodes for n in names))
    # the reward models' evaluation alone: evaluation's nodes by name, none of a policy, not in __default__
    reward_only = {n.name for n in pipelines["evaluation_reward"].nodes}
    assert reward_only < {n.name for n in pipelines["evaluation"].nodes}
    assert {"evaluate_reward_bt", "collect_metrics", "write_report"} <= reward_only
    assert not any("policy" in name or "reference" in name for name in reward_only)
    assert not any(i.startswith("policy_") for i in pipelines["evaluation_reward"].inputs())


def test_every_registered_objective_is_trained_evaluated_and_configured():
    import yaml
    from kedro.framework.project import configure_project, pipelines

    from prefalign.core.objectives import registry

    configure_project("prefalign")
    trained = pipelines["reward"].all_outputs() | pipelines["policy"].all_outputs()
    evaluation_inputs = pipelines["evaluation"].inputs()
    conf = {}
    for family in registry.FAMILIES:
        conf[family] = yaml.safe_load((PROJECT_ROOT / f"conf/base/parameters_{family}.yml").read_text())[family]
    for spec in registry.REGISTRY:
        assert f"{spec.namespace}.model" in trained, spec.namespace
        if spec.evaluation != "reference":
            assert f"{spec.namespace}.model" in evaluation_inputs, spec.namespace
        assert spec.name in conf[spec.family], f"{spec.params_key} has no parameters block"
    # and no parameters block without a registered objective (a stale block would silently do nothing)
    for family, block in conf.items():
        registered = {s.name for s in registry.objectives(family=family)}
        assert set(block) - {"defaults"} == registered, family
