"""The `gpu` and `gpu_llama8b` environments parse through the project's config loader and dataclasses,
and their precision settings can train (one step at learning rate 5e-7 moves the weights).

Nothing is downloaded: only the YAML is read (through Kedro's OmegaConfigLoader with the
project's settings, so the soft merge over base is the real one) and parsed; the training check
builds a tiny model from config with each environment's dtype / LoRA / precision settings, on CPU.
"""

import tempfile
from pathlib import Path

import pytest
import torch
from kedro.config import OmegaConfigLoader

from prefalign.core.models.backbone import ModelConfig
from prefalign.core.models.tokenizer import TokenizerConfig
from prefalign.core.objectives import registry
from prefalign.core.policy.train_policy import PolicyDataConfig
from prefalign.core.config_utils import deep_merge, lift_sub_blocks, objective_parameters
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
        params = spec.parse(lift_sub_blocks(objective_parameters(reward, spec.name)))
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
    assert model.name_or_path == CHAT_MODELS[env] and model.gradient_checkpointing
    assert TokenizerConfig.from_dict(defaults["tokenizer"]).name_or_path is None
    assert (model.lora_settings() is not None) == (env == "gpu_llama8b")
    # full fine-tune: fp32 weights (bf16 ones cannot take 5e-7 updates); LoRA: a frozen bf16 base
    assert model.dtype == ("bfloat16" if env == "gpu_llama8b" else "float32")
    PolicyDataConfig.from_dict(defaults["data"])
    for spec in registry.objectives("policy"):
        block = objective_parameters(policy, spec.name)
        training = TrainConfig.from_dict(block["training"])
        # bf16 compute on fp32 master weights; dropout off wherever the policy is compared with a reference
        assert training.mixed_precision == "bf16" and training.fp32_master_weights
        assert training.disable_dropout or spec.name == "sft"
        if spec.config_key:
            spec.parse(block.get(spec.config_key))


def _settings(env: str) -> list[tuple[str, dict, dict]]:
    """(family, model params, training params) of every objective of ``env``, deduplicated."""
    params = parameters(env)
    out, seen = [], set()
    blocks = [("policy", params["policy"]["defaults"]["model"], objective_parameters(params["policy"], spec.name)["training"])
              for spec in registry.objectives("policy")]
    blocks += [("reward", objective_parameters(params["reward"], spec.name).get("model", {}),
                objective_parameters(params["reward"], spec.name).get("training", {}))
               for spec in registry.objectives("reward")]
    for family, model, training in blocks:
        model = {k: v for k, v in model.items() if k not in ("name_or_path", "attn_implementation")}
        training = TrainConfig.from_dict(training)
        key = (family, repr(sorted(model.items())), training.mixed_precision, training.fp32_master_weights)
        if key not in seen:
            seen.add(key)
            out.append((family, model, training))
    return out


@pytest.mark.parametrize("env", sorted(CHAT_MODELS))
def test_one_step_at_5e_7_moves_the_weights_in_every_gpu_setting(env):
    """Each setting (model dtype, LoRA, mixed precision, master weights) on a tiny model from config:
    one AdamW step at learning rate 5e-7 changes every trained weight that got a gradient. With the
    former `gpu` policy setting (bf16 weights, no fp32 master copy) it changed 1.06% of them."""
    from dataclasses import replace

    from prefalign.core.models import build_backbone, build_causal_lm, build_tokenizer
    from prefalign.core.policy.batches import make_row_batches
    from prefalign.core.policy.objectives import sft_loss_fn
    from prefalign.core.reward.model import HeadConfig, RewardModel
    from prefalign.core.reward.objectives import make_reward_loss_fn
    from prefalign.core.reward.train_reward import RewardParams
    from prefalign.core.training.batching import make_pair_batches, tokenize_pairs, tokenize_sequences
    from prefalign.core.training.loop import train

    tiny = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
    prompts = [f"question {i} about the sky" for i in range(4)]
    chosen = [f"a clear and kind answer number {i}" for i in range(4)]
    rejected = ["no", "whatever", "go away now", "not telling"]
    tok = build_tokenizer({"vocab_size": 300}, prompts + chosen + rejected)
    grads = {}
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads.update({id(p): p.grad != 0 for g in self.param_groups for p in g["params"] if p.grad is not None})
        return adamw_step(self, *args, **kwargs)

    torch.optim.AdamW.step = recording_step
    try:
        for family, model_params, training in _settings(env):
            one_step = replace(training, max_steps=1, warmup_steps=0, learning_rate=5e-7, eval_every=0,
                               checkpoint_every=0, progress_bar=False, cpu_threads=None)
            if family == "policy":
                model = build_causal_lm({**tiny, **model_params}, tok)
                batches = make_row_batches(tokenize_sequences(tok, prompts, chosen, 48, 24), 4, tok.pad_token_id)
                loss_fn = sft_loss_fn
            else:
                model = RewardModel(build_backbone({**tiny, **model_params}, tok), HeadConfig())
                batches = make_pair_batches(tokenize_pairs(tok, prompts, chosen, rejected, max_length=48, max_prompt_length=24),
                                            4, tok.pad_token_id)
                loss_fn = make_reward_loss_fn(RewardParams())
            before = {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}
            grads.clear()
            with tempfile.TemporaryDirectory() as out:
                trained = train(model, batches, [], loss_fn, one_step, out).model
            moved = total = 0
            for name, p in trained.named_parameters():
                if name in before and id(p) in grads:
                    got_gradient = grads[id(p)]
                    moved += int(((p.detach().float() != before[name]) & got_gradient).sum())
                    total += int(got_gradient.sum())
            assert total > 0
            assert moved / total > 0.99, (env, family, model_params.get("dtype"), moved / total)
    finally:
        torch.optim.AdamW.step = adamw_step


