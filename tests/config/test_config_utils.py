"""The one deep merge of parameter dicts (core/config_utils.py) and the shape helpers built on it."""

import pytest

from prefalign.core.config_utils import deep_merge, lift_sub_blocks, objective_parameters


def test_deep_merge_merges_mappings_at_every_depth_and_replaces_everything_else():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [1, 2], "c": 3, "d": {"k": 1}}
    override = {"a": {"y": {"q": 20}, "z": 5}, "b": [9], "c": None, "d": 7, "e": {"new": True}}
    assert deep_merge(base, override) == {
        "a": {"x": 1, "y": {"p": 1, "q": 20}, "z": 5},  # merged two levels down; untouched keys stay
        "b": [9],                                       # a list replaces, never concatenates
        "c": None,                                      # null replaces a value
        "d": 7,                                         # a scalar replaces a mapping
        "e": {"new": True},
    }


def test_deep_merge_changes_neither_argument_and_shares_nothing_with_them():
    base, override = {"a": {"x": [1]}}, {"a": {"y": [2]}}
    merged = deep_merge(base, override)
    merged["a"]["x"].append(99)
    merged["a"]["y"].append(99)
    assert base == {"a": {"x": [1]}} and override == {"a": {"y": [2]}}


def test_deep_merge_takes_none_for_empty():
    assert deep_merge(None, {"a": 1}) == {"a": 1} and deep_merge({"a": 1}, None) == {"a": 1}


def test_objective_parameters_are_the_defaults_under_the_objective_block():
    family = {"defaults": {"data": {"batch_size": 8, "max_length": 64}, "training": {"max_steps": 100}},
              "sft": {"training": {"max_steps": 600}, "objective": {"beta": 0.1}}}
    assert objective_parameters(family, "sft") == {"data": {"batch_size": 8, "max_length": 64},
                                                   "training": {"max_steps": 600}, "objective": {"beta": 0.1}}
    assert objective_parameters(family, "dpo") == family["defaults"]  # no block: the defaults alone


def test_lift_sub_blocks_moves_data_and_objective_keys_to_the_top():
    block = {"data": {"batch_size": 8}, "objective": {"soft_targets": True}, "model": {"hidden_size": 32}}
    assert lift_sub_blocks(block) == {"batch_size": 8, "soft_targets": True, "model": {"hidden_size": 32}}
    assert lift_sub_blocks({"data": None}) == {} and lift_sub_blocks(None) == {}


def test_lift_sub_blocks_accepts_each_key_only_where_it_belongs():
    """One shape: ``soft_targets`` under ``objective``, ``batch_size`` under ``data``, never at the top."""
    with pytest.raises(ValueError, match=r"^reward.batch_size belongs under reward.data: write it as reward.data.batch_size$"):
        lift_sub_blocks({"batch_size": 4, "data": {"batch_size": 8}})
    with pytest.raises(ValueError, match=r"^reward.mmpo.soft_targets belongs under reward.mmpo.objective"):
        lift_sub_blocks({"soft_targets": True}, where="reward.mmpo")
    with pytest.raises(ValueError, match=r"^reward.data.margin_offset belongs under reward.objective"):
        lift_sub_blocks({"data": {"margin_offset": True}})
    with pytest.raises(ValueError, match=r"^unknown key reward.objective.soft_target \(did you mean reward.objective.soft_targets\?\); the keys of reward.objective are "
                                         r"soft_targets, margin_offset, centering$"):
        lift_sub_blocks({"objective": {"soft_target": True}})
    with pytest.raises(ValueError, match=r"^unknown key reward.data.batchsize \(did you mean reward.data.batch_size\?\)"):
        lift_sub_blocks({"data": {"batchsize": 4}})
    with pytest.raises(ValueError, match=r"reward.objective=3 must be a mapping"):
        lift_sub_blocks({"objective": 3})
    assert lift_sub_blocks({"head": {"gpm_k": 2}, "model": {"seed": 1}}) == {"head": {"gpm_k": 2}, "model": {"seed": 1}}


def test_a_contradicted_defining_setting_is_named_where_it_is_written():
    """reward.mmpo is defined by soft_targets: true; the error names reward.mmpo.objective.soft_targets."""
    from prefalign.core.objectives import registry

    spec = registry.get("reward_mmpo")
    with pytest.raises(ValueError, match=r"^reward.mmpo.objective.soft_targets=False contradicts the objective: .*"
                                         r"remove reward.mmpo.objective.soft_targets \(the objective sets it\), or use reward.bt"):
        spec.parse(lift_sub_blocks({"objective": {"soft_targets": False}}, where="reward.mmpo"))
    with pytest.raises(ValueError, match=r"^policy.mmpo.objective.soft_targets=False contradicts"):
        registry.get("policy_mmpo").parse({"soft_targets": False})


def test_reward_messages_name_keys_as_the_block_writes_them():
    """RewardParams is flat; its messages name data./objective. paths, and batch_size 0 is blamed on itself."""
    from prefalign.core.reward.train_reward import RewardParams

    with pytest.raises(ValueError, match=r"^reward.data.batch_size='abc' has the wrong type \(str\); it must be int$"):
        RewardParams.from_dict({"batch_size": "abc"})
    with pytest.raises(ValueError, match=r"^reward.objective.soft_targets='maybe' has the wrong type"):
        RewardParams.from_dict({"soft_targets": "maybe"})
    with pytest.raises(ValueError, match=r"^reward.data.batch_size=0 must be >= 1$"):
        RewardParams.from_dict({"batch_size": 0})
    with pytest.raises(ValueError, match=r"^unknown key reward.objectiv \(did you mean reward.objective\?\); allowed keys "
                                         r"of reward: objective, head, data, num_processes"):
        RewardParams.from_dict({"objectiv": {}})


def test_generation_prompt_sources_from_one_command_line_string():
    """Kedro's --params passes no lists: "alpaca_eval vicuna_eval" is read as two sources, as data.sources is."""
    from prefalign.core.evaluation.config import GenerationConfig

    config = GenerationConfig.from_params({"prompt_sources": "alpaca_eval vicuna_eval"}, "evaluation.generation")
    assert config.prompt_sources == ["alpaca_eval", "vicuna_eval"]
    assert GenerationConfig.from_params({"prompt_sources": ["a"]}, "evaluation.generation").prompt_sources == ["a"]
    with pytest.raises(ValueError, match=r"^evaluation.generation.prompt_sources: '  ' is not a list of source names"):
        GenerationConfig.from_params({"prompt_sources": "  "}, "evaluation.generation")
