"""Multi-process SFT and GPO under `accelerate launch` (2 CPU processes, gloo) match one process."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest
import torch

from prefalign.core.objectives.registry import reference_policy
from prefalign.core.objectives.train_objective import launch
from prefalign.core.policy.train_policy import PolicyDataConfig, train_sft
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


@pytest.mark.slow
def test_two_process_gpo_equals_one_process(tiny_pairs, tiny_policy, tmp_path):
    """GPO goes through the same launcher: 2 gloo processes sample and score the same responses
    and split each training batch, so every iteration's samples, scores, losses and final weights
    equal the one-process run's."""
    from prefalign.core.objectives.registry import get
    from tests.policy.conftest import tiny_reward_bundle

    spec = get("policy_gpo")
    config = spec.parse({"iterations": 2, "beta": 1.0, "max_prompts": 3,
                         "sampling": {"samples_per_prompt": 4, "max_new_tokens": 6, "batch_size": 12}})
    data = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=4, eval_batch_size=16)
    training = TrainConfig(max_steps=2, learning_rate=1e-3, eval_every=0, checkpoint_every=0, progress_bar=False)
    preference = tiny_reward_bundle(tiny_pairs, "gpm")

    def args(name):
        return {"config": asdict(config), "data": asdict(data), "training": asdict(training),
                "output_dir": str(tmp_path / name), "scoring_batch_size": 8, "preference_model_name": "reward_gpm.model"}

    start = {k: v.clone() for k, v in tiny_policy.model.state_dict().items()}
    single = launch(spec.namespace, args("single"), {"pairs": tiny_pairs},
                    {"reference": copy.deepcopy(tiny_policy), "preference": preference})
    assert all(torch.equal(v, tiny_policy.model.state_dict()[k]) for k, v in start.items())  # a copy trained
    multi = launch(spec.namespace, args("multi"), {"pairs": tiny_pairs}, {"reference": tiny_policy, "preference": preference},
                   num_processes=2, work_dir=tmp_path / "launch")
    assert multi.metrics["num_processes"] == 2
    assert multi.generations["response"].to_list() == single.generations["response"].to_list()
    assert multi.generations["score"].to_list() == pytest.approx(single.generations["score"].to_list(), abs=1e-9)
    assert multi.training_curve["train_loss"].to_list() == pytest.approx(single.training_curve["train_loss"].to_list(), rel=1e-4)
    assert single.training_curve.height == 4  # 2 iterations x 2 steps
    assert list(multi.iteration_bundles) == list(single.iteration_bundles) == ["iteration_1", "iteration_2"]
    final_single, final_multi = single.bundle.model.state_dict(), multi.bundle.model.state_dict()
    for key, value in final_single.items():
        torch.testing.assert_close(final_multi[key], value, rtol=1e-4, atol=1e-6)
    # the policy moved (the test would pass trivially on an untrained copy otherwise)
    assert any(not torch.equal(final_single[k], start[k]) for k in start)
