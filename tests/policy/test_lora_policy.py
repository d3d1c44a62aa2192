"""Policies with LoRA (model.lora): SFT trains an adapter, DPO trains it further from the saved checkpoint."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import pytest

import torch
from kedro.io.core import Version
from peft import PeftModel

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.models.lora import adapt_for_training, trainable_parameters
from prefalign.core.objectives import registry
from prefalign.core.objectives.train_objective import launch
from prefalign.core.policy.train_policy import PolicyDataConfig, reference_logprobs, train_preference, train_sft
from prefalign.core.training.loop import TrainConfig
from prefalign.datasets.model_checkpoint import ModelCheckpointDataset
from tests.policy.conftest import TINY_MODEL

DATA = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=8, eval_batch_size=32)
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}


def quick(steps: int, lr: float) -> TrainConfig:
    return TrainConfig(max_steps=steps, learning_rate=lr, eval_every=0, checkpoint_every=0, progress_bar=False, lr_schedule="constant")


def _frozen(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_lora_sft_then_dpo_from_the_saved_adapter(tiny_pairs, tmp_path: Path):
    sft = train_sft(tiny_pairs, {"vocab_size": 300}, {**TINY_MODEL, "lora": LORA}, DATA, quick(20, 1e-2), tmp_path / "sft", "sft")
    assert isinstance(sft.bundle.model, PeftModel)
    assert sft.metrics["final_train_loss"] < sft.training_curve["train_loss"][0]
    trained, total = trainable_parameters(sft.bundle.model)
    assert 0 < trained < total / 2

    ds = ModelCheckpointDataset(filepath=str(tmp_path / "policy_sft" / "model"), version=Version(None, None))
    ds.save(sft.bundle)
    reference = ds.load()
    assert isinstance(reference.model, PeftModel)
    table = reference_logprobs(reference, tiny_pairs, DATA)
    base_before = _frozen(reference.model)
    adapter_before = {n: p.detach().clone() for n, p in reference.model.named_parameters() if "lora_" in n}
    dpo = registry.get("policy_dpo")
    run = train_preference(reference, tiny_pairs, table, dpo, dpo.parse({"beta": 0.5}), DATA, quick(12, 5e-3), tmp_path / "dpo")
    policy = run.bundle.model
    for name, p in policy.named_parameters():  # only the adapter moved; the base stayed frozen
        if name in base_before:
            assert torch.equal(p, base_before[name]), name
    assert any(not torch.equal(p, adapter_before[n]) for n, p in policy.named_parameters() if n in adapter_before)
    assert run.metrics["policy"]["train"]["implicit_accuracy"] > 0.5


def test_fresh_adapters_on_a_fully_fine_tuned_start(tiny_policy):
    start = copy.deepcopy(tiny_policy.model)  # peft injects layers in place: keep the shared fixture clean
    assert adapt_for_training(start, {"lora": None}) is start
    adapted = adapt_for_training(start, {"lora": LORA})
    assert isinstance(adapted, PeftModel)
    assert adapt_for_training(adapted, {"lora": LORA}) is adapted  # an adapter is trained further, not stacked


@pytest.mark.slow
def test_two_process_lora_sft_equals_one_process(tiny_pairs, tmp_path: Path):
    model = {**TINY_MODEL, "lora": LORA}
    training = TrainConfig(max_steps=4, learning_rate=1e-2, eval_every=0, checkpoint_every=0, progress_bar=False)
    single = train_sft(tiny_pairs, {"vocab_size": 300}, model, DATA, training, tmp_path / "single", "sft")
    args = {"tokenizer": {"vocab_size": 300}, "model": model, "data": asdict(DATA),
            "training": asdict(training), "output_dir": str(tmp_path / "multi_state")}
    multi = launch(registry.reference_policy().namespace, args, {"pairs": tiny_pairs}, num_processes=2, work_dir=tmp_path / "launch")
    assert multi.metrics["num_processes"] == 2 and isinstance(multi.bundle.model, PeftModel)
    # DDP over the trainable (adapter) parameters only: same losses as one process
    assert multi.training_curve["train_loss"].to_list() == pytest.approx(single.training_curve["train_loss"].to_list(), rel=1e-4)
