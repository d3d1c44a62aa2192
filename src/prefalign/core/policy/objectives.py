"""Policy objectives in the training loop's shape, ``loss_fn(model, batch) -> (loss, metrics)``,
their config dataclasses, and the implicit-reward evaluation of a trained policy.

A pairwise objective is a function ``objective(logps: PairLogprobs, config) -> (loss, metrics)``
on one batch's summed log-probs; :func:`make_pairwise_loss_fn` does the forward pass and the
reference lookup (only for objectives that need one). The registry (core/objectives/registry.py)
names each objective and pairs it with its config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from prefalign.core.objectives.soft_label import pair_targets, soft_label_logistic_loss
from prefalign.core.policy.logprobs import batch_pair_logprobs, response_token_counts, sequence_logprobs
from prefalign.core.policy.losses import dpo_loss, implicit_reward_margin, ipo_loss, sft_loss_from_logprobs
from prefalign.core.policy.reference import ReferenceLogprobs, score_pair_batches

LossFn = Callable[[torch.nn.Module, object], tuple[torch.Tensor, dict[str, float]]]


def _check_beta(beta: float) -> None:
    if beta <= 0:
        raise ValueError(f"objective.beta={beta} must be > 0")


@dataclass(frozen=True)
class DPOConfig:
    """DPO (hard labels), MMPO (``soft_targets: true``) or cDPO (``label_smoothing: eps``); docs/methods.md s4.2.

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    beta: float = 0.1
    soft_targets: bool = False
    label_smoothing: float = 0.0

    def validate(self) -> None:
        """Raises ValueError naming the bad key: beta <= 0, eps outside [0, 0.5], or eps with soft targets."""
        _check_beta(self.beta)
        pair_targets(torch.ones(1), self.soft_targets, self.label_smoothing)


@dataclass(frozen=True)
class IPOConfig:
    """IPO, hard or with soft targets; docs/methods.md s4.3.

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    beta: float = 0.1
    soft_targets: bool = False

    def validate(self) -> None:
        """Raises ValueError when beta <= 0."""
        _check_beta(self.beta)


@dataclass
class PairLogprobs:
    """One batch's log-probs, everything a pairwise policy objective reads. All tensors (B,).

    chosen / rejected: summed response-token log pi (nats); chosen_tokens / rejected_tokens:
    response token counts |y|; ref_chosen / ref_rejected: log pi_ref (None for reference-free
    objectives); p_chosen: the pairs' soft targets (docs/methods.md s1).

    Raises:
        ValueError: ``margin()`` without reference log-probs.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    p_chosen: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None

    def margin(self) -> torch.Tensor:
        """h of docs/methods.md s4 (needs the reference log-probs)."""
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError("this objective needs reference log-probs, but none were given (registry needs_reference)")
        return implicit_reward_margin(self.chosen, self.rejected, self.ref_chosen, self.ref_rejected)


