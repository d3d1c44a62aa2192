"""Policy losses (docs/methods.md s4). Every function returns its SUMMED loss divided by a
``denominator``: by default its own rows (or, for SFT, its own response tokens), i.e. the mean; the
training loop passes the whole optimizer step's count instead, so that the step's loss does not
depend on its split into micro-batches and processes (core/training/normalisation.py).

Notation: h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)], where each
log pi is the sum of response-token log-probs (core/policy/logprobs.py). All inputs are 1-D
tensors of shape (B,), one entry per pair; shapes are checked rather than broadcast, because a
(B, 1) against (B,) broadcast silently averages targets over the batch (docs/methods.md s2).
"""

from __future__ import annotations

import torch

from prefalign.core.objectives.soft_label import check_pair_vectors, soft_label_logistic_loss
from prefalign.core.policy.logprobs import token_logprobs
from prefalign.core.training.normalisation import divide


def _targets(p: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(like) if p is None else p.to(like.dtype)


def _per_row(losses: torch.Tensor, denominator: float | None) -> torch.Tensor:
    """sum(losses) / denominator; None: the mean over the rows."""
    return losses.sum() / (losses.numel() if denominator is None else denominator)


def sft_target_tokens(response_mask: torch.Tensor) -> int:
    """The tokens SFT scores: response tokens that have a preceding token, (B, T) mask -> count.

    Args:
        response_mask: (B, T), 1 on response tokens.

    Returns:
        The number of response tokens at positions 1..T-1 (position 0 has no prefix to predict it).
    """
    return int(response_mask[:, 1:].sum())


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor,
             n_tokens: float | None = None) -> torch.Tensor:
    """Token cross-entropy summed over response tokens only (prompt and padding excluded), per token.

    Args:
        logits: (B, T, V) next-token logits.
        input_ids: (B, T) token ids.
        response_mask: (B, T), 1 on response tokens.
        n_tokens: the number of response tokens to divide by: the whole optimizer step's (the loop
            passes it), or None for this batch's own (``sft_target_tokens``): the batch's token mean.

    Returns:
        Scalar NLL per response token (nats).

    Raises:
        ValueError: when there is no response token to divide by (every response empty or truncated away).

    Source: docs/methods.md s4.1.
    """
    target_mask = response_mask[:, 1:].float()
    total = -(token_logprobs(logits, input_ids) * target_mask).sum()
    return divide(total, sft_target_tokens(response_mask) if n_tokens is None else n_tokens,
                  "SFT has no response tokens to average over: every response was empty or truncated away")


def sft_loss_from_logprobs(logps: torch.Tensor, n_tokens: torch.Tensor | float) -> torch.Tensor:
    """The SFT loss from per-sequence sums: -sum_b log pi(y_b|x_b) / n_tokens.

    Args:
        logps: (B,) summed response-token log-probs (nats, e.g. from the chunked LM head: no
            [tokens x vocabulary] logits).
        n_tokens: (B,) response token counts (their sum is the divisor: this batch's token mean),
            or the whole optimizer step's token count (a number, as the loop passes it:
            core/training/normalisation.py).

    Returns:
        Scalar NLL per response token (nats).

    Raises:
        ValueError: when there is no response token to divide by (every response empty or truncated away).

    Source: docs/methods.md s4.1.
    """
    total = float(n_tokens.sum()) if isinstance(n_tokens, torch.Tensor) else n_tokens
    return divide(-logps.sum(), total,
                  "SFT has no response tokens to average over: every response was empty or truncated away")


