"""The GPO scorer: a trained reward-pipeline model as a (P, K, K) table of preference log-odds.

The table is ``core/reward/scoring.preference_logits``: each prompt's K responses are rendered with
the prompt's ``prompt_messages`` turns and truncated once (the rule the preference model was trained
with), one forward per response, then ``RewardOutput.preference_logits``:

- GPM (docs/methods.md s3): s(y_i > y_k | x) / tau from the K embeddings and the prompt's gate;
- BT / scalar: s(y_i > y_k) = r_i - r_k, so s_i = r_i - mean(r) (the SPPO-like baseline).

Both are the logit of P(y_i > y_k). All P * K responses are scored in length-grouped batches, not
prompt by prompt. The preference model reads the texts with its own tokenizer.
"""

from __future__ import annotations

from typing import Sequence

import torch

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.policy.gpo import PreferenceTableFn


def preference_table_fn(preference_model: ModelBundle, batch_size: int = 32) -> PreferenceTableFn:
    """A PreferenceTableFn over a reward-pipeline checkpoint (GPM or scalar head).

    Args:
        preference_model: a reward-pipeline ModelBundle (RewardModel and its tokenizer);
        batch_size: sequences per forward when scoring.

    Returns:
        ``table(prompts [P], groups [P][K], prompt_messages [P] | None) -> [P, K, K]`` float64 log-odds.

    Raises:
        ValueError: the checkpoint is not a reward-pipeline model.
    """
    # Imported here so the policy package loads even where the reward package is absent.
    from prefalign.core.reward.model import RewardModel
    from prefalign.core.reward.scoring import preference_logits

    model, tokenizer = preference_model.model, preference_model.tokenizer
    if not isinstance(model, RewardModel):
        raise ValueError(
            f"the GPO preference model must be a reward-pipeline RewardModel (a reward_<name>.model checkpoint), "
            f"got {type(model).__name__}"
        )

    def table(prompts: Sequence[str], groups: Sequence[Sequence[str]], prompt_messages=None) -> torch.Tensor:
        return preference_logits(model, tokenizer, list(prompts), [list(g) for g in groups], prompt_messages, batch_size)

    return table
