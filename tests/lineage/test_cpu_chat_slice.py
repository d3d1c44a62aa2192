"""A ci-sized slice of `kedro run --env cpu_chat`: a chat model (a tiny Llama with a ChatML template;
SmolLM2-135M-Instruct itself with PREFALIGN_CPU_CHAT_SLICE_REAL=1 once scripts/fetch_pretrained_smollm2.py
fetched it: about 10 minutes on 2 cores instead of about 1) trained as
BT, MMPO and GPM reward models and as SFT, DPO, MMPO, IPO, SimPO, ORPO and GPO policies in its own
chat template, with frozen, cached lower layers, then evaluated with a reward-model judge.

It checks what the environment promises (issue 19): exactly the declared objectives run, every
checkpoint and report lands in the environment's own folders, the report names the checkpoint it
scored and the judge, and the exported tokenizer carries the chat template.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lineage.project_copy import REPO_ROOT, copy_project, subprocess_env

SMOLLM2 = REPO_ROOT / "data/06_models/pretrained/SmolLM2-135M-Instruct"
TINY_LAYERS = 3  # the tiny fallback: freeze_layers must stay below its layer count

# Tiny sizes: a few pairs and steps per objective (the real sizes are conf/cpu_chat's).
SLICE = {
    "reward.defaults.data.max_train_pairs": 12, "reward.defaults.data.max_val_pairs": 6, "reward.defaults.data.train_accuracy_pairs": 6,
    "reward.defaults.data.max_length": 96, "reward.defaults.data.max_prompt_length": 32,
    "reward.defaults.training.max_steps": 3, "reward.defaults.training.warmup_steps": 0,
    "reward.defaults.training.checkpoint_every": 0,
    "policy.defaults.data.max_train_pairs": 8, "policy.defaults.data.max_val_pairs": 4,
    "policy.defaults.data.max_length": 96, "policy.defaults.data.max_prompt_length": 32,
    **{f"policy.{name}.training.max_steps": 2 for name in ("sft", "dpo", "mmpo", "ipo", "simpo", "orpo")},
    **{f"policy.{name}.training.warmup_steps": 0 for name in ("sft", "dpo", "mmpo", "ipo", "simpo", "orpo")},
    "policy.gpo.objective.max_prompts": 2, "policy.gpo.objective.sampling.samples_per_prompt": 2,
    "policy.gpo.objective.sampling.max_new_tokens": 6, "policy.gpo.training.max_steps": 1,
    "evaluation.max_pairs_per_source": 3, "evaluation.rewardbench.max_rows_per_subset": 1,
    "evaluation.generation.max_prompts": 2, "evaluation.generation.sampling.max_new_tokens": 6,
    "evaluation.bootstrap.resamples": 50,
}


def tiny_chat_model(directory: Path) -> None:
    """A 3-layer Llama with a ChatML tokenizer saved as a pretrained directory (no download)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.reward.offline_tokenizers import chatml_tokenizer

    tok = chatml_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=TINY_LAYERS,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)


@pytest.fixture(scope="module")
def cpu_chat_run(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("cpu_chat") / "project")
    model_dir = project / "data/06_models/pretrained/SmolLM2-135M-Instruct"
    params = dict(SLICE)
    if os.environ.get("PREFALIGN_CPU_CHAT_SLICE_REAL") == "1" and (SMOLLM2 / "config.json").exists():
        model_dir.parent.mkdir(parents=True)
        model_dir.symlink_to(SMOLLM2)
    else:
        tiny_chat_model(model_dir)
        params["reward.defaults.model.freeze_layers"] = params["policy.defaults.model.freeze_layers"] = TINY_LAYERS - 1
    runtime = ",".join(f"{key}={value}" for key, value in params.items())
    done = subprocess.run([sys.executable, "-m", "kedro", "run", "--env", "cpu_chat", "--params", runtime],
                          cwd=project, env=subprocess_env(), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return project, done.stdout + done.stderr


def newest(pattern: str, root: Path) -> Path:
    found = sorted(root.glob(pattern))
    assert found, f"nothing at {pattern}"
    return found[-1]


def test_cpu_chat_trains_exactly_its_objectives_into_its_own_folders(cpu_chat_run):
    project, log = cpu_chat_run
    models = project / "data/06_models"
    for name in ("reward_bt", "reward_mmpo", "reward_gpm", "policy_sft", "policy_dpo", "policy_mmpo", "policy_ipo",
                 "policy_simpo", "policy_orpo", "policy_gpo"):
        assert list((models / "cpu_chat" / name / "model").glob("*/model")), f"{name} not saved under cpu_chat/"
    # not declared by cpu_chat: never run; nothing written where the embedded default keeps its models
    assert "reward_gpm_synthetic" not in log and "policy_gpo_bt" not in log
    assert not (models / "reward_bt").exists() and not (models / "policy_sft").exists()
    metrics = json.loads(newest("data/08_reporting/cpu_chat/evaluation_metrics.json/*/evaluation_metrics.json", project).read_text())
    evaluated = set(metrics["models"]) if "models" in metrics else set(metrics)
    assert {"reward_bt", "reward_gpm", "policy_dpo", "policy_gpo"} <= evaluated
    assert not {"reward_gpm_synthetic", "policy_gpo_bt"} & evaluated


def test_cpu_chat_report_names_checkpoints_and_the_judge(cpu_chat_run):
    project, _ = cpu_chat_run
    report = newest("data/08_reporting/cpu_chat/evaluation_report.md/*/evaluation_report.md", project).read_text()
    assert "data/06_models/cpu_chat/reward_bt/model/" in report  # which checkpoint of which environment
    metrics_text = newest("data/08_reporting/cpu_chat/evaluation_metrics.json/*/evaluation_metrics.json", project).read_text()
    assert "reward model reward_bt" in metrics_text  # the win-rate judge, trained on sources the policies never saw


def test_cpu_chat_checkpoints_carry_the_chat_template_and_frozen_layers(cpu_chat_run):
    project, _ = cpu_chat_run
    saved = newest("data/06_models/cpu_chat/reward_bt/model/*/model", project)
    marker = json.loads((saved / "prefalign_checkpoint.json").read_text())
    assert marker["metadata"]["frozen_layers"] >= 1
    template = (saved / "chat_template.jinja").read_text() if (saved / "chat_template.jinja").exists() else \
        json.loads((saved / "tokenizer_config.json").read_text()).get("chat_template", "")
    assert "<|im_start|>" in template
