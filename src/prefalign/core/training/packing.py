"""Padding-free pair batches: sequences packed into rows, and (optionally) one prompt pass per pair.

Input: already-tokenised sequences (``TokenizedSequence``: ids and a prompt length), the output of
whatever tokenisation ``batching.py`` does. Output: ``PackedPairBatch``, a drop-in for
``PairBatch`` in the training loop (``len``, ``num_tokens``, ``to``, ``shard``), read by
``RewardModel.forward`` and by ``policy.logprobs.packed_sequence_logprobs`` (policies, reference log-probs).

Two layouts (docs/performance.md):

- **packed** (``share_prompt=False``): every sequence ``[bos] prompt response [eos]`` is one
  segment; segments are placed first-fit-decreasing into rows of ``row_tokens`` tokens (default:
  the whole batch in one row, so there is no padding at all). Position ids restart at 0 in every
  segment and attention never crosses a segment boundary.
- **prompt-shared** (``share_prompt=True``): a pair whose chosen and rejected sequences start with
  the same prompt tokens is ONE segment ``[prompt, chosen response, rejected response]``. Chosen
  tokens attend to the prompt and to earlier chosen tokens; rejected tokens attend to the prompt
  and to earlier rejected tokens, never to chosen ones; rejected position ids continue from the
  prompt end (they equal the positions the rejected tokens have in their own sequence). So every
  token sees exactly the context it sees in the unpacked sequence, and the prompt is computed
  once instead of twice. A pair whose two prompts differ (truncated differently) falls back to
  two segments, so results never depend on the layout.

With ``row_tokens`` set, the only padding is the tail of rows shorter than the widest row.

Attention runs per segment (``segment_attention.py``: SDPA on CPU and for sdpa models, the
model's variable-length kernel for flash-attention models), never as a dense [W, W] mask, so a
wide row costs no more than its segments. The rule it implements, per row, for query token q and key token k (``attention_mask_4d``)::

    allowed(q, k) = segment[q] == segment[k] and k <= q and (branch[k] == SHARED or branch[k] == branch[q])

Sequence order inside a batch of B pairs is the ``PairBatch`` order: sequences 0..B-1 are the
chosen, B..2B-1 the rejected, so ``RewardOutput.pair_logits`` and the policy losses apply as is.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields, replace
from typing import Iterator, Sequence

import numpy as np
import torch

from prefalign.core.models.backbone import is_bidirectional_encoder
from prefalign.core.training import frozen_cache, segment_attention
from prefalign.core.training.batching import (
    SequenceView,
    TokenizedPairs,
    TokenizedSequence,
    length_grouped_batches,
    make_pair_batches,
    padding_fraction,
    pair_lengths,
)

SHARED, CHOSEN, REJECTED = 0, 1, 2  # branch ids: prompt tokens, chosen-response tokens, rejected-response tokens


@dataclass
class PackedSequences:
    """N sequences packed into R rows of width W.

    Shapes: ``input_ids``, ``position_ids`` [R, W] (long); ``segment_ids``, ``branch_ids`` [R, W]
    are derived from ``plan`` on demand (the attention rule's inputs; the kernel reads the plan);
    ``last_index``, ``last_prompt_index`` [N, 2] (row, column) of each sequence's last token and
    last prompt token; the M response-token targets as ``target_row``, ``target_source`` (the
    column whose logits predict the target), ``target_ids``, ``target_sequence`` [M].
    ``num_tokens`` counts the sequences' own tokens (a shared prompt counts once per sequence, so it
    equals the unpacked count); ``slots`` = R * W is what the forward pass computes. ``plan``
    lists the segments for the attention kernel (``segment_attention.SegmentPlan``).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    last_index: torch.Tensor
    last_prompt_index: torch.Tensor
    target_row: torch.Tensor
    target_source: torch.Tensor
    target_ids: torch.Tensor
    target_sequence: torch.Tensor
    num_tokens: int
    computed_tokens: int  # non-padding slots (a shared prompt counted once)
    plan: segment_attention.SegmentPlan

    @property
    def num_sequences(self) -> int:
        """N, the number of packed sequences (2B for B pairs)."""
        return int(self.last_index.shape[0])

    @property
    def shares_prompts(self) -> bool:
        """Whether any segment is a prompt-shared [prompt, chosen, rejected] one."""
        return any(prompt_end < end for _, _, prompt_end, _, end in self.plan.segments)

    @property
    def segment_ids(self) -> torch.Tensor:
        """[R, W]: each column's segment number in its row (a row's tail is one more segment)."""
        ids = torch.zeros(self.input_ids.shape, dtype=torch.long)
        for row, segments in enumerate(self.plan.by_row):
            for k, (start, _, _, end) in enumerate(segments):
                ids[row, start:end] = k
            ids[row, segments[-1][3]:] = len(segments)
        return ids.to(self.input_ids.device)

    @property
    def branch_ids(self) -> torch.Tensor:
        """[R, W]: SHARED for prompt tokens, plain segments and tails; CHOSEN / REJECTED for the responses of a shared segment."""
        ids = torch.full(self.input_ids.shape, SHARED, dtype=torch.long)
        for row, start, prompt_end, chosen_end, end in self.plan.segments:
            if prompt_end < end:
                ids[row, prompt_end:chosen_end] = CHOSEN
                ids[row, chosen_end:end] = REJECTED
        return ids.to(self.input_ids.device)

    @property
    def padding_fraction(self) -> float:
        """Share of the R * W slots that are row-tail padding (0 with one row)."""
        return 1.0 - self.computed_tokens / max(1, self.input_ids.numel())

    def to(self, device: torch.device | str) -> "PackedSequences":
        """The same packed sequences with every tensor on ``device``.

        Args:
            device: a torch device or its name.

        Returns:
            A new PackedSequences (the plan is shared, not copied).
        """
        return PackedSequences(**{
            f.name: (getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), torch.Tensor) else getattr(self, f.name))
            for f in fields(self)
        })


