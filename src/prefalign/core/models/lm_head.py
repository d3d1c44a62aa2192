"""Target-token log-probs through the LM head in chunks of positions: no [tokens x vocabulary] tensor.

A policy needs log p(y_t | context) only at response positions. Projecting M positions onto a
vocabulary of V tokens materialises an [M, V] logits tensor (M = 3,200 response tokens and
V = 49,152 is 630 MB in fp32), plus its log-softmax and its gradient in the backward pass. Here
the projection is fused with the log-softmax and the target lookup and runs over ``chunk_tokens``
positions at a time:

    logits_c = h_c W^T            [C, V], one chunk of positions
    logp_i   = logits_c[i, y_i] - logsumexp_j logits_c[i, j]

Only the per-position log-sum-exp ([M] floats) is kept for the backward pass, which recomputes
each chunk's logits and applies d logp_i / d logits_i = onehot(y_i) - softmax(logits_i):

    grad_logits_c = g_c (onehot - p_c),  grad_h_c = grad_logits_c W,  grad_W += grad_logits_c^T h_c

So the peak extra memory is O(chunk_tokens x V) in both passes, at the price of one more
[C, H] x [H, V] product per chunk in the backward pass (the same trade as activation
checkpointing). A head that is not a plain bias-free ``nn.Linear`` (a LoRA-adapted head from peft,
a head with a bias) runs chunk by chunk under ``torch.utils.checkpoint`` through its own forward,
with the same memory bound. A head DeepSpeed ZeRO-3 partitions is not chunked: its weight is whole
only inside its forward, gathered there by a collective that every process must run equally often,
while the processes' numbers of positions (so of chunks) differ; it projects all M positions at
once (the unchunked computation and its [M, V] logits). This is the "fused linear cross-entropy" of e.g. Liger-Kernel and
Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models" (arXiv:2411.09009),
written with plain torch operations.

The chunk size is the model option ``model.logprob_chunk_tokens`` (core/models/backbone.py
ModelConfig), stored on the model's config so that it travels with saved checkpoints and across
processes; ``None`` computes the whole [M, V] logits at once (the unchunked computation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_TOKENS = 256  # 256 x 49,152 fp32 logits = 50 MB per buffer; CPU time flat from 128 to 1024 (docs/performance.md)
CONFIG_ATTRIBUTE = "prefalign_logprob_chunk_tokens"
FROM_MODEL = object()  # default of the ``chunk_tokens`` arguments in policy/logprobs.py: use the model's setting


def check_chunk_tokens(chunk_tokens: int | None) -> None:
    """Raises ValueError unless ``chunk_tokens`` is None or an integer >= 1.

    Args:
        chunk_tokens: positions per LM-head chunk (``model.logprob_chunk_tokens``), or None.

    Raises:
        ValueError: a bool, a non-integer, or an integer < 1.
    """
    if chunk_tokens is not None and (isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1):
        raise ValueError(
            f"model.logprob_chunk_tokens={chunk_tokens!r} must be an integer >= 1 (positions per LM-head chunk) "
            "or null (the whole [tokens x vocabulary] logits at once)"
        )


def _config_of(model: torch.nn.Module):
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP / FSDP wrappers
        model = model.module
    return getattr(model, "config", None)


def set_logprob_chunk_tokens(model: torch.nn.Module, chunk_tokens: int | None) -> None:
    """Store the chunk size on ``model.config`` (saved with the checkpoint, read by :func:`logprob_chunk_tokens`).

    Raises:
        ValueError: ``chunk_tokens`` neither None nor an integer >= 1.

    Args:
        model: the causal LM (DDP/FSDP-wrapped is fine); a model without a config is left alone.
        chunk_tokens: positions per chunk, or None (unchunked).
    """
    check_chunk_tokens(chunk_tokens)
    config = _config_of(model)
    if config is not None:
        setattr(config, CONFIG_ATTRIBUTE, chunk_tokens)


def logprob_chunk_tokens(model: torch.nn.Module) -> int | None:
    """The model's chunk size: the stored setting, else :data:`DEFAULT_CHUNK_TOKENS`; None = unchunked.

    Args:
        model: the causal LM (possibly wrapped).

    Returns:
        Positions per chunk (an int >= 1) or None.
    """
    return getattr(_config_of(model), CONFIG_ATTRIBUTE, DEFAULT_CHUNK_TOKENS)


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the LM head's matmul runs in: autocast's when it is on (as nn.Linear under autocast), else the weight's."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class _LinearTargetLogprobs(torch.autograd.Function):
    """logp [M] = log_softmax(hidden @ weight^T)[i, targets_i], chunk by chunk in both passes (module doc)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
        dtype = _compute_dtype(hidden, weight)
        logp = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        w = weight.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_tokens):
                stop = start + chunk_tokens
                # as lm_head(h).float(): the product in the head's (or autocast's) dtype, the softmax in fp32
                logits = F.linear(hidden[start:stop].to(dtype), w).float()
                target = targets[start:stop, None]
                # log_softmax is one vectorised kernel (torch.logsumexp is ~5x slower on CPU); lse = logit - logp
                logp[start:stop] = torch.log_softmax(logits, dim=-1).gather(1, target).squeeze(1)
                lse[start:stop] = logits.gather(1, target).squeeze(1) - logp[start:stop]
                del logits
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_tokens, ctx.dtype = chunk_tokens, dtype
        return logp

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor):
        hidden, weight, targets, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        w = weight.to(ctx.dtype)
        grad_logp = grad_logp.float()
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], ctx.chunk_tokens):
                stop = start + ctx.chunk_tokens
                h, g = hidden[start:stop].to(ctx.dtype), grad_logp[start:stop]
                # d logp_i / d logits_i = onehot(y_i) - softmax(logits_i), scaled by the incoming gradient
                grad_logits = F.linear(h, w).float().sub_(lse[start:stop, None]).exp_().mul_(-g[:, None])
                grad_logits.scatter_add_(1, targets[start:stop, None], g[:, None])
                grad_logits = grad_logits.to(ctx.dtype)
                if need_hidden:
                    grad_hidden[start:stop] = grad_logits @ w
                if need_weight:
                    if ctx.dtype == grad_weight.dtype:  # fp32: accumulate in place (no [V, H] temporary per chunk)
                        grad_weight.addmm_(grad_logits.t(), h)
                    else:  # bf16/fp16 products, summed over chunks in fp32
                        grad_weight.add_(grad_logits.t() @ h)
                del grad_logits
        return grad_hidden, (grad_weight.to(weight.dtype) if need_weight else None), None, None


