"""The last transformer layer at the pooled positions only, for reward scoring (docs/performance.md).

A reward model reads the backbone's last hidden state at one or two positions per sequence (the
last token; for GPM also the last prompt token). Every other position's last-layer output is
computed and thrown away. In a pre-norm decoder layer

    a = h + o_proj(attention(q_proj(n1(h)), k_proj(n1(h)), v_proj(n1(h))))
    out = a + mlp(n2(a))

the keys and values of EVERY position feed the attention of the pooled ones, so ``n1``, ``k_proj``
and ``v_proj`` must run on all positions; but ``o_proj`` and ``mlp`` act on each position alone,
so computing them at the pooled positions only gives the same pooled outputs. For a Llama-shaped
layer that removes ``o_proj`` and the MLP (H^2 + 3 H I of its H^2 (2 + 2 Hkv/Hq) + 3 H I
multiply-adds per token: 84% for SmolLM2-135M) for all other positions; ``q_proj``, the attention
itself and the final norm still run everywhere (they are elementwise or would need the model's
own attention code). Outputs at the other positions of the last layer are NOT the model's
(they are the post-attention residual): only the listed positions may be read.

Under gradient checkpointing the layer is re-run in the backward pass outside this context, so
:func:`last_layer_at_rows` then does nothing (the plain computation).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from prefalign.core.models.backbone import transformer_layers


def _row_wise_modules(model: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The last layer's position-wise modules after its attention (``self_attn.o_proj``, ``mlp``), or
    None when the model's last layer does not have that (Llama-family) shape."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        last = transformer_layers(base)[-1]
    except (ValueError, AttributeError):
        return None
    attention, mlp = getattr(last, "self_attn", None), getattr(last, "mlp", None)
    o_proj = getattr(attention, "o_proj", None)
    if not isinstance(mlp, torch.nn.Module) or not isinstance(o_proj, torch.nn.Module):
        return None
    return [o_proj, mlp]


def supports_last_layer_at_rows(model: torch.nn.Module) -> bool:
    """Whether :func:`last_layer_at_rows` removes work on ``model`` (a Llama-shaped last layer, no
    gradient checkpointing).

    Args:
        model: the backbone (a transformers decoder model).

    Returns:
        True when its last layer has an ``o_proj`` and an ``mlp`` that can run at some rows only.
    """
    flag = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else "is_gradient_checkpointing"
    if getattr(model, flag, False):
        return False
    return _row_wise_modules(model) is not None


def _at_rows(module: torch.nn.Module, flat_index: torch.Tensor):
    forward = module.forward

    def at_rows(x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        y = forward(flat.index_select(0, flat_index))
        out = y.new_zeros(flat.shape[0], y.shape[-1]).index_copy(0, flat_index, y)
        return out.reshape(*lead, y.shape[-1])

    return at_rows


@contextmanager
def last_layer_at_rows(model: torch.nn.Module, rows: torch.Tensor, width: int) -> Iterator[bool]:
    """Within the context, the last layer's ``o_proj`` and MLP run only at ``rows``.

    Args:
        model: a backbone (``AutoModel``, maybe peft-wrapped) whose forward inputs are [R, W] rows.
        rows: [N, 2] long (row, column) positions whose last hidden state will be read (duplicates allowed).
        width: W, the columns per row of the forward's inputs.

    Returns:
        (as the context value) True when the work is removed, False when the model is left as it is
        (no Llama-shaped last layer, or gradient checkpointing on).
    """
    modules = _row_wise_modules(model) if supports_last_layer_at_rows(model) else None
    if modules is None:
        yield False
        return
    flat_index = torch.unique(rows[:, 0].long() * width + rows[:, 1].long())  # unique: index_copy's gradient must not double
    saved = [module.__dict__.get("forward") for module in modules]  # an instance-level forward (hooks) is kept
    for module in modules:
        module.forward = _at_rows(module, flat_index)
    try:
        yield True
    finally:
        for module, forward in zip(modules, saved):
            if forward is None:
                del module.forward  # back to the class's forward
            else:
                module.forward = forward
