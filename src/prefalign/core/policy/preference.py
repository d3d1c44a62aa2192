"""The GPO scorer: a trained reward-pipeline model as a (P, K, K) table of preference log-odds.

- GPM (docs/methods.md s3): K forward passes per prompt give v_i and the prompt's gate; the
  table s(y_i > y_k | x) / tau is vector arithmetic (core/reward/heads.gpm_score).
- BT / scalar: s(y_i > y_k) = r_i - r_k, so s_i = r_i - mean(r) (the SPPO-like baseline).
Both are the logit of P(y_i > y_k), the unit of `core/reward/scoring.preference_matrix`. All
P * K responses are scored in length-grouped batches, not prompt by prompt. The preference model
reads the texts with its own tokenizer.
"""

from __future__ import annotations

from typing import Sequence

import torch

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.policy.gpo import PreferenceTableFn


def preference_table_fn(preference_model: ModelBundle, batch_size: int = 32) -> PreferenceTableFn:
    """A PreferenceTableFn over a reward-pipeline checkpoint (GPM or scalar head)."""
    # Imported here so the policy package loads even where the reward package is absent.
    from prefalign.core.reward.heads import gpm_score
    from prefalign.core.reward.scoring import response_embeddings, response_rewards

    model, tokenizer = preference_model.model, preference_model.tokenizer
    if not hasattr(model, "is_gpm"):
        raise ValueError(
            f"the GPO preference model must be a reward-pipeline RewardModel (a reward_<name>.model checkpoint), "
            f"got {type(model).__name__}"
        )

    def table(prompts: Sequence[str], groups: Sequence[Sequence[str]]) -> torch.Tensor:
        k = len(groups[0])
        if any(len(g) != k for g in groups):
            raise ValueError(f"every prompt needs the same number of responses; got {sorted({len(g) for g in groups})}")
        flat_prompts = [x for x, g in zip(prompts, groups) for _ in g]
        flat_responses = [y for g in groups for y in g]
        if not model.is_gpm:
            r = torch.as_tensor(response_rewards(model, tokenizer, flat_prompts, flat_responses, batch_size)).view(-1, k)
            return r[:, :, None] - r[:, None, :]
        v, gate = response_embeddings(model, tokenizer, flat_prompts, flat_responses, batch_size)
        v = torch.as_tensor(v).view(len(prompts), k, -1)
        gate = torch.as_tensor(gate).view(len(prompts), k, -1)[:, :1]  # one gate per prompt
        p = len(prompts)
        v_i = v[:, :, None, :].expand(p, k, k, v.shape[-1]).reshape(p * k * k, -1)
        v_j = v[:, None, :, :].expand(p, k, k, v.shape[-1]).reshape(p * k * k, -1)
        g = gate.expand(p, k * k, gate.shape[-1]).reshape(p * k * k, -1)
        return (gpm_score(v_i, v_j, g) / model.head_config.tau).view(p, k, k)

    return table