def dpo_objective(logps: PairLogprobs, config: DPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO / MMPO / cDPO on one batch.

    Args:
        logps: the batch's log-probs, with the reference's; config: beta, soft_targets, label_smoothing.

    Returns:
        (mean loss in nats, metrics: implicit_accuracy = share with h > 0, implicit_margin = mean beta h).

    Raises:
        ValueError: when the reference log-probs are missing.

    Source: docs/methods.md s4.2.
    """
    h = logps.margin()
    loss = dpo_loss(h, config.beta, pair_targets(logps.p_chosen.to(h.dtype), config.soft_targets, config.label_smoothing))
    return loss, {"implicit_accuracy": (h > 0).float().mean().item(), "implicit_margin": (config.beta * h).mean().item()}


def ipo_objective(logps: PairLogprobs, config: IPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """IPO, hard or soft, on one batch.

    Args:
        logps: the batch's log-probs, with the reference's; config: beta, soft_targets.

    Returns:
        (mean loss in nats^2, metrics as :func:`dpo_objective`).

    Raises:
        ValueError: when the reference log-probs are missing.

    Source: docs/methods.md s4.3.
    """
    h = logps.margin()
    loss = ipo_loss(h, config.beta, logps.p_chosen.to(h.dtype) if config.soft_targets else None)
    return loss, {"implicit_accuracy": (h > 0).float().mean().item(), "implicit_margin": (config.beta * h).mean().item()}


@dataclass(frozen=True)
class SimPOConfig:
    """SimPO: reference-free, length-normalised; docs/methods.md s4.4 (arXiv 2405.14734).

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    beta: float = 2.0
    gamma: float = 1.0  # target reward margin (nats of beta-scaled average log-prob)
    soft_targets: bool = False

    def validate(self) -> None:
        """Raises ValueError when beta <= 0 or gamma < 0."""
        _check_beta(self.beta)
        if self.gamma < 0:
            raise ValueError(f"objective.gamma={self.gamma} must be >= 0")


def simpo_objective(logps: PairLogprobs, config: SimPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """SimPO on one batch: z = beta (log pi(y_w)/|y_w| - log pi(y_l)/|y_l|) - gamma, s2's loss on z.

    No reference model. An empty response (|y| = 0) has log-prob 0, so its average is taken as 0.

    Args:
        logps: the batch's summed log-probs and token counts; config: beta, gamma, soft_targets.

    Returns:
        (mean loss in nats, metrics: share of pairs with z + gamma > 0, mean z).

    Source: docs/methods.md s4.4 (arXiv 2405.14734 eq. 6); soft targets s2.
    """
    reward_w = config.beta * logps.chosen / logps.chosen_tokens.clamp(min=1)
    reward_l = config.beta * logps.rejected / logps.rejected_tokens.clamp(min=1)
    z = reward_w - reward_l - config.gamma
    loss = soft_label_logistic_loss(z, pair_targets(logps.p_chosen.to(z.dtype), config.soft_targets)).mean()
    return loss, {"reward_accuracy": (reward_w > reward_l).float().mean().item(), "mean_logit": z.mean().item()}


@dataclass(frozen=True)
class ORPOConfig:
    """ORPO: SFT NLL plus lambda times an odds-ratio term; docs/methods.md s4.5 (arXiv 2403.07691).

    Raises:
        ValueError: from ``validate()`` (called by the registry's ``parse``), naming the bad key.
    """

    odds_ratio_weight: float = 0.1  # lambda of the paper
    soft_targets: bool = False

    def validate(self) -> None:
        """Raises ValueError when the weight is negative."""
        if self.odds_ratio_weight < 0:
            raise ValueError(f"objective.odds_ratio_weight={self.odds_ratio_weight} must be >= 0")


def log_odds(mean_logprob: torch.Tensor) -> torch.Tensor:
    """log(P / (1 - P)) with P = exp(mean_logprob) per sequence, stable near P = 1 (log(-expm1)).

    Args:
        mean_logprob: (B,) per-token average log-probs (nats), <= 0; clamped below -1e-6 so that
            P = 1 (an empty or certain response) gives a large finite value instead of infinity.

    Returns:
        (B,) log-odds.

    Source: docs/methods.md s4.5 (arXiv 2403.07691 eq. 4).
    """
    ell = mean_logprob.clamp(max=-1e-6)
    return ell - torch.log(-torch.expm1(ell))


def orpo_objective(logps: PairLogprobs, config: ORPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """ORPO on one batch: NLL per chosen response token + lambda * s2's loss on z = log odds(y_w) - log odds(y_l).

    Args:
        logps: the batch's summed log-probs and token counts; config: odds_ratio_weight (lambda), soft_targets.

    Returns:
        (loss in nats, metrics: the SFT and odds-ratio terms, and the share of pairs with z > 0).

    Source: docs/methods.md s4.5 (arXiv 2403.07691 eq. 6-7); soft targets s2.
    """
    nll = -logps.chosen.sum() / logps.chosen_tokens.sum().clamp(min=1)
    z = log_odds(logps.chosen / logps.chosen_tokens.clamp(min=1)) - log_odds(logps.rejected / logps.rejected_tokens.clamp(min=1))
    odds_ratio = soft_label_logistic_loss(z, pair_targets(logps.p_chosen.to(z.dtype), config.soft_targets)).mean()
    loss = nll + config.odds_ratio_weight * odds_ratio
    return loss, {"sft_nll": nll.item(), "odds_ratio_loss": odds_ratio.item(), "odds_ratio_accuracy": (z > 0).float().mean().item()}


def sft_loss_fn(model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
    """SFT on prompt + chosen: response-only token cross-entropy.

    Args:
        model: a causal LM; batch: a RowBatch of prompt + chosen sequences.

    Returns:
        (mean NLL per response token in nats, {"perplexity": exp of it}).

    Raises:
        ValueError: when the batch has no response token.

    Source: docs/methods.md s4.1.
    """
    seqs = batch.sequences
    logps = sequence_logprobs(model, seqs.input_ids, seqs.attention_mask, seqs.response_mask)  # no [tokens x vocab] logits
    loss = sft_loss_from_logprobs(logps, response_token_counts(seqs))
    return loss, {"perplexity": float(torch.exp(loss.detach()).item())}


def make_pairwise_loss_fn(
    objective: Callable[[PairLogprobs, Any], tuple[torch.Tensor, dict[str, float]]],
    config: Any,
    reference: ReferenceLogprobs | None,
) -> LossFn:
    """The loop's loss for a pairwise policy objective.

    Args:
        objective: e.g. :func:`dpo_objective`; reads a :class:`PairLogprobs`.
        config: the objective's parsed config dataclass.
        reference: the precomputed reference table, or None for reference-free objectives.

    Returns:
        ``loss_fn(model, PairBatch) -> (loss, metrics)``: chosen and rejected in ONE forward pass;
        token counts |y| are the response tokens whose log-probs are summed.

    Source: docs/methods.md s4.
    """

    def loss_fn(model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = batch_pair_logprobs(model, batch.sequences)
        tokens = response_token_counts(batch.sequences).to(chosen.dtype)  # |y| per sequence, for SimPO/ORPO
        n = chosen.shape[0]
        logps = PairLogprobs(chosen, rejected, tokens[:n], tokens[n:], batch.p_chosen.to(chosen.dtype))
        if reference is not None:
            ref_chosen, ref_rejected = reference.lookup(batch.pair_index)
            logps.ref_chosen, logps.ref_rejected = ref_chosen.to(chosen.dtype), ref_rejected.to(chosen.dtype)
        return objective(logps, config)

    return loss_fn


def reference_metrics(reference: ReferenceLogprobs, pair_index: torch.Tensor) -> dict[str, float]:
    """The reference scored as its own policy, from the table alone (no forward pass).

    Its implicit reward beta*h is 0 for every pair, so its implicit accuracy is 0 (ties count
    wrong); its log-likelihood ranking accuracy is the comparable number.

    Args:
        reference: the reference table; pair_index: (N,) rows of the pairs to score.

    Returns:
        {pairs, implicit_accuracy (0), reference_logprob_accuracy, mean_implicit_reward_margin (0)}.

    Source: docs/methods.md s5.
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
    model: torch.nn.Module, batches: Iterable, reference: ReferenceLogprobs | None, beta: float | None
) -> dict[str, float]:
    """How the policy ranks pairs, next to its reference (docs/methods.md s5).

    - implicit_accuracy: share of pairs with beta*h > 0 strictly (a tie is wrong, so the
      reference itself scores 0 here and 0.5 is chance); only with a reference table.
    - policy_logprob_accuracy / reference_logprob_accuracy: share with log pi(y_w|x) > log pi(y_l|x),
      the same quantity for both models, so the two are directly comparable.
    - mean_implicit_reward_margin: mean of beta*h (beta None: of h).

    Args:
        model: the policy; batches: PairBatches; reference: the table, or None (reference-free:
            only policy_logprob_accuracy); beta: the objective's beta, if it has one.

    Returns:
        The metrics above, and ``pairs``.
    """
    index, chosen, rejected = score_pair_batches(model, batches)
    if index.numel() == 0:
        return {"pairs": 0}
    metrics: dict[str, float] = {"pairs": int(index.numel()), "policy_logprob_accuracy": float((chosen > rejected).float().mean())}
    if reference is not None:
        ref_chosen, ref_rejected = reference.lookup(index)
        h = implicit_reward_margin(chosen, rejected, ref_chosen, ref_rejected)
        metrics.update({
            "implicit_accuracy": float((h > 0).float().mean()),
            "reference_logprob_accuracy": float((ref_chosen > ref_rejected).float().mean()),
            "mean_implicit_reward_margin": float((beta or 1.0) * h.mean()),
        })
    return metrics
