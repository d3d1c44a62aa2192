"""Multi-process SFT under `accelerate launch` (2 CPU processes, gloo) matches one process."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from prefalign.core.objectives.registry import reference_policy
from prefalign.core.objectives.train import launch
from prefalign.core.policy.training import PolicyDataConfig, train_sft
from prefalign.core.training.loop import TrainConfig
from tests.policy.conftest import TINY_MODEL

DATA = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=8, eval_batch_size=32)
TRAINING = TrainConfig(max_steps=4, learning_rate=5e-3, eval_every=0, checkpoint_every=0, progress_bar=False)


@pytest.mark.slow
def test_two_process_sft_equals_one_process(tiny_pairs, tmp_path):
    single = train_sft(tiny_pairs, {"vocab_size": 300}, TINY_MODEL, DATA, TRAINING, tmp_path / "single", "sft")
    args = {"tokenizer": {"vocab_size": 300}, "model": TINY_MODEL, "data": asdict(DATA),
            "training": asdict(TRAINING), "output_dir": str(tmp_path / "multi_state")}
    multi = launch(reference_policy().namespace, args, {"pairs": tiny_pairs}, num_processes=2, work_dir=tmp_path / "launch")
    assert multi.metrics["num_processes"] == 2
    # each process takes half of every global batch; DDP's gradient mean = the one-process gradient
    assert multi.training_curve["train_loss"].to_list() == pytest.approx(single.training_curve["train_loss"].to_list(), rel=1e-4)
    assert multi.metrics["val_loss"] == pytest.approx(single.metrics["val_loss"], rel=1e-4)
