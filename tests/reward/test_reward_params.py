"""Every shipped environment's reward parameters parse into valid configs (checked before any training)."""

from pathlib import Path

import pytest
import yaml

from prefalign.core.objectives import registry
from prefalign.core.config_utils import deep_merge, lift_sub_blocks

CONF = Path(__file__).resolve().parents[2] / "conf"


def reward_block(env: str) -> dict:
    path = CONF / env / "parameters_reward.yml"
    return yaml.safe_load(path.read_text())["reward"] if path.exists() else {}


@pytest.mark.parametrize("env", ["base", "ci", "gpu"])
@pytest.mark.parametrize("objective", ["bt", "mmpo", "gpm"])
def test_environment_parameters_are_valid(env, objective):
    block = deep_merge(reward_block("base"), reward_block(env))  # what the soft merge of the env gives
    spec = registry.get(f"reward_{objective}")
    params = spec.parse(lift_sub_blocks(deep_merge(block["defaults"], block[objective])))
    assert params.head_config().head == ("gpm" if objective == "gpm" else "scalar")
    assert spec.drops_ties(params) == (objective != "mmpo")
    if env == "gpu":
        assert params.model["name_or_path"] and params.training["mixed_precision"] == "bf16"
    if env == "ci":
        assert params.training["max_steps"] <= 10 and params.model["hidden_size"] <= 32


def test_several_sources_pass_through_kedro_params_as_one_string():
    """`kedro run --params "reward.defaults.data.sources=ultrafeedback my_prefs"` (issue 23 item 7): parsed by
    Kedro's own --params parser, the value is one string; the config turns it into the list. The
    list syntax with a comma (`sources=[a,b]`) is split by Kedro itself and never arrives."""
    import click
    from kedro.framework.cli.utils import _split_params

    runtime = _split_params(None, None, "reward.defaults.data.sources=ultrafeedback my_prefs,reward.defaults.data.max_length=64")
    defaults = deep_merge(reward_block("base")["defaults"], runtime["reward"]["defaults"])
    params = registry.get("reward_bt").parse(lift_sub_blocks(defaults))
    assert params.sources == ["ultrafeedback", "my_prefs"] and params.max_length == 64
    with pytest.raises(click.exceptions.UsageError, match="must contain a key and a value"):
        _split_params(click.Context(click.Command("run")), click.Option(["--params"]), "reward.defaults.data.sources=[ultrafeedback,my_prefs]")
