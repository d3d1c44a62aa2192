"""Reward-model losses (docs/methods.md s2). Every function works on per-pair vectors of shape [B].

z = r(x, y_w) - r(x, y_l) for a scalar model, or s(y_w > y_l | x) / tau for GPM (docs/methods.md s3).
Shapes are checked, never broadcast: the MMPO reference code compared rewards of shape (B, 1)
with p of shape (B,), which broadcast to (B, B) and silently averaged p over the batch.
"""

from __future__ import annotations

import torch

from prefalign.core.objectives.soft_label import check_pair_vectors, pair_targets, soft_label_logistic_loss


def reward_pair_loss(
    z: torch.Tensor, p_chosen: torch.Tensor, margin: torch.Tensor, soft_targets: bool, margin_offset: bool
) -> torch.Tensor:
    """Per-pair reward loss: the logistic loss on z (or z - m), hard or with soft targets.

    Args:
        z: [B] pair logits (reward gap, or GPM score / tau), nats.
        p_chosen: [B] soft targets in [0.5, 1] (docs/methods.md s1); used when ``soft_targets``.
        margin: [B] margins in the source's unit, NaN where the source has none.
        soft_targets: True: -p log sigmoid(.) - (1 - p) log sigmoid(-.) (MMPO); False: -log sigmoid(.) (BT).
        margin_offset: True: the logit is z - m (Llama 2's margin loss, arXiv 2307.09288 eq. 2).

    Returns:
        [B] losses in nats.

    Raises:
        ValueError: on a shape mismatch, or a null (NaN) margin under ``margin_offset``.

    Source: docs/methods.md s2.
    """
    check_pair_vectors(z=z, p_chosen=p_chosen, margin=margin)
    if margin_offset:
        if torch.isnan(margin).any():
            raise ValueError(
                "margin_offset needs a margin for every pair, but some are null (binary feedback); "
                "set margin_offset: false, or filter those sources out"
            )
        z = z - margin.to(z.dtype)
    return soft_label_logistic_loss(z, pair_targets(p_chosen, soft_targets))


def centering_penalty(r_chosen: torch.Tensor, r_rejected: torch.Tensor, coefficient: float,
                      denominator: float | None = None) -> torch.Tensor:
    """Reward centering c * mean((r_w + r_l)^2) (Eisenstein et al., arXiv 2312.09244), a pair-level term.

    Args:
        r_chosen, r_rejected: [B] scalar rewards.
        coefficient: c (about 0.01).
        denominator: pairs to divide the summed penalty by (the training step's); None = B (the batch mean).

    Returns:
        A scalar tensor (nats^2 times c).

    Raises:
        ValueError: when the two reward vectors are not both [B].

    Source: docs/methods.md s2.
    """
    check_pair_vectors(r_chosen=r_chosen, r_rejected=r_rejected)
    squares = (r_chosen + r_rejected) ** 2
    return coefficient * squares.sum() / (squares.numel() if denominator is None else denominator)