def _first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Unit indices per row: longest first, each into the first row with room (deterministic)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for unit in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, room in enumerate(free):
            if lengths[unit] <= room:
                rows[r].append(unit)
                free[r] -= lengths[unit]
                break
        else:
            rows.append([unit])
            free.append(capacity - lengths[unit])
    return rows


def shared_prompt_length(chosen: TokenizedSequence, rejected: TokenizedSequence) -> int:
    """The prompt length both sides share, or 0 when their prompt tokens differ (no sharing).

    Args:
        chosen: the chosen sequence (ids and prompt length).
        rejected: the rejected sequence.

    Returns:
        The prompt length in tokens when both prompt lengths and prompt token ids agree, else 0.
    """
    p = chosen.prompt_length
    if p != rejected.prompt_length or chosen.input_ids[:p] != rejected.input_ids[:p]:
        return 0
    return p


def pack_pairs(
    chosen: Sequence[TokenizedSequence],
    rejected: Sequence[TokenizedSequence],
    share_prompt: bool = False,
    row_tokens: int | None = None,
    pad_token_id: int = 0,
) -> PackedSequences:
    """Pack B pairs (2B sequences, chosen first) into rows; see the module doc for the layouts.

    Args:
        chosen, rejected: B tokenised sequences each; pair i is (chosen[i], rejected[i]).
        share_prompt: one segment [prompt, chosen response, rejected response] per pair whose
            prompt tokens agree.
        row_tokens: row capacity in tokens; None = all segments in one row (no padding).
        pad_token_id: id written in the row tails (they form a segment of their own, never read).

    Returns:
        ``PackedSequences`` with N = 2B sequences.

    Raises:
        ValueError: if the sides differ in count, a sequence is empty, or a segment is longer than
            ``row_tokens``.
    """
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen but {len(rejected)} rejected sequences; pairs need one of each")
    if any(len(s) == 0 for s in (*chosen, *rejected)):
        raise ValueError("an empty sequence cannot be packed (it has no last token to read)")
    b = len(chosen)
    sequences = list(chosen) + list(rejected)
    units: list[tuple[list[int], tuple[int, int] | None]] = []  # token ids, (prompt length, chosen length) if shared
    unit_cols: list[list[np.ndarray]] = []  # per unit: for each of its sequences, the column of each token
    unit_seqs: list[list[int]] = []
    for i in range(b):
        c, r = chosen[i], rejected[i]
        p = shared_prompt_length(c, r) if share_prompt else 0
        if p:
            ids = c.input_ids + r.input_ids[p:]
            lc, lr = len(c), len(r) - p
            cols_c = np.arange(lc)
            cols_r = np.concatenate([np.arange(p), lc + np.arange(lr)])
            units.append((ids, (p, lc)))
            unit_cols.append([cols_c, cols_r])
            unit_seqs.append([i, b + i])
        else:
            for s in (i, b + i):
                units.append((sequences[s].input_ids, None))
                unit_cols.append([np.arange(len(sequences[s]))])
                unit_seqs.append([s])
    lengths = [len(u[0]) for u in units]
    capacity = sum(lengths) if row_tokens is None else row_tokens
    if max(lengths) > capacity:
        raise ValueError(f"a segment of {max(lengths)} tokens does not fit row_tokens={capacity}; raise row_tokens or leave it null")
    rows = _first_fit_decreasing(lengths, capacity)
    width = max(sum(lengths[u] for u in row) for row in rows)
    n_rows = len(rows)
    input_ids = np.full((n_rows, width), pad_token_id, dtype=np.int64)
    position_ids = np.zeros((n_rows, width), dtype=np.int64)
    n = 2 * b
    last_index = np.zeros((n, 2), dtype=np.int64)
    last_prompt = np.zeros((n, 2), dtype=np.int64)
    t_row, t_src, t_ids, t_seq = [], [], [], []
    segments = []  # (row, start, prompt_end, chosen_end, end) per unit
    for r, row in enumerate(rows):
        start = 0
        for unit in row:
            ids, shared = units[unit]
            end = start + len(ids)
            if shared:  # [prompt | chosen response | rejected response]
                segments.append((r, start, start + shared[0], start + shared[1], end))
            else:
                segments.append((r, start, end, end, end))
            input_ids[r, start:end] = ids
            for s, cols in zip(unit_seqs[unit], unit_cols[unit]):
                seq = sequences[s]
                position_ids[r, start + cols] = np.arange(len(seq))  # token t of a sequence sits at position t
                last_index[s] = (r, start + cols[-1])
                last_prompt[s] = (r, start + cols[max(seq.prompt_length, 1) - 1])
                # response token t (t >= prompt_length, t >= 1) is predicted by the logits at token t - 1
                first = max(seq.prompt_length, 1)
                if first < len(seq):
                    t_row.append(np.full(len(seq) - first, r))
                    t_src.append(start + cols[first - 1 : len(seq) - 1])
                    t_ids.append(np.asarray(seq.input_ids[first:]))
                    t_seq.append(np.full(len(seq) - first, s))
            start = end
        if start < width:  # the row's tail: its own segment, positions from 0 (never attended to by real tokens)
            position_ids[r, start:] = np.arange(width - start)
    cat = lambda parts: torch.from_numpy(np.concatenate(parts).astype(np.int64)) if parts else torch.zeros(0, dtype=torch.long)  # noqa: E731
    return PackedSequences(
        input_ids=torch.from_numpy(input_ids),
        position_ids=torch.from_numpy(position_ids),
        last_index=torch.from_numpy(last_index),
        last_prompt_index=torch.from_numpy(last_prompt),
        target_row=cat(t_row),
        target_source=cat(t_src),
        target_ids=cat(t_ids),
        target_sequence=cat(t_seq),
        num_tokens=sum(len(s) for s in sequences),
        computed_tokens=sum(lengths),
        plan=segment_attention.SegmentPlan(segments, n_rows, width),
    )


