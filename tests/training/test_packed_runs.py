"""The opt-in switches end to end: training.packing / training.share_prompt give the padded run's curve."""

from __future__ import annotations

import copy

import pytest

from prefalign.core.objectives import registry
from prefalign.core.policy.train_policy import reference_logprobs, train_preference
from prefalign.core.config_utils import deep_merge
from prefalign.core.reward.train_reward import fit_tokenizer, select_pairs, train_reward_model
from prefalign.core.training.loop import TrainConfig
from tests.policy.test_training import DATA
from tests.reward.helpers import TINY_MODEL, toy_pairs_frame

SWITCHES = [{"packing": True}, {"share_prompt": True}]
REWARD = {
    "max_length": 48, "max_prompt_length": 24, "batch_size": 8, "eval_batch_size": 16,
    "tokenizer": {"vocab_size": 300}, "model": TINY_MODEL,
    "training": {"max_steps": 6, "learning_rate": 3e-3, "eval_every": 3, "checkpoint_every": 0, "progress_bar": False},
}


def _reward_run(pairs, tmp_path, **training):
    params = registry.get("reward_bt").parse(deep_merge(REWARD, {"training": training}))
    train, _ = select_pairs(pairs, "train", params, None, drop_ties=True)
    val, _ = select_pairs(pairs, "val", params, None, drop_ties=True)
    return train_reward_model(train, val, fit_tokenizer(train, params), params, tmp_path, "bt").metrics


@pytest.mark.parametrize("switch", SWITCHES)
def test_packed_reward_run_equals_padded(tmp_path, switch):
    pairs = toy_pairs_frame(64, 24)
    padded = _reward_run(pairs, tmp_path / "padded")
    packed = _reward_run(pairs, tmp_path / "packed", **switch)
    for key in ("val_loss", "val_accuracy", "train_loss"):
        assert packed[key] == pytest.approx(padded[key], abs=1e-4), key
    assert packed["train_padding_fraction"] < padded["train_padding_fraction"] + 1e-9


@pytest.mark.parametrize("switch", SWITCHES)
def test_packed_dpo_run_equals_padded(tiny_policy, tiny_pairs, tmp_path, switch):
    runs = []
    for name, extra in (("padded", {}), ("packed", switch)):
        training = TrainConfig(max_steps=4, learning_rate=3e-3, eval_every=0, checkpoint_every=0, progress_bar=False, **extra)
        bundle = copy.deepcopy(tiny_policy)
        table = reference_logprobs(bundle, tiny_pairs, DATA, training)
        dpo = registry.get("policy_dpo")
        runs.append((table, train_preference(bundle, tiny_pairs, table, dpo, dpo.parse({"beta": 0.5}), DATA, training, tmp_path / name)))
    (t_a, a), (t_b, b) = runs
    assert (t_a["ref_chosen_logp"] - t_b["ref_chosen_logp"]).abs().max() < 1e-4
    assert a.training_curve["train_loss"].to_list() == pytest.approx(b.training_curve["train_loss"].to_list(), abs=1e-4)
    assert b.metrics["policy"]["train"]["mean_implicit_reward_margin"] == pytest.approx(a.metrics["policy"]["train"]["mean_implicit_reward_margin"], abs=1e-4)
