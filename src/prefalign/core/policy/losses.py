"""Policy losses (docs/methods.md s4). Every function returns the MEAN loss over its rows.

Notation: h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)], where each
log pi is the sum of response-token log-probs (core/policy/logprobs.py). All inputs are 1-D
tensors of shape (B,), one entry per pair; shapes are checked rather than broadcast, because a
(B, 1) against (B,) broadcast silently averages targets over the batch (docs/methods.md s2).
"""

from __future__ import annotations

import torch

from prefalign.core.objectives.soft_label import check_pair_vectors, soft_label_logistic_loss
from prefalign.core.policy.logprobs import masked_sequence_logprobs


def _targets(p: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(like) if p is None else p.to(like.dtype)


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy averaged over response tokens only (prompt and padding excluded).

    Args:
        logits: (B, T, V) next-token logits; input_ids: (B, T); response_mask: (B, T), 1 on response tokens.

    Returns:
        Scalar mean NLL per response token (nats): :func:`sft_loss_from_logprobs` of the rows' sums.

    Raises:
        ValueError: when the batch has no response token (every response empty or truncated away).

    Source: docs/methods.md s4.1.
    """
    return sft_loss_from_logprobs(masked_sequence_logprobs(logits, input_ids, response_mask), response_mask[:, 1:].sum(dim=-1))


def sft_loss_from_logprobs(logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """The SFT loss from per-sequence sums: -sum_b log pi(y_b|x_b) / sum_b |y_b|.

    Args:
        logps: (B,) summed response-token log-probs (nats); n_tokens: (B,) response token counts.

    Returns:
        Scalar mean NLL per response token (nats).

    Raises:
        ValueError: when the batch has no response token (every response empty or truncated away).

    Source: docs/methods.md s4.1.
    """
    total = n_tokens.sum()
    if total == 0:
        raise ValueError("SFT batch has no response tokens: every response was empty or truncated away")
    return -logps.sum() / total.to(logps.dtype)


def implicit_reward_margin(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> torch.Tensor:
    """h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)].

    Args:
        Four (B,) summed response log-probs (nats).

    Returns:
        (B,) h in nats.

    Raises:
        ValueError: unless all four are 1-D of one shape.

    Source: docs/methods.md s4.
    """
    check_pair_vectors(
        policy_chosen=policy_chosen, policy_rejected=policy_rejected,
        ref_chosen=ref_chosen, ref_rejected=ref_rejected,
    )
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def dpo_loss(h: torch.Tensor, beta: float, p: torch.Tensor | None = None) -> torch.Tensor:
    """DPO, or with targets p its soft-target form (MMPO) / cDPO: mean of s2's loss on z = beta h.

    Args:
        h: (B,) implicit reward margins (nats); beta: > 0.
        p: (B,) targets in [0, 1]; None = hard labels (DPO: -log sigmoid(beta h)). Each pair's
            p_chosen is MMPO; a constant 1 - eps is cDPO.

    Returns:
        Scalar mean loss (nats).

    Raises:
        ValueError: on a shape mismatch or p outside [0, 1].

    Source: docs/methods.md s4.2 (DPO arXiv 2305.18290 eq. 7; MMPO 2410.03145).
    """
    z = beta * h
    return soft_label_logistic_loss(z, _targets(p, z)).mean()


def ipo_loss(h: torch.Tensor, beta: float, p: torch.Tensor | None = None) -> torch.Tensor:
    """IPO: mean of (h - (2p - 1) / (2 beta))^2; p = 1 (or None) is (h - 1/(2 beta))^2.

    Args:
        h: (B,) implicit reward margins from summed log-probs (nats); beta: > 0.
        p: (B,) soft targets in [0, 1], or None for hard labels.

    Returns:
        Scalar mean loss (nats^2). Zero gradient at h = (2p - 1) / (2 beta).

    Raises:
        ValueError: on a shape mismatch.

    Source: docs/methods.md s4.3 (arXiv 2310.12036; the soft form is defined there).
    """
    target = _targets(p, h)
    check_pair_vectors(h=h, p=target)
    return ((h - (2.0 * target - 1.0) / (2.0 * beta)) ** 2).mean()


def gpo_scores_from_matrix(preference_scores: torch.Tensor) -> torch.Tensor:
    """s_i = (1/K) sum_k s(y_i > y_k | x) from a table of preference scores.

    The diagonal s(y_i > y_i) is 0 for an antisymmetric model, so it may stay in the sum.

    Args:
        preference_scores: (..., K, K) log-odds s(y_i > y_k | x).

    Returns:
        (..., K) scores s_i (log-odds units).

    Raises:
        ValueError: when the last two dimensions differ.

    Source: docs/methods.md s4.6.
    """
    if preference_scores.size(-1) != preference_scores.size(-2):
        raise ValueError(f"preference table must be (..., K, K), got {tuple(preference_scores.shape)}")
    return preference_scores.mean(dim=-1)


def gpo_scores_from_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """BT baseline: s(y_i > y_k) = r_i - r_k, so s_i = r_i - mean_k r_k (SPPO-like).

    Args:
        rewards: (..., K) scalar rewards of K responses to one prompt.

    Returns:
        (..., K) centred rewards.

    Source: docs/methods.md s4.6.
    """
    return rewards - rewards.mean(dim=-1, keepdim=True)


def gpo_loss(
    policy_logps: torch.Tensor, old_policy_logps: torch.Tensor, scores: torch.Tensor, beta: float
) -> torch.Tensor:
    """GPO square loss: mean over responses of (log pi(y_i|x) - log pi_t(y_i|x) - s_i / beta)^2.

    Args:
        policy_logps, old_policy_logps: (N,) summed response log-probs under pi and pi_t (nats).
        scores: (N,) s_i; beta: > 0.

    Returns:
        Scalar mean loss (nats^2).

    Raises:
        ValueError: unless the three are 1-D of one shape.

    Source: docs/methods.md s4.6.
    """
    check_pair_vectors(policy_logps=policy_logps, old_policy_logps=old_policy_logps, scores=scores)
    return ((policy_logps - old_policy_logps - scores.to(policy_logps.dtype) / beta) ** 2).mean()
