"""The GPO scorer over reward checkpoints equals the reward pipeline's own preference_matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefalign.core.policy.losses import gpo_scores_from_matrix
from prefalign.core.policy.preference import preference_table_fn
from prefalign.core.reward.scoring import preference_matrix, response_rewards
from tests.policy.conftest import tiny_reward_bundle

PROMPTS = ["Tell me about cats (0).", "Tell me about tea (10)."]
GROUPS = [["Sure! Cats are lovely.", "No. go away", "cats cats"], ["Tea is warm.", "No.", "Sure! Tea is lovely and warm."]]


@pytest.mark.parametrize("head", ["gpm", "scalar"])
def test_batched_table_equals_per_prompt_preference_matrix(tiny_pairs, head):
    bundle = tiny_reward_bundle(tiny_pairs, head)
    table = preference_table_fn(bundle, batch_size=4)(PROMPTS, GROUPS)
    assert table.shape == (2, 3, 3)
    for p, (prompt, group) in enumerate(zip(PROMPTS, GROUPS)):
        expected = preference_matrix(bundle.model, bundle.tokenizer, prompt, group)
        np.testing.assert_allclose(table[p].numpy(), expected, atol=1e-5)
    assert torch.allclose(table, -table.transpose(1, 2), atol=1e-6)  # antisymmetric
    assert table.abs().sum() > 0


def test_bt_scores_are_reward_minus_mean(tiny_pairs):
    bundle = tiny_reward_bundle(tiny_pairs, "scalar")
    table = preference_table_fn(bundle)(PROMPTS, GROUPS)
    rewards = torch.as_tensor(response_rewards(bundle.model, bundle.tokenizer, [PROMPTS[0]] * 3, GROUPS[0]))
    assert torch.allclose(gpo_scores_from_matrix(table[0]), rewards - rewards.mean(), atol=1e-5)


def test_unequal_groups_and_non_reward_models_are_clear_errors(tiny_pairs, tiny_policy):
    with pytest.raises(ValueError, match="same number of responses"):
        preference_table_fn(tiny_reward_bundle(tiny_pairs, "gpm"))(PROMPTS, [GROUPS[0], GROUPS[1][:2]])
    with pytest.raises(ValueError, match="must be a reward-pipeline RewardModel"):
        preference_table_fn(tiny_policy)