def attention_mask_4d(packed: PackedSequences) -> torch.Tensor:
    """Boolean [R, 1, W, W] mask, True where query q may attend to key k (the module doc's rule).

    Args:
        packed: the packed batch (R rows of width W).

    Returns:
        A bool tensor [R, 1, W, W] on ``packed.input_ids``'s device. Reference form of the rule (tests);
        the forward pass never builds it.
    """
    seg, br = packed.segment_ids, packed.branch_ids
    w = seg.shape[1]
    causal = torch.ones(w, w, dtype=torch.bool, device=seg.device).tril()
    same = seg[:, :, None] == seg[:, None, :]
    branch_ok = (br[:, None, :] == SHARED) | (br[:, :, None] == br[:, None, :])
    return (same & branch_ok & causal)[:, None]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP / FSDP wrappers
        model = model.module
    return model


def model_inputs(model: torch.nn.Module, packed: PackedSequences) -> dict[str, object]:
    """The keyword arguments of ``model``'s forward for a packed batch, per its attention kernel.

    - flash-attention kernels: ``input_ids`` and ``position_ids`` only; transformers reads the
      segment starts from the restarting position ids (variable-length attention). Prompt sharing
      cannot be said that way.
    - sdpa: also ``packed_segments`` (the segment plan, read by ``segment_attention``) and a
      placeholder [R, 1, 1, 1] mask that stops transformers from building a dense [W, W] one.

    Raises:
        ValueError: prompt sharing with a flash-attention kernel, or any other kernel (eager,
            flex): set model.attn_implementation to sdpa.

    Args:
        model: the model (DDP/FSDP-wrapped is fine); its config's ``_attn_implementation`` picks the kernel.
        packed: the packed batch.

    Returns:
        ``{"input_ids": [R, W], "position_ids": [R, W], "attention_mask": None or [R, 1, 1, 1] bool,
        "packed_segments": SegmentPlan (sdpa only)}``.
    """
    config = getattr(_unwrap(model), "config", None)
    impl = str(getattr(config, "_attn_implementation", None) or "sdpa")
    inputs: dict[str, object] = {"input_ids": packed.input_ids, "position_ids": packed.position_ids}
    if "flash" in impl:
        if packed.shares_prompts:
            raise ValueError(
                f"training.share_prompt needs a mask-taking attention kernel, but the model uses {impl!r}; "
                "set model.attn_implementation: sdpa, or training.share_prompt: false"
            )
        inputs["attention_mask"] = None
        return inputs
    if impl != "sdpa":
        raise ValueError(
            f"packed batches (training.packing / training.share_prompt) attend per segment through SDPA, but the model uses "
            f"attn_implementation {impl!r}; set model.attn_implementation: sdpa, or training.packing and training.share_prompt: false"
        )
    segment_attention.register()
    inputs["attention_mask"] = torch.ones(packed.input_ids.shape[0], 1, 1, 1, dtype=torch.bool, device=packed.input_ids.device)
    inputs["packed_segments"] = packed.plan
    return inputs


