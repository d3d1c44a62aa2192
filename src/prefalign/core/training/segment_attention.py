"""Variable-length attention over packed segments, for CPU and any mask-taking kernel (docs/performance.md).

A packed row holds several segments (``packing.py``). Attention must never cross a segment, and in
a prompt-shared segment ``[prompt, chosen response, rejected response]`` the rejected tokens must
not see the chosen ones. A dense [W, W] mask says that, but the kernel then computes every block of
the row, W^2 per row. Here each segment is one or two ``scaled_dot_product_attention`` calls on
its own tokens instead:

- a plain segment, or the ``[prompt, chosen]`` part of a shared one: causal attention over its
  tokens (``is_causal=True``, so the flash kernel skips the blocks above the diagonal);
- the rejected part of a shared segment: queries = the rejected tokens, keys = the prompt then the
  rejected tokens, with a mask that lets rejected token i see the whole prompt and rejected
  tokens 0..i.

So the attention cost is sum(len^2 / 2) over segments, not R * W^2, and rows can be as wide as
the whole batch: the batch becomes one row without padding. On GPU with a flash-attention kernel
the model's own variable-length path is used instead (``packing.model_inputs``).

It is wired in by wrapping transformers' ``"sdpa"`` attention function (``register``): called
with the keyword ``packed_segments`` (a ``SegmentPlan``, which transformers passes from the
model's ``forward`` down to every attention layer, also when gradient checkpointing re-runs a
layer in the backward pass), the wrapper attends per segment; without it, it is transformers' own
SDPA, unchanged. A model whose attention bypasses transformers' interface would ignore the plan
and attend across segments, so ``packing.packed_forward`` checks that every layer read it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


class SegmentPlan:
    """Segments of a packed batch: ``(row, start, prompt_end, chosen_end, end)`` column indices.

    A plain segment has ``prompt_end == chosen_end == end``; a shared one has its prompt in
    ``[start, prompt_end)``, the chosen response in ``[prompt_end, chosen_end)`` and the rejected
    response in ``[chosen_end, end)``. ``calls`` counts the attention layers that read the plan.
    """

    def __init__(self, segments: Sequence[tuple[int, int, int, int, int]], rows: int, width: int):
        self.segments = tuple(tuple(int(v) for v in s) for s in segments)
        self.rows, self.width = rows, width
        self.calls = 0
        # per row: its segments (start, prompt_end, chosen_end, end) in column order, and the sizes
        # that split the row into [start, chosen_end) and [chosen_end, end) pieces plus the tail
        self.by_row: list[list[tuple[int, int, int, int]]] = [[] for _ in range(rows)]
        for row, *columns in sorted(self.segments):
            self.by_row[row].append(tuple(columns))
        self.split_sizes: list[list[int]] = []
        for segs in self.by_row:
            sizes, at = [], 0
            for start, _, chosen_end, end in segs:
                if start != at:
                    raise ValueError(f"packed segments must tile their row from column 0; a segment starts at {start}, not {at}")
                sizes.append(chosen_end - start)
                if end > chosen_end:
                    sizes.append(end - chosen_end)
                at = end
            if at < width:
                sizes.append(width - at)
            self.split_sizes.append(sizes)


def _rejected_mask(n_rejected: int, n_prompt: int, device: torch.device) -> torch.Tensor:
    """[R, P + R] bool: rejected token i sees the P prompt tokens and rejected tokens 0..i."""
    return torch.ones(n_rejected, n_prompt + n_rejected, dtype=torch.bool, device=device).tril(diagonal=n_prompt)


def segment_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    packed_segments: SegmentPlan | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention per packed segment, with transformers' attention-function signature.

    Args:
        module: the attention layer calling (its ``training`` flag switches dropout).
        query: [R, Hq, W, D] (R packed rows of width W, Hq heads of dimension D).
        key: [R, Hkv, W, D] (Hq a multiple of Hkv: grouped-query attention).
        value: [R, Hkv, W, D].
        attention_mask: ignored (the plan says everything).
        dropout: attention-dropout probability, applied only when ``module.training``.
        scaling: the softmax scale; None = 1 / sqrt(D) (SDPA's default).
        packed_segments: the batch's ``SegmentPlan`` (segments per row; ``calls`` is incremented).
        **kwargs: the rest of transformers' call; ``softcap`` and ``sliding_window`` are checked.

    Returns:
        ([R, W, Hq, D] attention output, None); columns outside every segment (row tails) are 0.

    Raises:
        ValueError: without a plan, for a soft-capped layer, or a segment longer than a sliding window.
    """
    plan = packed_segments
    if plan is None:
        raise ValueError("segment attention needs the packed_segments plan of a packed batch")
    if kwargs.get("softcap") is not None:
        raise ValueError("packed batches do not support soft-capped attention; set training.packing: false and training.share_prompt: false")
    window = kwargs.get("sliding_window")
    if window is not None and max(end - start for _, start, _, _, end in plan.segments) > window:
        # within the window a sliding-window layer is plain causal attention; beyond it, it is not
        raise ValueError(f"a packed segment is longer than the model's sliding window ({window} tokens); "
                         "set training.packing: false and training.share_prompt: false")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: every query head reads its key/value head
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    p = dropout if module.training else 0.0
    rows: list[torch.Tensor] = []
    per_row = [t.unbind(0) for t in (query, key, value)]  # unbind, not slices: one backward node per tensor
    for row, segments in enumerate(plan.by_row):
        # one split per row, not a slice per segment: the backward of a slice writes into a
        # zero tensor of the whole input, so slices would cost (segments x row width) per layer
        sizes = plan.split_sizes[row]
        qs, ks, vs = (t[row].unsqueeze(0).split(sizes, dim=2) for t in per_row)
        pieces, i = [], 0
        for start, prompt_end, chosen_end, end in segments:
            pieces.append(F.scaled_dot_product_attention(qs[i], ks[i], vs[i], dropout_p=p, is_causal=True, scale=scaling))
            i += 1
            if end > chosen_end:  # the rejected response of a shared segment: the prompt + its own earlier tokens
                n_prompt = prompt_end - start
                keys = torch.cat([ks[i - 1][:, :, :n_prompt], ks[i]], dim=2)
                values = torch.cat([vs[i - 1][:, :, :n_prompt], vs[i]], dim=2)
                mask = _rejected_mask(end - chosen_end, n_prompt, query.device)
                pieces.append(F.scaled_dot_product_attention(qs[i], keys, values, attn_mask=mask, dropout_p=p, scale=scaling))
                i += 1
        if i < len(sizes):  # the row's tail (padding): never read
            pieces.append(torch.zeros_like(qs[i]))
        rows.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    plan.calls += 1
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Wrap transformers' ``"sdpa"`` attention function so that a ``packed_segments`` plan selects
    ``segment_attention_forward`` (idempotent; without a plan the original function runs)."""
    from transformers import AttentionInterface

    original = AttentionInterface._global_mapping["sdpa"]
    if getattr(original, "_prefalign_original", None) is not None:
        return

    def sdpa_or_segments(module, query, key, value, attention_mask, *args, packed_segments=None, **kwargs):
        if packed_segments is None:
            return original(module, query, key, value, attention_mask, *args, **kwargs)
        return segment_attention_forward(module, query, key, value, attention_mask, *args, packed_segments=packed_segments, **kwargs)

    sdpa_or_segments._prefalign_original = original
    AttentionInterface.register("sdpa", sdpa_or_segments)