def implicit_reward_margin(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> torch.Tensor:
    """h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)].

    Args:
        policy_chosen: (B,) log pi(y_w|x), summed over response tokens (nats).
        policy_rejected: (B,) log pi(y_l|x) (nats).
        ref_chosen: (B,) log pi_ref(y_w|x) (nats).
        ref_rejected: (B,) log pi_ref(y_l|x) (nats).

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


# A margin h within TIE_RTOL of the summed magnitudes it is computed from is a tie (docs/policy.md,
# "Implicit accuracy"): 1e-5 is ~84 fp32 epsilons, above the noise two batchings of one fp32 model
# leave in h (measured at most 8e-8 of the magnitudes: 96 tiny-model pairs, batches of 32 against
# padded or packed batches of 8), and far below a margin training has made.
TIE_RTOL = 1e-5


def implicit_accuracy(h: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Share of pairs ranked right by the implicit reward, a tie counting 1/2.

    A pair is a win when h > tol, a loss when h < -tol and a tie (1/2, as a coin flip would score)
    when |h| <= tol, with tol = TIE_RTOL * magnitude: h is a difference of four summed log-probs, so
    float rounding leaves noise proportional to their size, and a margin inside it carries no ranking.
    The reference scored as its own policy (h = 0) therefore scores 0.5, chance.

    Args:
        h: (B,) implicit reward margins (nats).
        magnitude: (B,) |log pi(y_w)| + |log pi(y_l)| + |log pi_ref(y_w)| + |log pi_ref(y_l)| (nats).

    Returns:
        Scalar tensor in [0, 1].

    Raises:
        ValueError: unless both are 1-D of one shape.

    Source: docs/policy.md "Implicit accuracy".
    """
    check_pair_vectors(h=h, magnitude=magnitude)
    tol = TIE_RTOL * magnitude
    return ((h > tol).float() + 0.5 * (h.abs() <= tol).float()).mean()


def dpo_loss(h: torch.Tensor, beta: float, p: torch.Tensor | None = None, denominator: float | None = None) -> torch.Tensor:
    """DPO, or with targets p its soft-target form (MMPO) / cDPO: s2's loss on z = beta h, per pair.

    Args:
        h: (B,) implicit reward margins (nats).
        beta: > 0, scales h into the logit z = beta h.
        p: (B,) targets in [0, 1]; None = hard labels (DPO: -log sigmoid(beta h)). Each pair's
            p_chosen is MMPO; a constant 1 - eps is cDPO.
        denominator: pairs to divide the summed loss by (the step's); None = B (the batch mean).

    Returns:
        Scalar loss per pair (nats).

    Raises:
        ValueError: on a shape mismatch or p outside [0, 1].

    Source: docs/methods.md s4.2 (DPO arXiv 2305.18290 eq. 7; MMPO 2410.03145).
    """
    z = beta * h
    return _per_row(soft_label_logistic_loss(z, _targets(p, z)), denominator)


def ipo_loss(h: torch.Tensor, beta: float, p: torch.Tensor | None = None, denominator: float | None = None) -> torch.Tensor:
    """IPO: (h - (2p - 1) / (2 beta))^2 per pair; p = 1 (or None) is (h - 1/(2 beta))^2.

    Args:
        h: (B,) implicit reward margins from summed log-probs (nats).
        beta: > 0; the target margin is (2p - 1) / (2 beta).
        p: (B,) soft targets in [0, 1], or None for hard labels.
        denominator: pairs to divide the summed loss by (the step's); None = B (the batch mean).

    Returns:
        Scalar loss per pair (nats^2). Zero gradient at h = (2p - 1) / (2 beta).

    Raises:
        ValueError: on a shape mismatch.

    Source: docs/methods.md s4.3 (arXiv 2310.12036; the soft form is defined there).
    """
    target = _targets(p, h)
    check_pair_vectors(h=h, p=target)
    return _per_row((h - (2.0 * target - 1.0) / (2.0 * beta)) ** 2, denominator)


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


def gpo_loss(
    policy_logps: torch.Tensor, old_policy_logps: torch.Tensor, scores: torch.Tensor, beta: float,
    denominator: float | None = None,
) -> torch.Tensor:
    """GPO square loss per response: (log pi(y_i|x) - log pi_t(y_i|x) - s_i / beta)^2.

    Args:
        policy_logps, old_policy_logps: (N,) summed response log-probs under pi and pi_t (nats).
        scores: (N,) s_i (log-odds).
        beta: > 0; the target log-ratio is s_i / beta.
        denominator: responses to divide the summed loss by (the step's); None = N (the batch mean).

    Returns:
        Scalar loss per response (nats^2).

    Raises:
        ValueError: unless the three are 1-D of one shape.

    Source: docs/methods.md s4.6.
    """
    check_pair_vectors(policy_logps=policy_logps, old_policy_logps=old_policy_logps, scores=scores)
    return _per_row((policy_logps - old_policy_logps - scores.to(policy_logps.dtype) / beta) ** 2, denominator)
