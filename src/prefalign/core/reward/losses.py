"""Reward-model losses (docs/methods.md s2). Every function works on per-pair vectors of shape [B].

z = r(x, y_w) - r(x, y_l) for a scalar model, or s(y_w > y_l | x) / tau for GPM (section 3).
Shapes are checked, never broadcast: the MMPO reference code compared rewards of shape (B, 1)
with p of shape (B,), which broadcast to (B, B) and silently averaged p over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECTIVES = ("bt", "margin", "mmpo")


def _check_pairwise(z: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if z.ndim != 1 or other.shape != z.shape:
        raise ValueError(f"z must have shape [B] and {name} the same shape; got z {tuple(z.shape)}, {name} {tuple(other.shape)}")


def bt_loss(z: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry, docs/methods.md s2: L = -log sigmoid(z). Returns [B]."""
    if z.ndim != 1:
        raise ValueError(f"z must have shape [B], got {tuple(z.shape)}")
    return -F.logsigmoid(z)


def margin_offset_loss(z: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Margin offset (Llama-2 / TRL ``margin`` baseline), docs/methods.md s2: L = -log sigmoid(z - m). Returns [B]."""
    _check_pairwise(z, margin, "margin")
    if torch.isnan(margin).any():
        raise ValueError(
            "margin-offset loss needs a margin for every pair, but some are null (binary feedback); "
            "use objective 'mmpo' or 'bt', or filter those sources out"
        )
    return -F.logsigmoid(z - margin)


def mmpo_loss(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """MMPO soft-label cross-entropy, docs/methods.md s2: L = -p log sigmoid(z) - (1 - p) log sigmoid(-z). Returns [B].

    dL/dz = sigmoid(z) - p, zero at z = logit(p); with p = 1 it is exactly ``bt_loss``.
    """
    _check_pairwise(z, p, "p")
    return -(p * F.logsigmoid(z) + (1.0 - p) * F.logsigmoid(-z))


def centering_penalty(r_chosen: torch.Tensor, r_rejected: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Reward centering, docs/methods.md s2: c * mean((r_w + r_l)^2). A scalar."""
    _check_pairwise(r_chosen, r_rejected, "r_rejected")
    return coefficient * ((r_chosen + r_rejected) ** 2).mean()


def pair_loss(objective: str, z: torch.Tensor, p: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Per-pair loss [B] for ``objective`` in OBJECTIVES."""
    if objective == "bt":
        return bt_loss(z)
    if objective == "margin":
        return margin_offset_loss(z, margin)
    if objective == "mmpo":
        return mmpo_loss(z, p)
    raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES}")