@pytest.mark.parametrize("env", sorted(CHAT_MODELS))
def test_gpu_environments_load_a_local_model_directory_offline(env, tmp_path, monkeypatch):
    """With ``model.name_or_path`` set to a local directory (docs/distributed.md, "Offline"), the `gpu`
    environments' reward and policy loading paths read it with the Hub switched off: no download is
    attempted (the Hub id of the environment is not in any cache here, so a Hub lookup would fail)."""
    import polars as pl
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from prefalign.core.models import build_backbone, build_causal_lm, build_tokenizer
    from prefalign.core.models.tokenizer import tokenizer_params_for_model
    from prefalign.core.reward.train_reward import fit_tokenizer
    from tests.reward.offline_tokenizers import chatml_tokenizer, llama3_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    tokenizer = chatml_tokenizer() if env == "gpu" else llama3_tokenizer()
    shape = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128}
    config = Qwen2Config(**shape, tie_word_embeddings=True) if env == "gpu" else LlamaConfig(**shape)
    torch.manual_seed(0)
    saved = AutoModelForCausalLM.from_config(config)
    local = tmp_path / "model"
    saved.save_pretrained(local)
    tokenizer.save_pretrained(local)
    embeddings = saved.get_input_embeddings().weight.detach().float()

    params = parameters(env)
    reward_spec = registry.objectives("reward")[0]
    reward = reward_spec.parse(lift_sub_blocks(deep_merge(objective_parameters(params["reward"], reward_spec.name),
                                                          {"model": {"name_or_path": str(local)}})))
    pairs = pl.DataFrame({"prompt": ["What is tea?"], "chosen": ["A drink."], "rejected": ["No."]})
    reward_tokenizer = fit_tokenizer(pairs, reward)
    assert reward_tokenizer.get_vocab() == tokenizer.get_vocab()
    backbone = build_backbone(reward.model, reward_tokenizer)
    policy_model = {**params["policy"]["defaults"]["model"], "name_or_path": str(local)}
    policy_tokenizer = build_tokenizer(tokenizer_params_for_model(params["policy"]["defaults"]["tokenizer"], policy_model),
                                       ["What is tea?"])
    policy = build_causal_lm(policy_model, policy_tokenizer)
    for model in (backbone, policy):  # the saved weights, in the environment's dtype
        assert torch.allclose(model.get_input_embeddings().weight.detach().float(), embeddings, atol=1e-2)


def _gpu_commands(markdown: str) -> list[str]:
    """The `kedro run --env gpu ...` commands of the fenced blocks, backslash continuations joined."""
    commands, in_block, current = [], False, ""
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_block, current = not in_block, ""
            continue
        if not in_block:
            continue
        current += line.rstrip().rstrip("\\") + " "
        if not line.rstrip().endswith("\\"):
            if "kedro run --env gpu" in current and "--params" in current:
                commands.append(current)
            current = ""
    return commands


def test_the_distributed_commands_to_copy_parse_with_the_gpu_environment():
    """docs/distributed.md's and README's multi-GPU commands: their --params (parsed by Kedro's own
    parser) merged over the `gpu` environment pass the project's parameter checks, the accelerate
    configs they name exist, and the namespaces are registered."""
    import re

    from kedro.framework.cli.utils import _split_params

    from prefalign.core.policy.train_policy import PolicyDataConfig
    from prefalign.core.training.launch import check_num_processes

    root = CONF.parent
    commands = _gpu_commands((root / "docs" / "distributed.md").read_text()) + _gpu_commands((root / "README.md").read_text())
    assert len(commands) >= 5
    namespaces = {spec.namespace for spec in registry.objectives()}
    for command in commands:
        raw = re.search(r'--params "([^"]+)"', command).group(1).replace("$GPUS", "16")
        overrides = _split_params(None, None, raw)
        params = deep_merge(parameters("gpu"), overrides)
        for namespace in re.findall(r"--namespaces (\S+)", command):
            assert set(namespace.split(",")) <= namespaces, command
        family = next(iter(overrides))
        defaults = params[family]["defaults"]
        assert (root / defaults["accelerate_config"]).is_file(), command
        if family == "reward":
            for spec in registry.objectives("reward"):
                spec.parse(lift_sub_blocks(objective_parameters(params["reward"], spec.name)))  # checks num_processes vs batch_size
        else:
            data = PolicyDataConfig.from_dict(defaults["data"])
            check_num_processes(defaults["num_processes"], data.batch_size, "policy.defaults.num_processes")
