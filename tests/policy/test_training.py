"""Objectives end to end on tiny data: SFT learns, DPO/MMPO beat the reference, GPO iterates."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from prefalign.core.policy.train_policy import (
    GPOConfig,
    PolicyDataConfig,
    reference_logprobs,
    train_gpo,
    train_preference,
    train_sft,
)
from prefalign.core.objectives import registry
from prefalign.core.training.loop import TrainConfig
from tests.policy.conftest import TINY_MODEL

DATA = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=8, eval_batch_size=32)


def quick(steps: int, lr: float) -> TrainConfig:
    return TrainConfig(max_steps=steps, learning_rate=lr, eval_every=0, checkpoint_every=0, progress_bar=False, lr_schedule="constant")


@pytest.fixture(scope="module")
def sft_run(tiny_pairs, tmp_path_factory):
    return train_sft(tiny_pairs, {"vocab_size": 300}, TINY_MODEL, DATA, quick(25, 5e-3), tmp_path_factory.mktemp("sft"), "sft")


def test_sft_lowers_response_loss(sft_run):
    curve = sft_run.training_curve
    assert curve.height == 25
    assert curve["train_loss"][-1] < 0.6 * curve["train_loss"][0]
    assert sft_run.metrics["val_loss"] < curve["train_loss"][0]
    assert sft_run.bundle.model.training is False


@pytest.mark.parametrize("namespace", ["policy_dpo", "policy_mmpo"])
def test_preference_policy_beats_reference_on_train_pairs(tiny_policy, tiny_pairs, tmp_path, namespace):
    # A random-init reference prefers the SHORTER response, and here the chosen one is longer, so
    # its own log-likelihood ranking is wrong: the preference is not already in the reference.
    table = reference_logprobs(tiny_policy, tiny_pairs, DATA)
    spec = registry.get(namespace)
    run = train_preference(tiny_policy, tiny_pairs, table, spec, spec.parse({"beta": 0.5}), DATA, quick(12, 3e-3), tmp_path)
    assert run.metrics["soft_targets"] == (namespace == "policy_mmpo")
    ref_train, pol_train = run.metrics["reference"]["train"], run.metrics["policy"]["train"]
    assert ref_train["implicit_accuracy"] == 0.5  # h == 0 for the reference itself: every pair a tie, counted 1/2
    assert ref_train["reference_logprob_accuracy"] < 0.5
    assert pol_train["implicit_accuracy"] > 0.9
    assert pol_train["mean_implicit_reward_margin"] > 0


def test_one_gpo_iteration_end_to_end(sft_run, tiny_pairs, tmp_path):
    import copy

    calls = []

    def prefer_longer(prompts, groups, prompt_messages=None):
        # a stand-in preference model: log-odds = difference in length / 10 (antisymmetric)
        calls.append(len(prompts))
        lengths = torch.tensor([[len(r) for r in g] for g in groups], dtype=torch.float64)
        return (lengths[:, :, None] - lengths[:, None, :]) / 10

    gpo = GPOConfig(iterations=1, beta=1.0, max_prompts=3, sampling={"samples_per_prompt": 3, "max_new_tokens": 8, "batch_size": 9})
    run = train_gpo(copy.deepcopy(sft_run.bundle), prefer_longer, tiny_pairs, gpo, DATA, quick(2, 1e-3), tmp_path, "length", "gpo")
    gens = run.generations
    assert calls == [3]
    assert gens.height == 9 and set(gens["iteration"]) == {1}
    assert set(gens.columns) >= {"prompt", "response", "score", "pairwise_scores", "old_logp", "new_logp"}
    # s_i is the mean of its row of the K x K table, and the scores of one prompt sum to zero
    for row in gens.iter_rows(named=True):
        assert row["score"] == pytest.approx(sum(row["pairwise_scores"]) / 3)
    sums = gens.group_by("prompt_index").agg(pl.col("score").sum())["score"]
    assert sums.abs().max() < 1e-9
    assert list(run.iteration_bundles) == ["iteration_1"]
    assert run.metrics["iterations"][0]["responses"] == 9
    assert run.training_curve.height == 2
    # where the iteration's time went, each part measured (issue 24 item 4)
    timing = run.metrics["iterations"][0]
    assert all(timing[k] > 0 for k in ("sampling_seconds", "scoring_seconds", "logprob_seconds", "training_seconds"))
    assert timing["sampled_tokens_per_second"] == pytest.approx(gens["n_tokens"].sum() / timing["sampling_seconds"])
