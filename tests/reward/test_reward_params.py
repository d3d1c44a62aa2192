"""Every shipped environment's reward parameters parse into valid configs (checked before any training)."""

from pathlib import Path

import pytest
import yaml

from prefalign.core.objectives import registry
from prefalign.core.reward.training import deep_merge

CONF = Path(__file__).resolve().parents[2] / "conf"


def reward_block(env: str) -> dict:
    path = CONF / env / "parameters_reward.yml"
    return yaml.safe_load(path.read_text())["reward"] if path.exists() else {}


@pytest.mark.parametrize("env", ["base", "ci", "gpu"])
@pytest.mark.parametrize("objective", ["bt", "mmpo", "gpm"])
def test_environment_parameters_are_valid(env, objective):
    block = deep_merge(reward_block("base"), reward_block(env))  # what the soft merge of the env gives
    spec = registry.get(f"reward_{objective}")
    params = spec.parse(deep_merge(block["defaults"], block[objective]))
    assert params.head_config().head == ("gpm" if objective == "gpm" else "scalar")
    assert spec.drops_ties(params) == (objective != "mmpo")
    if env == "gpu":
        assert params.model["name_or_path"] and params.training["mixed_precision"] == "bf16"
    if env == "ci":
        assert params.training["max_steps"] <= 10 and params.model["hidden_size"] <= 32
