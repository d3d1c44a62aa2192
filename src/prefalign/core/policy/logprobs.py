"""Sequence log-probabilities of a causal LM over response tokens only.

A sequence is prompt tokens followed by response tokens (plus padding). `response_mask` is 1 on
the response tokens and 0 on prompt and padding tokens, so prompt tokens never count: the
log-prob of token t is read from the logits at position t - 1, and only positions whose *target*
is a response token are summed.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from prefalign.core.models.lm_head import FROM_MODEL, chunked_target_logprobs, logprob_chunk_tokens
from prefalign.core.training.packing import PackedSequences, _accepts_logits_to_keep, _unwrap, packed_forward

# config attributes of models whose forward changes the logits after the LM head (Gemma 2/3's
# soft-capping, Cohere's and Granite's scaling): the fused path would miss that, so they take the plain one
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t] | input_ids[:, :t]) for t = 1..T-1, shape (B, T-1).

    cross_entropy on the flattened logits avoids materialising a (B, T, V) log-softmax copy.

    Args:
        logits: [B, T, V] next-token logits.
        input_ids: [B, T] token ids.

    Returns:
        [B, T-1] fp32 log-probs (nats); entry t-1 is the log-prob of token t.
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
    """Sum of response-token log-probs per row, shape (B,).

    Args:
        logits: [B, T, V] next-token logits.
        input_ids: [B, T] token ids.
        response_mask: [B, T], 1 on response tokens (prompt and padding 0).

    Returns:
        [B] fp32, log pi(y|x) summed over the response tokens, nats (docs/methods.md s4).
    """
    target_mask = response_mask[:, 1:].float()
    return (token_logprobs(logits, input_ids) * target_mask).sum(dim=-1)


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside DDP/FSDP and peft wrappers (its adapters stay injected)."""
    model = _unwrap(model)
    from prefalign.core.models.lora import is_adapted

    return model.get_base_model() if is_adapted(model) else model


def _sharded(model: torch.nn.Module, lm: torch.nn.Module) -> bool:
    """Whether FSDP (1 or 2) manages the parameters: the head's weight is then only whole inside its module's forward."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    chain = [model]
    while hasattr(chain[-1], "module") and isinstance(chain[-1].module, torch.nn.Module):
        chain.append(chain[-1].module)
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in (*chain, lm))


def _fusable_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder, LM head) when logits are ``head(decoder(...).last_hidden_state)``, the forward
    takes a boolean ``logits_to_keep`` and FSDP does not shard the weights; None otherwise (the
    plain path then runs)."""
    lm = _causal_lm(model)
    if _sharded(model, lm):
        return None
    get_head, get_decoder = getattr(lm, "get_output_embeddings", None), getattr(lm, "get_decoder", None)
    if get_head is None or get_decoder is None or not _accepts_logits_to_keep(lm):
        return None
    config = getattr(lm, "config", None)
    text_config = getattr(config, "get_text_config", lambda: config)()
    if any(getattr(text_config, key, None) not in (None, 1, 1.0) for key in LOGIT_TRANSFORMS):
        return None
    head, decoder = get_head(), get_decoder()
    if head is None or decoder is None or decoder is lm:
        return None
    return decoder, head


def target_logprobs(
    model: torch.nn.Module,
    forward: Callable[..., object],
    shape: tuple[int, int],
    target_row: torch.Tensor,
    target_source: torch.Tensor,
    target_ids: torch.Tensor,
    chunk_tokens: int | None | object = FROM_MODEL,
) -> torch.Tensor:
    """log p(target_ids[i] | the tokens before it) for M targets, from ONE forward pass.

    Only the positions that predict a target go through the LM head; prompt positions never do.
    With chunking (the default, ``model.logprob_chunk_tokens``), the model runs to its final
    hidden states and the head is applied ``chunk_tokens`` positions at a time, fused with the
    log-softmax (core/models/lm_head.py): no [M, V] tensor exists in the forward or backward
    pass. Otherwise the head projects the M positions at once (``logits_to_keep`` as a boolean
    [R, W] mask, transformers >= 5; older versions: all positions).

    Args:
        model: the causal LM (may be wrapped by DDP/FSDP or peft).
        forward: ``forward(**kwargs)`` calls the model on the batch through its own ``__call__``,
            adding ``kwargs`` (``logits_to_keep``).
        shape: (R, W) of the batch's input ids.
        target_row, target_source: [M] (row, column) of the position whose logits predict target i.
        target_ids: [M] token ids.
        chunk_tokens: positions per LM-head chunk; default: the model's setting
            (core/models/lm_head.py ``logprob_chunk_tokens``); None = unchunked.

    Returns:
        [M] fp32 log-probs (nats).

    Raises:
        RuntimeError: the model's decoder did not report its hidden states.
    """
    chunk = logprob_chunk_tokens(model) if chunk_tokens is FROM_MODEL else chunk_tokens
    parts = _fusable_parts(model) if chunk is not None else None
    device = target_ids.device
    if parts is not None:
        decoder, head = parts
        captured: list[torch.Tensor] = []

        def keep_hidden(_module, _args, output) -> None:
            if not captured:
                captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

        handle = decoder.register_forward_hook(keep_hidden)
        try:  # no position goes through the model's own head: logits_to_keep keeps none
            forward(logits_to_keep=torch.zeros(shape, dtype=torch.bool, device=device))
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"{type(decoder).__name__} did not run in the forward pass of {type(_causal_lm(model)).__name__}; "
                               "set model.logprob_chunk_tokens: null")
        return chunked_target_logprobs(captured[0][target_row, target_source], head, target_ids, chunk)
    width = shape[1]
    keep = torch.zeros(shape, dtype=torch.bool, device=device)
    keep[target_row, target_source] = True
    flat_rank = keep.flatten().cumsum(0) - 1  # index of each kept slot in the flattened logits
    if _accepts_logits_to_keep(model):
        logits = forward(logits_to_keep=keep).logits
    else:
        logits = forward().logits[keep]
    pick = flat_rank[target_row * width + target_source]
    return -F.cross_entropy(logits[pick].float(), target_ids, reduction="none")


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    chunk_tokens: int | None | object = FROM_MODEL,
) -> torch.Tensor:
    """One forward pass of `model`; sum of response-token log-probs per row, shape (B,) fp32.

    The same quantity as :func:`masked_sequence_logprobs` on the model's logits, computed by
    :func:`target_logprobs` (only response positions reach the LM head, in chunks).

    Args:
        model: the causal LM (possibly wrapped).
        input_ids: [B, T] token ids (prompt, response, right padding).
        attention_mask: [B, T], 1 on real tokens.
        response_mask: [B, T], 1 on response tokens.
        chunk_tokens: positions per LM-head chunk; default: the model's setting; None = unchunked.

    Returns:
        [B] fp32 log pi(y|x), nats.
    """
    rows, cols = response_mask[:, 1:].nonzero(as_tuple=True)  # target t = cols + 1, predicted at cols
    logp = target_logprobs(
        model, lambda **kw: model(input_ids=input_ids, attention_mask=attention_mask, **kw), tuple(input_ids.shape),
        rows, cols, input_ids[rows, cols + 1], chunk_tokens,
    )
    return torch.zeros(input_ids.shape[0], dtype=logp.dtype, device=logp.device).index_add(0, rows, logp)