def packed_forward(model: torch.nn.Module, packed: PackedSequences, **kwargs):
    """``model(**model_inputs(model, packed), **kwargs)``, checking that attention stayed inside segments.

    Raises:
        RuntimeError: when fewer attention layers than the model's ``num_hidden_layers`` read the
            segment plan (a model whose attention bypasses transformers' interface would otherwise
            attend across packed sequences without a word).

    Args:
        model: the model (possibly wrapped); runs from the frozen-layer cache when one is attached.
        packed: the packed batch.
        **kwargs: passed on to the model (e.g. ``logits_to_keep``).

    Returns:
        The model's own output object (``last_hidden_state`` [R, W, H] or ``logits`` [R, W, V]).
    """
    inputs = model_inputs(model, packed)
    cache = frozen_cache.frozen_cache_of(model)
    if cache is not None:  # model.cache_frozen_layers: only the layers above the frozen ones run
        return frozen_cache.forward_from_cache(model, packed, inputs, cache, **kwargs)
    packed.plan.calls = 0
    out = model(**inputs, **kwargs)
    if "packed_segments" in inputs:
        config = getattr(_unwrap(model), "config", None)
        layers = getattr(getattr(config, "get_text_config", lambda: config)(), "num_hidden_layers", None)
        if layers and packed.plan.calls < layers:
            raise RuntimeError(
                f"only {packed.plan.calls} of {layers} attention layers of {type(_unwrap(model)).__name__} attended per packed segment, "
                "so attention would cross packed sequences: this model does not route attention through transformers' attention "
                "interface; set training.packing: false and training.share_prompt: false"
            )
    return out


