"""Policy losses (docs/methods.md s4). Every function returns the MEAN loss over its rows.

Notation: h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)], where each
log pi is the sum of response-token log-probs (core/policy/logprobs.py). All inputs are 1-D
tensors of shape (B,), one entry per pair; shapes are checked rather than broadcast, because a
(B, 1) against (B,) broadcast silently averages targets over the batch (docs/methods.md s2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefalign.core.policy.logprobs import token_logprobs

PREFERENCE_LOSSES = ("dpo", "mmpo", "cdpo", "ipo")


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(s != first for s in shapes.values()):
        raise ValueError(f"expected 1-D tensors of one shape (B,), got {shapes}")


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Token-level cross-entropy averaged over response tokens only (prompt and padding excluded)."""
    target_mask = response_mask[:, 1:].float()
    n_tokens = target_mask.sum()
    if n_tokens == 0:
        raise ValueError("SFT batch has no response tokens: every response was empty or truncated away")
    return -(token_logprobs(logits, input_ids) * target_mask).sum() / n_tokens


def implicit_reward_margin(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> torch.Tensor:
    """h of docs/methods.md s4, shape (B,)."""
    _check_same_shape(
        policy_chosen=policy_chosen, policy_rejected=policy_rejected,
        ref_chosen=ref_chosen, ref_rejected=ref_rejected,
    )
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def soft_label_loss(h: torch.Tensor, p_chosen: torch.Tensor, beta: float) -> torch.Tensor:
    """MMPO policy loss: -p log sigmoid(beta h) - (1 - p) log sigmoid(-beta h) (section 4).

    Each pair uses its own p. p = 1 is DPO; a constant p = 1 - eps is cDPO.
    """
    _check_same_shape(h=h, p_chosen=p_chosen)
    z = beta * h
    p = p_chosen.to(z.dtype)
    return (-p * F.logsigmoid(z) - (1.0 - p) * F.logsigmoid(-z)).mean()


def dpo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO: -log sigmoid(beta h) (section 4)."""
    return -F.logsigmoid(beta * h).mean()


def cdpo_loss(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """cDPO: the soft-label loss with the constant p = 1 - label_smoothing for every pair."""
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    return soft_label_loss(h, torch.full_like(h, 1.0 - label_smoothing), beta)


def ipo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO: (h - 1/(2 beta))^2 (section 4), h from summed log-probs."""
    return ((h - 1.0 / (2.0 * beta)) ** 2).mean()


def preference_loss(
    name: str, h: torch.Tensor, p_chosen: torch.Tensor, beta: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The configured preference loss by name: dpo | mmpo | cdpo | ipo."""
    if name == "dpo":
        return dpo_loss(h, beta)
    if name == "mmpo":
        return soft_label_loss(h, p_chosen, beta)
    if name == "cdpo":
        return cdpo_loss(h, beta, label_smoothing)
    if name == "ipo":
        return ipo_loss(h, beta)
    raise ValueError(f"unknown policy loss {name!r}; choose one of {PREFERENCE_LOSSES}")


def gpo_scores_from_matrix(preference_scores: torch.Tensor) -> torch.Tensor:
    """s_i = (1/K) sum_k s(y_i > y_k | x) from a (..., K, K) table of preference scores (section 4).

    The diagonal s(y_i > y_i) is 0 for an antisymmetric model, so it may stay in the sum.
    """
    if preference_scores.size(-1) != preference_scores.size(-2):
        raise ValueError(f"preference table must be (..., K, K), got {tuple(preference_scores.shape)}")
    return preference_scores.mean(dim=-1)


def gpo_scores_from_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """BT baseline: s(y_i > y_k) = r_i - r_k, so s_i = r_i - mean_k r_k (SPPO-like, section 4)."""
    return rewards - rewards.mean(dim=-1, keepdim=True)


def gpo_loss(
    policy_logps: torch.Tensor, old_policy_logps: torch.Tensor, scores: torch.Tensor, beta: float
) -> torch.Tensor:
    """GPO square loss: mean over responses of (log pi(y_i|x) - log pi_t(y_i|x) - s_i / beta)^2."""
    _check_same_shape(policy_logps=policy_logps, old_policy_logps=old_policy_logps, scores=scores)
    return ((policy_logps - old_policy_logps - scores.to(policy_logps.dtype) / beta) ** 2).mean()