def packed_sequence_logprobs(model: torch.nn.Module, packed: PackedSequences, chunk_tokens: int | None | object = FROM_MODEL) -> torch.Tensor:
    """Sum of response-token log-probs per sequence, [N] fp32, from ONE forward pass over a packed
    batch (core/training/packing.py). Same quantity as :func:`masked_sequence_logprobs` on the
    unpacked batch (methods.md s4: log pi(y|x) = sum over response tokens).

    Args:
        model: the causal LM (possibly wrapped).
        packed: the packed batch (N sequences).
        chunk_tokens: positions per LM-head chunk; default: the model's setting; None = unchunked.

    Returns:
        [N] fp32 log pi(y|x) per sequence, nats, in the packed batch's sequence order.
    """
    logp = target_logprobs(model, lambda **kw: packed_forward(model, packed, **kw), tuple(packed.input_ids.shape),
                           packed.target_row, packed.target_source, packed.target_ids, chunk_tokens)
    return torch.zeros(packed.num_sequences, dtype=logp.dtype, device=logp.device).index_add(0, packed.target_sequence, logp)


def packed_pair_logprobs(model: torch.nn.Module, packed: PackedSequences) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(chosen) [B], log pi(rejected) [B]) from one forward pass over a packed pair batch.

    Args:
        model: the causal LM (possibly wrapped).
        packed: a packed pair batch (2B sequences: B chosen, then B rejected).

    Returns:
        (chosen [B], rejected [B]) fp32 log-probs, nats.
    """
    logps = packed_sequence_logprobs(model, packed)
    b = packed.num_sequences // 2
    return logps[:b], logps[b:]


def pair_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected log-probs from ONE forward pass.

    The batch holds 2B rows: rows 0..B-1 are prompt + chosen, rows B..2B-1 the same prompts +
    rejected (the layout of the pair batches in core/training/batching.py).

    Args:
        model: the causal LM (possibly wrapped).
        input_ids: [2B, T] token ids.
        attention_mask: [2B, T], 1 on real tokens.
        response_mask: [2B, T], 1 on response tokens.

    Returns:
        (chosen [B], rejected [B]) fp32 log pi(y|x), nats.

    Raises:
        ValueError: an odd number of rows.
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
    (``PackedSequences``, core/training/packing.py).

    Args:
        model: the causal LM (possibly wrapped).
        sequences: a pair batch's ``SequenceBatch`` (2B rows) or ``PackedSequences`` (2B sequences).

    Returns:
        (chosen [B], rejected [B]) fp32 log pi(y|x), nats.

    Raises:
        ValueError: a padded batch with an odd number of rows.
    """
    if isinstance(sequences, PackedSequences):
        return packed_pair_logprobs(model, sequences)
    return pair_logprobs(model, sequences.input_ids, sequences.attention_mask, sequences.response_mask)


def response_token_counts(sequences) -> torch.Tensor:
    """Response tokens whose log-probs ``batch_pair_logprobs`` sums, per sequence: [2B] (chosen rows
    first), for padded (``SequenceBatch``: response_mask[:, 1:]) or packed (``PackedSequences``:
    one target per scored token) batches. SimPO and ORPO normalise by it (docs/methods.md s4.4, s4.5).

    Args:
        sequences: a pair batch's ``SequenceBatch`` or ``PackedSequences``.

    Returns:
        [2B] long counts of response tokens per sequence.
    """
    if isinstance(sequences, PackedSequences):
        return torch.bincount(sequences.target_sequence, minlength=sequences.num_sequences)
    return sequences.response_mask[:, 1:].sum(dim=-1)