def _module_target_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(head(hidden).float(), targets, reduction="none")


def is_plain_linear(head: torch.nn.Module) -> bool:
    """A bias-free ``nn.Linear`` itself (not a subclass or wrapper such as peft's LoRA layers): the fused path's case.

    Args:
        head: the LM head module.

    Returns:
        True only for an exact ``torch.nn.Linear`` with ``bias=None``.
    """
    return type(head) is torch.nn.Linear and head.bias is None


def chunked_target_logprobs(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, chunk_tokens: int | None
) -> torch.Tensor:
    """log softmax(head(hidden))[i, targets_i] per position, without holding [M, V] logits (module doc).

    Args:
        hidden: [M, H] final hidden states of the positions that predict the targets.
        head: the LM head (``model.get_output_embeddings()``), tied to the input embeddings or not.
        targets: [M] token ids.
        chunk_tokens: positions per chunk; None = all M at once (the plain computation).

    Returns:
        [M] fp32 log-probs (nats), differentiable with respect to ``hidden`` and the head's parameters.

    Raises:
        ValueError: ``chunk_tokens`` neither None nor an integer >= 1.

    Source: docs/performance.md ("Log-probs without the full logits").
    """
    check_chunk_tokens(chunk_tokens)
    # A DeepSpeed ZeRO-3 head (its weight has a ``ds_id``) is whole only inside its own forward, where
    # ZeRO-3's hooks gather it with a collective: every process must call it equally often, and the
    # processes' shares hold different numbers of positions, so it runs once, unchunked.
    zero3_head = any(hasattr(p, "ds_id") for p in head.parameters())
    if chunk_tokens is None or hidden.shape[0] <= chunk_tokens or zero3_head:  # one chunk: nothing to save by recomputing
        return _module_target_logprobs(head, hidden, targets)
    if is_plain_linear(head):
        return _LinearTargetLogprobs.apply(hidden, head.weight, targets, chunk_tokens)
    parts = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        parts.append(checkpoint(_module_target_logprobs, head, h, t, use_reentrant=False) if torch.is_grad_enabled()
                     else _module_target_logprobs(head, h, t))
    return torch.cat(parts)
