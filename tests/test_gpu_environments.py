"""The `gpu` and `gpu_llama8b` environments parse through the project's config loader and dataclasses.

Nothing is downloaded: only the YAML is read (through Kedro's OmegaConfigLoader with the
project's settings, so the soft merge over base is the real one) and parsed.
"""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from prefalign.core.models.backbone import ModelConfig
from prefalign.core.models.tokenizer import TokenizerConfig
from prefalign.core.objectives import registry
from prefalign.core.policy.training import PolicyDataConfig
from prefalign.core.reward.training import deep_merge
from prefalign.core.training.loop import TrainConfig
from prefalign.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[1] / "conf"
CHAT_MODELS = {"gpu": "Qwen/Qwen2.5-0.5B-Instruct", "gpu_llama8b": "meta-llama/Llama-3.1-8B-Instruct"}


def parameters(env: str) -> dict:
    loader = OmegaConfigLoader(str(CONF), env=env, **{k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"})
    return loader["parameters"]


@pytest.mark.parametrize("env", sorted(CHAT_MODELS))
def test_reward_parameters_of_the_gpu_environments(env):
    reward = parameters(env)["reward"]
    for spec in registry.objectives("reward"):
        params = spec.parse(deep_merge(reward["defaults"], reward[spec.name]))
        model = ModelConfig.from_dict(params.model)
        assert model.name_or_path == CHAT_MODELS[env]
        # the model's own tokenizer: no tokenizer override that would replace it
        assert TokenizerConfig.from_dict(params.tokenizer).name_or_path is None
        assert model.gradient_checkpointing and TrainConfig.from_dict(params.training).mixed_precision == "bf16"
        lora = model.lora_settings()
        if env == "gpu_llama8b":
            assert model.dtype == "bfloat16" and lora is not None and lora.r == 16 and not lora.merge_on_save
        else:
            assert lora is None  # 0.5B: full fine-tune


@pytest.mark.parametrize("env", sorted(CHAT_MODELS))
def test_policy_parameters_of_the_gpu_environments(env):
    policy = parameters(env)["policy"]
    defaults = policy["defaults"]
    model = ModelConfig.from_dict(defaults["model"])
    assert model.name_or_path == CHAT_MODELS[env] and model.dtype == "bfloat16" and model.gradient_checkpointing
    assert TokenizerConfig.from_dict(defaults["tokenizer"]).name_or_path is None
    assert (model.lora_settings() is not None) == (env == "gpu_llama8b")
    PolicyDataConfig.from_dict(defaults["data"])
    for spec in registry.objectives("policy"):
        block = policy[spec.name]
        assert TrainConfig.from_dict(block["training"]).mixed_precision == "bf16"
        if spec.config_key:
            spec.parse(block.get(spec.config_key))
