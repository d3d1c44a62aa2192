"""Sequence log-probabilities of a causal LM over response tokens only.

A sequence is prompt tokens followed by response tokens (plus padding). `response_mask` is 1 on
the response tokens and 0 on prompt and padding tokens, so prompt tokens never count: the
log-prob of token t is read from the logits at position t - 1, and only positions whose *target*
is a response token are summed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefalign.core.training.packing import PackedSequences, packed_pair_logprobs


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t] | input_ids[:, :t]) for t = 1..T-1, shape (B, T-1).

    cross_entropy on the flattened logits avoids materialising a (B, T, V) log-softmax copy.
    """
    targets = input_ids[:, 1:]
    shifted = logits[:, :-1, :]
    nll = F.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)).float(), targets.reshape(-1), reduction="none"
    )
    return -nll.view_as(targets)


def masked_sequence_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Sum of response-token log-probs per row, shape (B,)."""
    target_mask = response_mask[:, 1:].float()
    return (token_logprobs(logits, input_ids) * target_mask).sum(dim=-1)


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """One forward pass of `model`; sum of response-token log-probs per row, shape (B,)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return masked_sequence_logprobs(logits, input_ids, response_mask)


def pair_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected log-probs from ONE forward pass.

    The batch holds 2B rows: rows 0..B-1 are prompt + chosen, rows B..2B-1 the same prompts +
    rejected (the layout of the pair batches in core/training/batching.py).
    """
    if input_ids.size(0) % 2:
        raise ValueError(
            f"a pair batch must hold 2B rows (B chosen then B rejected), got {input_ids.size(0)} rows"
        )
    logps = sequence_logprobs(model, input_ids, attention_mask, response_mask)
    n_pairs = input_ids.size(0) // 2
    return logps[:n_pairs], logps[n_pairs:]


def batch_pair_logprobs(model: torch.nn.Module, sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """``pair_logprobs`` of a pair batch's sequences: padded (``SequenceBatch``) or packed
    (``PackedSequences``, core/training/packing.py). Returns (chosen [B], rejected [B])."""
    if isinstance(sequences, PackedSequences):
        return packed_pair_logprobs(model, sequences)
    return pair_logprobs(model, sequences.input_ids, sequences.attention_mask, sequences.response_mask)


def response_token_counts(sequences) -> torch.Tensor:
    """Response tokens whose log-probs ``batch_pair_logprobs`` sums, per sequence: [2B] (chosen rows
    first), for padded (``SequenceBatch``: response_mask[:, 1:]) or packed (``PackedSequences``:
    one target per scored token) batches. SimPO and ORPO normalise by it (docs/methods.md s4.4, s4.5)."""
    if isinstance(sequences, PackedSequences):
        return torch.bincount(sequences.target_sequence, minlength=sequences.num_sequences)
    return sequences.response_mask[:, 1:].sum(dim=-1)

