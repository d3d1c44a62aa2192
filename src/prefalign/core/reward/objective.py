"""The reward objective as a ``loss_fn(model, batch)`` for the shared training loop."""

from __future__ import annotations

from typing import Callable

import torch

from prefalign.core.reward.losses import OBJECTIVES, centering_penalty, pair_loss
from prefalign.core.training.batching import PairBatch


def make_reward_loss_fn(objective: str, centering: float = 0.0) -> Callable[[torch.nn.Module, PairBatch], tuple[torch.Tensor, dict]]:
    """BT / margin / MMPO on z (scalar: r_w - r_l; GPM: s / tau), plus optional centering (scalar heads)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES}")

    def loss_fn(model: torch.nn.Module, batch: PairBatch) -> tuple[torch.Tensor, dict]:
        out = model(batch.sequences)  # through the (DDP-wrapped) model's __call__ so gradients sync
        b = len(batch)
        z = out.pair_logits(b).float()
        loss = pair_loss(objective, z, batch.p_chosen, batch.margin).mean()
        if centering and out.rewards is not None:
            loss = loss + centering_penalty(out.rewards[:b].float(), out.rewards[b:].float(), centering)
        metrics = {
            "accuracy": (z > 0).float().mean(),  # strict: a tie counts as wrong (docs/methods.md s5)
            "mean_logit": z.mean(),
            "soft_target_error": (torch.sigmoid(z) - batch.p_chosen).abs().mean(),
        }
        return loss, metrics

    return loss_fn
