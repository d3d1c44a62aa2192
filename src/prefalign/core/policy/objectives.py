"""Loss functions in the training loop's shape, `loss_fn(model, batch) -> (loss, metrics)`, and the
implicit-reward evaluation of a trained policy against its reference.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from prefalign.core.policy.logprobs import batch_pair_logprobs
from prefalign.core.policy.losses import (
    PREFERENCE_LOSSES,
    implicit_reward_margin,
    preference_loss,
    sft_loss,
)
from prefalign.core.policy.reference import ReferenceLogprobs, score_pair_batches

LossFn = Callable[[torch.nn.Module, object], tuple[torch.Tensor, dict[str, float]]]


def sft_loss_fn(model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
    """SFT on prompt + chosen (a RowBatch): response-only token cross-entropy."""
    seqs = batch.sequences
    logits = model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask).logits
    loss = sft_loss(logits, seqs.input_ids, seqs.response_mask)
    return loss, {"perplexity": float(torch.exp(loss.detach()).item())}


def make_preference_loss_fn(
    loss_name: str, beta: float, reference: ReferenceLogprobs, label_smoothing: float = 0.0
) -> LossFn:
    """DPO / MMPO / cDPO / IPO on PairBatches; reference log-probs come from the precomputed table."""
    if loss_name not in PREFERENCE_LOSSES:
        raise ValueError(f"policy loss {loss_name!r} is not one of {PREFERENCE_LOSSES}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")

    def loss_fn(model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = batch_pair_logprobs(model, batch.sequences)
        ref_chosen, ref_rejected = reference.lookup(batch.pair_index)
        h = implicit_reward_margin(chosen, rejected, ref_chosen.to(chosen.dtype), ref_rejected.to(chosen.dtype))
        loss = preference_loss(loss_name, h, batch.p_chosen.to(h.dtype), beta, label_smoothing)
        return loss, {
            "implicit_accuracy": (h > 0).float().mean().item(),
            "implicit_margin": (beta * h).mean().item(),
        }

    return loss_fn


def reference_metrics(reference: ReferenceLogprobs, pair_index: torch.Tensor) -> dict[str, float]:
    """The reference scored as its own policy, from the table alone (no forward pass).

    Its implicit reward beta*h is 0 for every pair, so its implicit accuracy is 0 (ties count
    wrong); its log-likelihood ranking accuracy is the comparable number.
    """
    if pair_index.numel() == 0:
        return {"pairs": 0}
    chosen, rejected = reference.lookup(pair_index)
    return {
        "pairs": int(pair_index.numel()),
        "implicit_accuracy": 0.0,
        "reference_logprob_accuracy": float((chosen > rejected).float().mean()),
        "mean_implicit_reward_margin": 0.0,
    }


def implicit_reward_metrics(
    model: torch.nn.Module, batches: Iterable, reference: ReferenceLogprobs, beta: float
) -> dict[str, float]:
    """How the policy ranks pairs, next to its reference.

    - implicit_accuracy: share of pairs with beta*h > 0 strictly (methods.md section 5; a tie is
      wrong, so the reference itself scores 0 here and 0.5 is chance).
    - policy_logprob_accuracy / reference_logprob_accuracy: share with log pi(y_w|x) > log pi(y_l|x),
      the same quantity for both models, so the two are directly comparable.
    - mean_implicit_reward_margin: mean of beta*h.
    """
    index, chosen, rejected = score_pair_batches(model, batches)
    if index.numel() == 0:
        return {"pairs": 0}
    ref_chosen, ref_rejected = reference.lookup(index)
    h = implicit_reward_margin(chosen, rejected, ref_chosen, ref_rejected)
    pol, ref = chosen - rejected, ref_chosen - ref_rejected
    return {
        "pairs": int(h.numel()),
        "implicit_accuracy": float((h > 0).float().mean()),
        "policy_logprob_accuracy": float((pol > 0).float().mean()),
        "reference_logprob_accuracy": float((ref > 0).float().mean()),
        "mean_implicit_reward_margin": float(beta * h.mean()),
    }
