"""The one soft-label logistic loss shared by every pairwise logistic objective (docs/methods.md s2).

Reward BT / margin offset / GPM, DPO, SimPO and ORPO's odds-ratio term all have the hard form
-log sigmoid(z) for their own pair logit z. With soft targets the hard label 1 becomes each pair's
p = P(y_w > y_l): L = -p log sigmoid(z) - (1 - p) log sigmoid(-z) (MMPO, arXiv 2410.03145, s3).
p = 1 reproduces the hard loss exactly, so the hard objectives call the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_pair_vectors(**tensors: torch.Tensor) -> None:
    """Raise unless every tensor is 1-D with one shape [B].

    Args:
        tensors: name -> tensor, the names used in the message.

    Returns:
        None.

    Raises:
        ValueError: naming every shape, when one is not [B] or they differ. A (B, 1) against (B,)
            broadcast would silently average the targets over the batch (docs/methods.md s2).
    """
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(s != first for s in shapes.values()):
        raise ValueError(f"expected 1-D tensors of one shape [B] (one entry per pair), got {shapes}")


def soft_label_logistic_loss(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Per-pair soft-label cross-entropy -p log sigmoid(z) - (1 - p) log sigmoid(-z).

    Args:
        z: [B] pair logits (log-odds that y_w beats y_l), in nats.
        p: [B] targets P(y_w > y_l) in [0, 1]; 1 gives the hard loss -log sigmoid(z) exactly.

    Returns:
        [B] losses in nats. dL/dz = sigmoid(z) - p, zero at z = logit(p).

    Raises:
        ValueError: when z and p are not both of shape [B], or a p lies outside [0, 1].

    Source: docs/methods.md s2 (MMPO, arXiv 2410.03145).
    """
    check_pair_vectors(z=z, p=p)
    p = p.to(z.dtype)
    if bool(((p < 0) | (p > 1)).any()):
        raise ValueError(f"soft targets must lie in [0, 1]; got min {float(p.min())}, max {float(p.max())}")
    return -(p * F.logsigmoid(z) + (1.0 - p) * F.logsigmoid(-z))


def pair_targets(p_chosen: torch.Tensor, soft_targets: bool, label_smoothing: float = 0.0) -> torch.Tensor:
    """The target p each pair is trained towards.

    Args:
        p_chosen: [B] the pairs table's soft targets (docs/methods.md s1).
        soft_targets: True: each pair's own p_chosen (MMPO). False: a hard label.
        label_smoothing: eps of cDPO (docs/methods.md s4.2): the hard label becomes 1 - eps.

    Returns:
        [B] targets in [0, 1] (ones for a hard label without smoothing).

    Raises:
        ValueError: when soft targets and label smoothing are both asked for (both set p), or eps
            is outside [0, 0.5].
    """
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 0.5]")
    if soft_targets and label_smoothing:
        raise ValueError(
            f"soft_targets=true and label_smoothing={label_smoothing} both set the target p; choose one"
        )
    if soft_targets:
        return p_chosen
    return torch.full_like(p_chosen, 1.0 - label_smoothing)