def packed_hidden_rows(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden [R, W, H], index [N, 2] (row, column) -> [N, H].

    Args:
        hidden: [R, W, H] hidden states (or logits) of a packed batch.
        index: [N, 2] long, (row, column) per sequence, e.g. ``last_index``.

    Returns:
        [N, H]: row i is ``hidden[index[i, 0], index[i, 1]]``.
    """
    return hidden[index[:, 0], index[:, 1]]


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether ``model`` takes a boolean [R, W] ``logits_to_keep`` (transformers >= 5 does; older ones only ints)."""
    return _class_accepts_logits_to_keep(type(_unwrap(model)))


@functools.lru_cache(maxsize=None)
def _class_accepts_logits_to_keep(model_class: type) -> bool:
    # once per model class, not per forward pass (inspect.signature is slow on the hot path)
    import transformers.modeling_utils as modeling_utils

    if not hasattr(modeling_utils, "slice_logits_to_keep"):
        return False
    try:
        return "logits_to_keep" in inspect.signature(model_class.forward).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class PackedPairBatch:
    """B pairs, packed; the same interface as ``PairBatch`` for the training loop.

    Keeps the tokenised sequences (shared with ``TokenizedPairs``, not copied) so that ``shard``
    can re-pack a process's share of the pairs.
    """

    chosen: list[TokenizedSequence]
    rejected: list[TokenizedSequence]
    p_chosen: torch.Tensor  # [B]
    margin: torch.Tensor  # [B]
    pair_index: torch.Tensor  # [B]
    share_prompt: bool = False
    row_tokens: int | None = None
    pad_token_id: int = 0
    sequences: PackedSequences | None = None

    def __post_init__(self) -> None:
        if self.sequences is None:
            self.sequences = pack_pairs(self.chosen, self.rejected, self.share_prompt, self.row_tokens, self.pad_token_id)

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def num_tokens(self) -> int:
        """The pairs' own tokens (as unpacked; a shared prompt counts once per sequence)."""
        return self.sequences.num_tokens

    def to(self, device: torch.device | str) -> "PackedPairBatch":
        """The batch with its tensors (targets and packed sequences) on ``device``.

        Args:
            device: a torch device or its name.

        Returns:
            A new PackedPairBatch sharing the tokenised sequences.
        """
        return PackedPairBatch(self.chosen, self.rejected, self.p_chosen.to(device), self.margin.to(device), self.pair_index.to(device),
                               self.share_prompt, self.row_tokens, self.pad_token_id, self.sequences.to(device))

    def shard(self, rank: int, world_size: int) -> "PackedPairBatch":
        """This process's share (pairs rank, rank+W, ...), re-packed; as ``PairBatch.shard``.

        Args:
            rank: this process's index.
            world_size: the number of processes (1 returns ``self``).

        Returns:
            A PackedPairBatch with pairs rank, rank + W, ... packed anew.
        """
        if world_size == 1:
            return self
        keep = list(range(rank, len(self), world_size))
        index = torch.as_tensor(keep, dtype=torch.long)
        return PackedPairBatch([self.chosen[i] for i in keep], [self.rejected[i] for i in keep], self.p_chosen[index],
                               self.margin[index], self.pair_index[index], self.share_prompt, self.row_tokens, self.pad_token_id)


class PackedPairBatches(Sequence[PackedPairBatch]):
    """The batches of one epoch layout, each packed on first access and kept (later epochs and
    evaluation passes reuse it, as the padded layout keeps its collated batches).

    Same pairs per batch as ``make_pair_batches`` with the same ``seed`` (``length_grouped_batches``
    on the longer side's length), so packed and padded runs see identical batches.
    """

    def __init__(self, tokenized: TokenizedPairs, batch_size: int, pad_token_id: int, seed: int | None = 0,
                 share_prompt: bool = False, row_tokens: int | None = None):
        lengths = pair_lengths(tokenized)
        self.tokenized = tokenized
        self.index = length_grouped_batches(lengths, batch_size, seed) if len(lengths) else []
        self.share_prompt, self.row_tokens, self.pad_token_id = share_prompt, row_tokens, pad_token_id
        self._packed: dict[int, PackedPairBatch] = {}
        # pairs read on demand from the token cache (token_cache.py): pack when read, keep nothing
        self._keep = not isinstance(tokenized.chosen, SequenceView)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> PackedPairBatch:  # type: ignore[override]
        if not self._keep:
            return self._pack(k)
        if k not in self._packed:
            self._packed[k] = self._pack(k)
        return self._packed[k]

    def _pack(self, k: int) -> PackedPairBatch:
        index = self.index[k]
        t = self.tokenized
        return PackedPairBatch(
            [t.chosen[i] for i in index], [t.rejected[i] for i in index],
            torch.tensor(t.p_chosen[index], dtype=torch.float32), torch.tensor(t.margin[index], dtype=torch.float32),
            torch.as_tensor(index, dtype=torch.long), self.share_prompt, self.row_tokens, self.pad_token_id,
        )

    def __iter__(self) -> Iterator[PackedPairBatch]:
        return (self[k] for k in range(len(self)))


def make_packed_pair_batches(tokenized: TokenizedPairs, batch_size: int, pad_token_id: int, seed: int | None = 0,
                             share_prompt: bool = False, row_tokens: int | None = None) -> PackedPairBatches:
    """Packed counterpart of ``batching.make_pair_batches`` (same pairs per batch).

    Args:
        tokenized: the tokenised pairs.
        batch_size: pairs per batch.
        pad_token_id: the id written into row tails.
        seed: the length-grouped shuffle's seed; None = sorted by length (evaluation).
        share_prompt: one segment per pair whose prompt tokens agree.
        row_tokens: row capacity in tokens; None = one row per batch.

    Returns:
        A lazy ``PackedPairBatches`` (each batch is packed on first access and kept).
    """
    return PackedPairBatches(tokenized, batch_size, pad_token_id, seed, share_prompt, row_tokens)


def packed_padding_fraction(batches: Sequence[PackedPairBatch]) -> float:
    """Share of computed slots that are row-tail padding, over all batches.

    Args:
        batches: packed pair batches.

    Returns:
        1 - computed tokens / (R * W slots), summed over the batches; 0 for no batches.
    """
    if isinstance(batches, PackedPairBatches) and batches.row_tokens is None and len(batches):
        return 0.0  # every batch is one row exactly as wide as its segments: no slot is padding
    slots = computed = 0
    for batch in batches:
        slots += batch.sequences.input_ids.numel()
        computed += batch.sequences.computed_tokens
    return 1.0 - computed / max(1, slots)


def packable(model: torch.nn.Module) -> tuple[bool, bool]:
    """Whether ``model`` can be fed packed batches, and prompt-shared ones (what ``auto`` turns on).

    Packed rows need a causal decoder whose output is read at a sequence's last token (reward models
    with ``head.pooling: last``; causal LMs) and an attention kernel that keeps attention inside a
    segment: SDPA (both layouts) or flash attention (packing only: it cannot express a shared prompt).
    Bidirectional encoders (BERT-like, a reward model's ``bidirectional``), other poolings and other
    kernels (eager, flex) get the padded layout.

    Returns:
        (packing possible, prompt sharing possible).

    Args:
        model: a reward model or causal LM (possibly DDP-wrapped or with a peft backbone).
    """
    model = _unwrap(model)
    if getattr(model, "bidirectional", False) or getattr(getattr(model, "head_config", None), "pooling", "last") != "last":
        return False, False
    inner = getattr(model, "backbone", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft LoRA wrapper
    config = getattr(inner, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False, False
    if is_bidirectional_encoder(config):  # BERT, RoBERTa, DeBERTa, ...
        return False, False
    impl = str(getattr(config, "_attn_implementation", None) or "sdpa")
    return impl == "sdpa" or "flash" in impl, impl == "sdpa"


def resolve_layout(training, model: torch.nn.Module):
    """``training`` with ``packing`` / ``share_prompt`` ``auto`` replaced by what ``model`` supports
    (``packable``): on for causal decoders read at the last token, padded for encoders. Explicit
    true / false are kept (an explicit true on a model that cannot pack fails at its first forward,
    naming the switch).

    Args:
        training: a ``TrainConfig``.
        model: the model the batches are for (reward model or causal LM; DDP-wrapped is fine).

    Returns:
        A ``TrainConfig`` whose two switches are booleans.
    """
    can_pack, can_share = packable(model)
    share = can_share if training.share_prompt == "auto" else training.share_prompt
    pack = (can_pack or share) if training.packing == "auto" else training.packing
    return replace(training, packing=bool(pack), share_prompt=bool(share))


def pair_batches(tokenized: TokenizedPairs, batch_size: int, pad_token_id: int, seed: int | None, training=None) -> Sequence:
    """Pair batches in the layout ``training`` asks for (``training.packing`` / ``training.share_prompt``).

    Args:
        tokenized: the tokenised pairs (chosen and rejected sequences, p_chosen, margin).
        batch_size: pairs per batch.
        pad_token_id: the id written into padding (padded layout) or row tails (packed).
        seed: the length-grouped shuffle's seed; None = sorted by length, deterministic (evaluation).
        training: a ``TrainConfig`` with both switches resolved (``resolve_layout``), or None: padded
            ``PairBatch``es.

    Returns:
        ``PackedPairBatches`` when either switch is on, else ``make_pair_batches``' list. Both
        hold the same pairs per batch, so a run's batches do not depend on the switch.

    Raises:
        ValueError: a switch is still ``auto`` (the layout depends on the model: resolve it first).
    """
    if training is not None and "auto" in (training.packing, training.share_prompt):
        raise ValueError("training.packing / training.share_prompt 'auto' depends on the model; call "
                         "resolve_layout(training, model) before building batches")
    if training is not None and (training.packing or training.share_prompt):
        return make_packed_pair_batches(tokenized, batch_size, pad_token_id, seed, share_prompt=training.share_prompt)
    return make_pair_batches(tokenized, batch_size, pad_token_id, seed=seed)


def any_padding_fraction(batches: Sequence) -> float:
    """Padding share of padded (``PairBatch``) or packed (``PackedPairBatch``) batches.

    Args:
        batches: a sequence of ``PairBatch`` / ``SequenceBatch``, or of ``PackedPairBatch``.

    Returns:
        The share of computed token slots that are padding (a fraction in [0, 1)).
    """
    if len(batches) and isinstance(batches[0], PackedPairBatch):
        return packed_padding_fraction(batches)
    return padding_fraction(batches)
