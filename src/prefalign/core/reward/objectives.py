"""The reward objective as a ``loss_fn(model, batch)`` for the shared training loop."""

from __future__ import annotations

from typing import Any

import torch

from prefalign.core.reward.losses import centering_penalty, reward_pair_loss
from prefalign.core.training.batching import PairBatch
from prefalign.core.training.normalisation import StepLoss, Units


def make_reward_loss_fn(params: Any) -> StepLoss:
    """The loop's loss for a reward objective: the s2 logistic loss on z, plus optional centering.

    Args:
        params: the objective's parsed parameters, a core/reward/training.RewardParams (read:
            ``soft_targets``, ``margin_offset``, ``centering``; not imported here, as training.py imports this module).

    Returns:
        A :class:`StepLoss`, ``loss_fn(model, batch[, denominators]) -> (loss per pair, metrics)``:
        both terms are pair-level (summed over the pairs, divided by the step's pair count; by
        default the batch's B); metrics are this batch's accuracy (z > 0 strictly: a tie counts
        wrong, docs/methods.md s5), mean_logit and soft_target_error = mean |sigmoid(z) - p_chosen|.

    Source: docs/methods.md s2 (z = r_w - r_l, or GPM's s / tau of s3).
    """

    def loss_fn(model: torch.nn.Module, batch: PairBatch, denominators: Units) -> tuple[torch.Tensor, dict]:
        out = model(batch.sequences)  # through the (DDP-wrapped) model's __call__ so gradients sync
        b = len(batch)
        z = out.pair_logits(b).float()
        loss = reward_pair_loss(z, batch.p_chosen, batch.margin, params.soft_targets, params.margin_offset).sum() / denominators.examples
        if params.centering and out.rewards is not None:
            loss = loss + centering_penalty(out.rewards[:b].float(), out.rewards[b:].float(), params.centering, denominators.examples)
        metrics = {
            "accuracy": (z > 0).float().mean(),
            "mean_logit": z.mean(),
            "soft_target_error": (torch.sigmoid(z) - batch.p_chosen).abs().mean(),
        }
        return loss, metrics

    return StepLoss(loss_fn)
