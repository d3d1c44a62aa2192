"""Tokenise (prompt, response) sequences and group them into low-padding batches (methods.md s6).

Three layouts, chosen from the tokenizer (``sequence_layout``):

- ``chat_template``: the tokenizer has a chat template. The prompt is the conversation's turns
  (``prompt_messages``; one user turn holding the prompt text when a row has none) rendered with
  the generation prompt; the whole sequence is the conversation plus the response as the assistant
  turn, i.e. exactly ``apply_chat_template(messages + [assistant])``; the response ids are the
  suffix after the prompt ids.
- ``pair``: encoders (the tokenizer has a CLS and a SEP token, e.g. BERT/MiniLM/DeBERTa/RoBERTa):
  the tokenizer's own pair layout, ``[CLS] prompt [SEP] response [SEP]`` for BERT.
- ``flatten``: anything else (the BPE trained here, base decoders): ``[bos] prompt response [eos]``;
  a tokenizer without BOS puts its EOS in front, one without EOS ends without it. The text is
  rendered by ``FLATTEN_TEMPLATE`` (a chat template: the row's flattened ``prompt`` as one user
  turn, the response as the assistant turn) and tokenised as ONE string, exactly as
  ``apply_chat_template`` with that template tokenises it; saved tokenizers carry it
  (``layout_chat_template``), so exported models are scored in this layout by plain transformers.

Text is text: special-token strings inside prompts and responses (BOS/EOS/PAD/SEP, template
markers such as ``<|im_start|>``) are encoded as ordinary text, never as control ids; only the
layout itself adds control ids (chat templates via transformers' ``sanitize_control_tokens``).

``response_mask`` marks the response tokens (eos / end-of-turn included), so policies can sum
response-only log-probs. ``last_prompt_index`` is the last prompt token (GPM's gate reads it) and
``last_index`` the last real token (decoder reward heads read it).

Truncation is explicit and counted, never a silent drop, and decided once per PAIR: the prompt is cut
from the LEFT (after a leading BOS/CLS, which is kept) to what fits beside the LONGER response but
never below ``max_prompt_length``, so both sides see the same prompt tokens; then each response is
cut from the right. A pair whose two sides are token-identical after truncation carries no
preference: it is flagged (``TokenizedPairs.identical``) and counted, and training leaves it out.

Pairs: chosen and rejected of a pair go through ONE forward pass. A ``PairBatch`` of B pairs
holds 2B sequences: rows 0..B-1 are the chosen, rows B..2B-1 the rejected responses.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

LAYOUTS = ("chat_template", "pair", "flatten")
Messages = Sequence[Mapping[str, Any]]

# The ``flatten`` layout as a chat template: BOS (EOS when there is none), the prompt turns flattened as
# docs/feedback.md "Chat flattening" writes them (core/feedback/parsers.flatten_messages: system texts
# first, one user turn as is, longer dialogues as "\n\nHuman: ...\n\nAssistant: ..." ending in
# "\n\nAssistant:"), then the final assistant turn's text (the response) and EOS. prefalign renders a
# row's ``prompt`` text as one user turn, so the prompt is that text unchanged.
FLATTEN_TEMPLATE = (
    "{%- if messages and messages[-1]['role'] == 'assistant' -%}{%- set turns = messages[:-1] -%}"
    "{%- else -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- set ns = namespace(head='', body='', n=0, only='', role='') -%}"
    "{%- for m in turns -%}"
    "{%- if m['role'] == 'system' -%}{%- set ns.head = ns.head + m['content'] + '\n\n' -%}"
    "{%- else -%}{%- set ns.n = ns.n + 1 -%}{%- set ns.only = m['content'] -%}{%- set ns.role = m['role'] -%}"
    "{%- set ns.body = ns.body + '\n\n' + ('Human' if m['role'] == 'user' else 'Assistant') + ': ' + m['content'] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if bos_token -%}{{- bos_token -}}{%- elif eos_token -%}{{- eos_token -}}{%- endif -%}"
    "{%- if ns.n == 1 and ns.role == 'user' -%}{{- ns.head + ns.only -}}"
    "{%- else -%}{{- (ns.head.rstrip('\n') + ns.body if ns.head else ns.body) + '\n\nAssistant:' -}}{%- endif -%}"
    "{%- if messages and messages[-1]['role'] == 'assistant' -%}"
    "{{- messages[-1]['content'] -}}{%- if eos_token -%}{{- eos_token -}}{%- endif -%}"
    "{%- endif -%}"
)


@dataclass
class TruncationStats:
    """Counts of what truncation did; a person reads these in the run's metrics."""

    sequences: int = 0
    truncated_prompts: int = 0
    truncated_responses: int = 0
    prompt_tokens_removed: int = 0
    response_tokens_removed: int = 0
    identical_after_truncation: int = 0  # pairs whose two sides became the same ids (no preference left)

    def add(self, other: "TruncationStats") -> "TruncationStats":
        """The field-by-field sum of two sets of counts; neither is modified.

        Args:
            other: the counts to add to these.

        Returns:
            A new ``TruncationStats`` whose every count is ``self``'s plus ``other``'s.
        """
        return TruncationStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        """The counts by field name, in field order (for the run's metrics).

        Returns:
            ``{field name: count}`` for every field.
        """
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class TokenizedSequence:
    input_ids: list[int]
    prompt_length: int  # tokens before the response, bos / template header included

    def __len__(self) -> int:
        return len(self.input_ids)


class SequenceView(Sequence[TokenizedSequence]):
    """Tokenised sequences read on demand from flat arrays (the on-disk token cache,
    ``core/training/token_cache.py``), never held as Python lists all at once.

    Sequence ``j`` of the store is ``tokens[offsets[j]:offsets[j + 1]]`` with prompt length
    ``prompt_lengths[j]``; item ``i`` of the view is store sequence ``start + step * rows[i]``
    (``rows`` None: ``rows[i] = i``). Items are ``TokenizedSequence``s equal to the ones
    ``tokenize_pairs`` makes (ids as Python ints).

    Args:
        tokens: [T] int token ids of all sequences, back to back.
        offsets: [S + 1] int64 start of each sequence in ``tokens`` (``offsets[-1] = T``); read by
            contiguous slices only (an array, or the cache's ``FileArray``).
        prompt_lengths: [S] int prompt length of each sequence, in tokens.
        start, step: this view's store sequences are ``start, start + step, ...`` (pairs: chosen
            ``0, 2``, rejected ``1, 2``).
        rows: [M] int positions (subset / repeat; ``index_dtype``: int32 below 2^31 items), a
            ``KeptRows`` (a subset that leaves out few), or None for all ``(S - start + step - 1) // step``.

    Lengths are read from ``offsets`` in chunks when asked (``lengths``), so nothing per sequence
    stays resident.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, prompt_lengths: np.ndarray, start: int = 0,
                 step: int = 1, rows: np.ndarray | None = None):
        self.tokens, self.offsets, self.prompt_lengths = tokens, offsets, prompt_lengths
        self.start, self.step, self.rows = start, step, rows

    def __len__(self) -> int:
        if self.rows is not None:
            return len(self.rows)
        return self.store_items()

    def store_items(self) -> int:
        """Items of this view's store sequences ``start, start + step, ...`` (its length without ``rows``).

        Returns:
            The number of store items this view can address.
        """
        return max(0, (len(self.prompt_lengths) - self.start + self.step - 1) // self.step)

    def _store_index(self, i) -> int:
        return self.start + self.step * int(i if self.rows is None else self.rows[i])

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} of a view of {len(self)}")
        j = self._store_index(int(i) % len(self))
        start, stop = self.offsets[j : j + 2]
        return TokenizedSequence(self.tokens[int(start) : int(stop)].tolist(), int(self.prompt_lengths[j]))

    def with_rows(self, rows: np.ndarray | None) -> "SequenceView":
        """The same store seen through ``rows`` (positions into the store's items, not into this view).

        Args:
            rows: [M] int store item positions, or None for all.

        Returns:
            A ``SequenceView`` over the same arrays.
        """
        return SequenceView(self.tokens, self.offsets, self.prompt_lengths, self.start, self.step, rows)

    def take(self, index: Sequence[int] | np.ndarray) -> "SequenceView":
        """The items at ``index`` as a view: nothing is read or copied but the index.

        Args:
            index: [M] int positions into this view, ``0 <= index[i] < len(self)``, in any order,
                repeats allowed.

        Returns:
            A ``SequenceView`` of M items over the same arrays: item ``i`` is ``self[index[i]]``.
        """
        return self.with_rows(_compose(self.rows, compact_index(index, len(self))))

    def store_lengths(self, chunk: int = 1 << 16) -> np.ndarray:
        """The length of every store item of this view (``rows`` ignored), from the offsets read
        ``chunk`` items at a time (contiguous reads: the cache's file is never mapped whole).

        Args:
            chunk: items per read of the offsets.

        Returns:
            [store_items()] int32 lengths in tokens.
        """
        n = self.store_items()
        out = np.empty(n, dtype=np.int32)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            out[a:b] = _offset_lengths(self.offsets, self.start + self.step * a, self.step * (b - a - 1) + 1)[:: self.step]
        return out

    def lengths(self) -> np.ndarray:
        """Each item's length, from the offsets (no ids read).

        Returns:
            [M] int32 length of each item in tokens (prompt and response), M = ``len(self)``.
        """
        store = self.store_lengths()
        return store if self.rows is None else _at(store, self.rows)


def _offset_lengths(offsets, first: int, count: int) -> np.ndarray:
    """[count] int32 lengths of sequences ``first .. first + count - 1``: one contiguous read of ``offsets``."""
    bounds = np.asarray(offsets[first : first + count + 1], dtype=np.int64)
    return (bounds[1:] - bounds[:-1]).astype(np.int32)


INDEX_MAX = np.iinfo(np.int32).max


def index_dtype(count: int) -> np.dtype:
    """The integer type of positions into ``count`` items: int32 up to 2^31 - 1 items (4 bytes per
    position instead of 8: the per-pair index of a cached table of millions of pairs), else int64.

    Args:
        count: the number of items the positions point into.

    Returns:
        ``np.dtype(np.int32)`` or ``np.dtype(np.int64)``.
    """
    return np.dtype(np.int32 if count <= INDEX_MAX else np.int64)


def compact_index(index: Sequence[int] | np.ndarray, count: int) -> np.ndarray:
    """``index`` (positions into ``count`` items) as an array of ``index_dtype(count)``.

    Args:
        index: [M] int positions, ``0 <= index[i] < count``.
        count: the number of items they point into.

    Returns:
        [M] int32 / int64 positions (no copy when already of that type).

    Raises:
        IndexError: a position outside ``0..count - 1``.
    """
    index = np.asarray(index)
    if index.size and (index.min() < 0 or index.max() >= count):
        raise IndexError(f"positions {index.min()}..{index.max()} outside 0..{count - 1}")
    return index.astype(index_dtype(count), copy=False)


def positions_of(keep: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """``np.flatnonzero(keep)`` in ``index_dtype(len(keep))``, found ``chunk`` flags at a time (no
    int64 copy of the whole table's positions).

    Args:
        keep: [N] bool flags.
        chunk: flags searched per step (bounds the int64 temporaries).

    Returns:
        [K] int32 / int64 positions of the True flags, ascending.
    """
    dtype = index_dtype(len(keep))
    parts = [(np.flatnonzero(keep[a : a + chunk]) + a).astype(dtype) for a in range(0, len(keep), chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


class KeptRows:
    """The ascending positions ``0 .. count - 1`` without the ``dropped`` ones, held as the dropped
    positions only: the row index ``subset`` keeps when it leaves out fewer pairs than it keeps
    (``without_identical`` of a cached table: 1 pair in 100 dropped costs 0.08 bytes per pair,
    not the 4 of an int32 index).

    Item ``i`` is ``i + #{k : dropped[k] - k <= i}`` (the dropped positions before it).

    Args:
        count: the number of positions before dropping.
        dropped: [K] ascending, distinct int positions left out (``index_dtype(count)``).
    """

    def __init__(self, count: int, dropped: np.ndarray):
        self.count, self.dropped = int(count), dropped
        self._shift = dropped - np.arange(len(dropped), dtype=dropped.dtype)  # non-decreasing

    def __len__(self) -> int:
        return self.count - len(self.dropped)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the positions (that of ``dropped``: int32 below 2**31 rows)."""
        return self.dropped.dtype

    def __getitem__(self, index):
        """The kept position(s) at ``index``: an int for an int, else an array of ``dtype``.

        Args:
            index: an int, or [M] int positions ``0 <= index[i] < len(self)``.

        Returns:
            The store position of each.
        """
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if int(index) < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"position {index} of {len(self)} kept rows")
            return i + int(np.searchsorted(self._shift, i, side="right"))
        index = np.asarray(index)
        return (index + np.searchsorted(self._shift, index, side="right")).astype(self.dtype)

    def positions(self) -> np.ndarray:
        """Every kept position (what an explicit index would hold).

        Returns:
            [len(self)] ascending positions, of ``dtype``.
        """
        return np.delete(np.arange(self.count, dtype=self.dtype), self.dropped)

    def select(self, values: np.ndarray) -> np.ndarray:
        """``values[positions()]`` along the first axis, without building the positions.

        Args:
            values: [count, ...] one entry per position before dropping.

        Returns:
            [len(self), ...] the kept entries, in order.
        """
        return np.delete(values, self.dropped, axis=0)


def _at(values: np.ndarray, rows: np.ndarray | KeptRows) -> np.ndarray:
    """``values[rows]`` for an array of positions or a ``KeptRows``."""
    return rows.select(values) if isinstance(rows, KeptRows) else values[rows]


def _compose(rows: np.ndarray | KeptRows | None, index: np.ndarray | KeptRows) -> np.ndarray | KeptRows:
    """The store positions of a view's items ``index`` when the view's items are the store's ``rows``."""
    if rows is None:
        return index
    if isinstance(index, KeptRows):
        return index.select(rows.positions() if isinstance(rows, KeptRows) else rows)
    return rows[index]


_FEW = 4096  # pairs read one by one (a batch); more: one ordered pass over the store


class PairValues:
    """Per-pair values of an on-disk table seen through a row index, read when asked: p_chosen,
    margin, identical and the truncation counts of a cached table (``token_cache.open_token_cache``),
    so a table of millions of pairs keeps none of them in memory, subsets and repeats included.

    Indexing reads values: ``values[index]`` is an array (what a batch needs); ``take(index)`` is a
    view (what ``TokenizedPairs.subset`` / ``repeat`` keep).

    Args:
        base: [N * width] flat store, read by contiguous slices (the cache's ``FileArray``, or an array).
        width: values per pair (1: a column; K: a [N, K] table, row-major).
        rows: [M] int positions into the store's N pairs, a ``KeptRows``, or None for all N.
        dtype: the type values are returned as (None: the store's).
    """

    def __init__(self, base, width: int = 1, rows: np.ndarray | None = None, dtype=None):
        self.base, self.width, self.rows = base, int(width), rows
        self.dtype = np.dtype(dtype if dtype is not None else base.dtype)
        self.count = len(base) // self.width

    def __len__(self) -> int:
        return self.count if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        """(M,) for a column, (M, width) for a table: the shape of ``np.asarray(self)``."""
        return (len(self),) if self.width == 1 else (len(self), self.width)

    def with_rows(self, rows: np.ndarray | None) -> "PairValues":
        """The same store seen through ``rows``.

        Args:
            rows: [M] int positions into the store's N pairs (not into this view), or None for all.

        Returns:
            A ``PairValues`` over the same store (nothing read).
        """
        return PairValues(self.base, self.width, rows, self.dtype)

    def take(self, index: Sequence[int] | np.ndarray) -> "PairValues":
        """The pairs at ``index`` as a view: only the index is kept.

        Args:
            index: [M] int positions into this view, repeats allowed.

        Returns:
            A ``PairValues`` of M pairs: ``view[i]`` is ``self[index[i]]``.

        Raises:
            IndexError: a position outside this view.
        """
        return self.with_rows(_compose(self.rows, compact_index(index, len(self))))

    def _store(self, a: int, b: int) -> np.ndarray:
        """Store pairs ``a..b-1`` read at once: [b - a] or [b - a, width]."""
        values = np.asarray(self.base[a * self.width : b * self.width])
        return values if self.width == 1 else values.reshape(-1, self.width)

    def _chunks(self, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        for a in range(0, self.count, chunk):
            yield a, self._store(a, min(self.count, a + chunk))

    def __getitem__(self, index) -> np.ndarray:
        """The values of the pairs at ``index`` (int positions into this view; a bool mask or a slice also works).

        Returns:
            [M] (or [M, width]) values as ``dtype``: one read per pair for a batch-sized index, one
            pass over the store for a larger one.
        """
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        if index.dtype == bool:
            index = positions_of(index)
        at = index if self.rows is None else self.rows[index]
        if len(at) <= _FEW:
            parts = [self._store(int(p), int(p) + 1) for p in at]
            values = np.concatenate(parts) if parts else np.zeros((0,) + self.shape[1:], dtype=self.base.dtype)
        else:
            values = np.concatenate([v for _, v in self._chunks(1 << 16)])[at]
        return values.astype(self.dtype, copy=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every value of the view, read in one ordered pass over the store (``np.asarray(view)``)."""
        values = self[np.arange(len(self))] if self.rows is not None else (
            np.concatenate([v for _, v in self._chunks(1 << 16)]).astype(self.dtype, copy=False) if self.count
            else np.zeros(self.shape, dtype=self.dtype))
        return values if dtype is None else values.astype(dtype, copy=False)

    def __invert__(self) -> np.ndarray:
        """``~np.asarray(self)`` (``~tokenized.identical``: the pairs that carry a preference)."""
        return ~np.asarray(self)

    def sum(self, axis: int = 0, chunk: int = 1 << 16) -> np.ndarray:
        """Sums over the pairs of this view (a repeated pair counted each time): a batch-sized view
        reads its pairs, a larger one the store in order, ``chunk`` pairs at a time (never the whole
        table at once).

        Args:
            axis: the axis summed over; only 0 (over pairs) is supported.
            chunk: store pairs read per step.

        Returns:
            [width] int64 sums (a 0-d array for a column) over the M pairs of this view.

        Raises:
            ValueError: ``axis`` is not 0.
        """
        if axis != 0:
            raise ValueError(f"PairValues.sum sums over pairs only (axis=0), not axis={axis}")
        if self.rows is not None and len(self.rows) <= _FEW:
            return self[np.arange(len(self))].sum(axis=0, dtype=np.int64)
        if self.rows is None:
            times = None
        elif isinstance(self.rows, KeptRows):  # each kept pair once
            times = np.ones(self.count, dtype=np.int64)
            times[self.rows.dropped] = 0
        else:
            times = np.bincount(self.rows, minlength=self.count)
        total = np.zeros(self.shape[1:], dtype=np.int64)
        for a, values in self._chunks(chunk):
            values = values.astype(np.int64)
            total += values.sum(axis=0) if times is None else times[a : a + len(values)] @ values
        return total


def _take_pairs(columns: list, index: np.ndarray | KeptRows | None, count: int) -> list:
    """Each of ``columns`` (per-pair lists, arrays or views, all of ``count`` pairs) at ``index``.

    Views (``SequenceView``, ``PairValues``) stay views; views over the same rows share ONE composed
    row index (a cached table's chosen, rejected and per-pair values then cost one position per pair,
    or none per kept pair for a ``KeptRows``). ``index`` None keeps every pair: views are returned as
    they are, lists and arrays copied.
    """
    if index is not None and not isinstance(index, KeptRows):
        index = compact_index(index, count)
    composed: dict[int, tuple[Any, Any]] = {}  # id(rows) -> (rows, rows composed with index)
    out = []
    for items in columns:
        if items is None:
            out.append(None)
        elif isinstance(items, (SequenceView, PairValues)):
            if index is None:
                out.append(items)
                continue
            if id(items.rows) not in composed:
                composed[id(items.rows)] = (items.rows, _compose(items.rows, index))
            out.append(items.with_rows(composed[id(items.rows)][1]))
        elif index is None:
            out.append(items.copy() if isinstance(items, np.ndarray) else list(items))
        elif isinstance(items, np.ndarray):
            out.append(_at(items, index))
        else:
            out.append([items[i] for i in (index.positions() if isinstance(index, KeptRows) else index)])
    return out


def sequence_lengths(sequences: Sequence[TokenizedSequence]) -> np.ndarray:
    """The length of each sequence (from the offsets for a ``SequenceView``: no ids read).

    Args:
        sequences: [N] ``TokenizedSequence``s, a list or a ``SequenceView``.

    Returns:
        [N] int length of each sequence in tokens (prompt and response).
    """
    if isinstance(sequences, SequenceView):
        return sequences.lengths()
    return np.array([len(s) for s in sequences], dtype=np.int64)


def _check_lengths(max_length: int, max_prompt_length: int) -> None:
    if max_prompt_length < 1 or max_length < max_prompt_length + 2:
        raise ValueError(
            f"need 1 <= max_prompt_length ({max_prompt_length}) and max_length ({max_length}) >= "
            "max_prompt_length + 2 so that at least one response token fits"
        )


def truncate_group(
    prompt_ids: list[int],
    responses: Sequence[list[int]],
    max_length: int,
    max_prompt_length: int,
    keep_first: int = 0,
    stats: TruncationStats | None = None,
) -> list[TokenizedSequence]:
    """Cut ONE prompt and the responses that share it (a pair: chosen and rejected) to ``max_length``.

    Rule (module doc): the prompt is cut once, from the left after its first ``keep_first`` tokens
    (a BOS / CLS), to ``max(min(len(prompt), max_prompt_length), max_length - longest response)``;
    then every response is cut from the right to what is left. All returned sequences therefore start
    with the same prompt ids. Counted per sequence in ``stats``.

    Args:
        prompt_ids: the prompt's ids, layout tokens included.
        responses: each response's ids (eos / end-of-turn included).
        max_length: most tokens of each returned sequence (prompt and response).
        max_prompt_length: the prompt is never cut below this many tokens (nor below its own length
            when shorter); it may keep more when the longest response leaves room. Needs
            ``1 <= max_prompt_length <= max_length - 2``.
        keep_first: leading prompt tokens that are never cut.
        stats: counts updated in place per returned sequence (``sequences``, ``truncated_*``,
            ``*_tokens_removed``; not ``identical_after_truncation``, which ``tokenize_pairs``
            counts), or None.

    Returns:
        One ``TokenizedSequence`` per response, in order, each at most ``max_length`` tokens, with
        ``prompt_length`` the (cut) prompt's length in tokens.

    Raises:
        ValueError: when ``max_length`` leaves no room for a response token beside ``max_prompt_length``.
    """
    _check_lengths(max_length, max_prompt_length)
    longest = max((len(r) for r in responses), default=0)
    keep_prompt = min(len(prompt_ids), max(min(len(prompt_ids), max_prompt_length), max_length - longest))
    keep_prompt = max(keep_prompt, min(keep_first, len(prompt_ids)))
    cut_prompt = len(prompt_ids) - keep_prompt
    if cut_prompt > 0:
        prompt_ids = prompt_ids[:keep_first] + prompt_ids[keep_first + cut_prompt :]  # the prompt's end survives
    room = max_length - len(prompt_ids)
    out = []
    for response_ids in responses:
        cut_response = max(0, len(response_ids) - room)
        if cut_response:
            response_ids = response_ids[: len(response_ids) - cut_response]
        if stats is not None:
            stats.sequences += 1
            stats.truncated_prompts += cut_prompt > 0
            stats.truncated_responses += cut_response > 0
            stats.prompt_tokens_removed += cut_prompt
            stats.response_tokens_removed += cut_response
        out.append(TokenizedSequence(list(prompt_ids) + list(response_ids), len(prompt_ids)))
    return out


def sequence_layout(tokenizer: PreTrainedTokenizerBase) -> str:
    """The sequence layout (module doc) a tokenizer's sequences are rendered in.

    Args:
        tokenizer: the model's tokenizer.

    Returns:
        ``"chat_template"`` when the tokenizer has a chat template other than ``FLATTEN_TEMPLATE``
        (which saved ``flatten`` tokenizers carry); ``"pair"`` when it has no chat template and has
        both a CLS and a SEP token (encoders); ``"flatten"`` otherwise.
    """
    template = getattr(tokenizer, "chat_template", None)
    if template and template != FLATTEN_TEMPLATE:
        return "chat_template"
    if not template and tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None:
        return "pair"
    return "flatten"


def layout_chat_template(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The chat template that reproduces this tokenizer's layout under plain ``apply_chat_template``.

    Args:
        tokenizer: the model's tokenizer.

    Returns:
        Its own chat template (``chat_template`` layout: chat models), ``FLATTEN_TEMPLATE``
        (``flatten``), or None (``pair``: encoders, whose layout is the tokenizer's own pair
        encoding ``tokenizer(prompt, response)``).
    """
    layout = sequence_layout(tokenizer)
    if layout == "chat_template":
        return tokenizer.chat_template
    return FLATTEN_TEMPLATE if layout == "flatten" else None


def _encode_text(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    # One batched call (the Rust tokenizer encodes the list in parallel); split_special_tokens=True
    # encodes strings such as "<|eos|>" or "[SEP]" inside the data as ordinary text (text is text).
    if not len(texts):
        return []
    # verbose=False: texts longer than the model maximum are expected here; truncation follows.
    return tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]


def _pair_specials(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int], list[int]]:
    """The ids an encoder's pair encoding puts before, between and after the two texts (a probe)."""
    enc = tokenizer("a", "b", add_special_tokens=True)
    ids, seq = enc["input_ids"], enc.sequence_ids(0)
    last_a = max(i for i, s in enumerate(seq) if s == 0)
    last_b = max(i for i, s in enumerate(seq) if s == 1)
    return ids[: seq.index(0)], ids[last_a + 1 : seq.index(1)], ids[last_b + 1 :]


def conversation_of(prompt: str, messages: Messages | None) -> list[dict[str, str]]:
    """The turns a row's prompt is rendered from.

    Args:
        prompt: the row's flattened prompt text (used only when ``messages`` is None or empty).
        messages: the row's ``prompt_messages`` turns (mappings with ``role`` and ``content``), or None.

    Returns:
        A list of plain ``{"role": str, "content": str}`` dicts: ``messages`` in order (values
        converted with ``str``), or ``[{"role": "user", "content": prompt}]`` when it has none.
    """
    if messages is None or len(messages) == 0:
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def _render_chat(tokenizer: PreTrainedTokenizerBase, conversations: list[list[dict[str, str]]], generation_prompt: bool,
                 template: str | None = None) -> list[list[int]]:
    if not conversations:
        return []
    return tokenizer.apply_chat_template(
        conversations, tokenize=True, return_dict=False, add_generation_prompt=generation_prompt,
        sanitize_control_tokens=True,  # control-token strings inside messages are encoded as text
        chat_template=template,
    )


try:  # the private-use characters transformers' sanitize_control_tokens marks data's control-token strings with
    from transformers.utils.chat_template_utils import _CONTROL_TOKEN_END, _CONTROL_TOKEN_START
    _SANITIZE_MARKERS: tuple[str, ...] | None = (_CONTROL_TOKEN_START, _CONTROL_TOKEN_END)
except ImportError:  # another transformers: every row goes through apply_chat_template
    _SANITIZE_MARKERS = None


def _render_flatten(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], response_groups: Sequence[Sequence[str]],
                    flat: list[tuple[int, str]]) -> tuple[list[list[int]], list[list[int]]]:
    """The ``flatten`` layout's renders, ``_render_chat`` with ``FLATTEN_TEMPLATE`` id for id, fast.

    A row whose prompt and responses hold no added-token string (and no sanitize marker) renders as
    ``B + prompt`` (generation prompt) and ``B + prompt + response + E`` (B: BOS, else EOS, else
    nothing; E: EOS or nothing), and ``apply_chat_template(..., sanitize_control_tokens=True)``
    encodes such a render as one plain ``encode`` (nothing to mark). Those rows are encoded here in
    one batched call, ~20x faster than rendering each through jinja; the other rows (text that
    looks like a control token) go through ``apply_chat_template`` as before.

    Args:
        prompts: [N] prompt texts; response_groups: [N][G_n] responses; flat: [(row, response)] in order.

    Returns:
        (gen [N] ids, full [len(flat)] ids), as ``_render_chat(..., True)`` and ``(..., False)`` give them.
    """
    specials = [t for t in getattr(tokenizer, "added_tokens_encoder", {}) if t]
    fast = np.zeros(len(prompts), dtype=bool)
    if _SANITIZE_MARKERS is not None:
        marks = specials + list(_SANITIZE_MARKERS)
        fast = np.array([not any(m in text for text in (p, *group) for m in marks)
                         for p, group in zip(prompts, response_groups)], dtype=bool)
    bos = tokenizer.bos_token or tokenizer.eos_token or ""
    eos = tokenizer.eos_token or ""
    gen: list = [None] * len(prompts)
    full: list = [None] * len(flat)
    fast_rows = np.flatnonzero(fast)
    fast_flat = [k for k, (i, _) in enumerate(flat) if fast[i]]
    texts = [bos + prompts[i] for i in fast_rows] + [bos + prompts[flat[k][0]] + flat[k][1] + eos for k in fast_flat]
    if texts:
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        for j, i in enumerate(fast_rows):
            gen[i] = ids[j]
        for j, k in enumerate(fast_flat, start=len(fast_rows)):
            full[k] = ids[j]
    slow_rows = np.flatnonzero(~fast)
    if len(slow_rows):
        slow_flat = [k for k, (i, _) in enumerate(flat) if not fast[i]]
        convs = {i: conversation_of(prompts[i], None) for i in slow_rows}
        for i, ids in zip(slow_rows, _render_chat(tokenizer, [convs[i] for i in slow_rows], True, FLATTEN_TEMPLATE)):
            gen[i] = ids
        rendered = _render_chat(tokenizer, [convs[flat[k][0]] + [{"role": "assistant", "content": flat[k][1]}] for k in slow_flat],
                                False, FLATTEN_TEMPLATE)
        for k, ids in zip(slow_flat, rendered):
            full[k] = ids
    return gen, full


def _common_prefix(*sequences: Sequence[int]) -> int:
    n = min(len(s) for s in sequences)
    for i in range(n):
        if any(s[i] != sequences[0][i] for s in sequences[1:]):
            return i
    return n


def encode_prompt_groups(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    response_groups: Sequence[Sequence[str]],
    prompt_messages: Sequence[Messages | None] | None = None,
) -> tuple[list[list[int]], list[list[list[int]]], int]:
    """Encode each prompt once with the responses that share it (a pair: chosen, rejected).

    Args:
        tokenizer: the model's tokenizer; its ``sequence_layout`` picks the layout.
        prompts: [N] flattened prompt texts (used by ``pair``/``flatten`` layouts, and as the single
            user turn of a chat when a row has no messages).
        response_groups: [N][G] response texts per prompt (G = 2 for pairs).
        prompt_messages: [N] optional lists of ``{"role", "content"}`` turns (chat-template layout).

    Returns:
        (prompt_ids [N], response_ids [N][G], keep_first): concatenating a prompt's ids with a
        response's ids gives the whole sequence of the layout; ``keep_first`` leading prompt tokens
        (a BOS/CLS) are never truncated. Chat templates whose generation prompt is not a prefix of
        the full conversation (a few templates rewrite earlier turns) take the longest common prefix
        of all renders of the group as the prompt, so the whole sequence still equals the full render.
        Nothing is truncated here. ``keep_first`` is read from the first row: 1 when its first
        prompt id is a special token (chat / ``flatten`` layouts), the length of the encoder's lead
        ids (``pair``), else 0.

    Raises:
        ValueError: ``response_groups`` or ``prompt_messages`` (when given) has a length other than
            ``len(prompts)``.
    """
    n = len(prompts)
    if len(response_groups) != n or (prompt_messages is not None and len(prompt_messages) != n):
        raise ValueError(f"{n} prompts but {len(response_groups)} response groups / "
                         f"{None if prompt_messages is None else len(prompt_messages)} message lists")
    layout = sequence_layout(tokenizer)
    if layout != "pair":
        if layout == "chat_template":
            convs = [conversation_of(p, None if prompt_messages is None else prompt_messages[i]) for i, p in enumerate(prompts)]
        else:  # flatten: the row's prompt text as it is (for chat sources it is the turns flattened)
            convs = [conversation_of(p, None) for p in prompts]
        template = layout_chat_template(tokenizer)
        flat = [(i, r) for i, group in enumerate(response_groups) for r in group]
        if layout == "flatten":
            gen, full = _render_flatten(tokenizer, prompts, response_groups, flat)
        else:
            gen = _render_chat(tokenizer, convs, True, template)
            full = _render_chat(tokenizer, [convs[i] + [{"role": "assistant", "content": r}] for i, r in flat], False, template)
        prompt_ids, responses, k = [], [], 0
        for i, group in enumerate(response_groups):
            rows = full[k : k + len(group)]
            k += len(group)
            split = _common_prefix(gen[i], *rows) if rows else len(gen[i])
            prompt_ids.append(list(gen[i][:split]))
            responses.append([list(r[split:]) for r in rows])
        first = prompt_ids[0][:1] if prompt_ids and prompt_ids[0] else []
        keep = int(bool(first) and first[0] in set(tokenizer.all_special_ids))
        return prompt_ids, responses, keep
    unique = list(dict.fromkeys(prompts))  # pairs share prompts: encode each once
    encoded = dict(zip(unique, _encode_text(tokenizer, unique)))
    flat_texts = [r for group in response_groups for r in group]
    flat_ids = iter(_encode_text(tokenizer, flat_texts))
    lead, mid, tail = _pair_specials(tokenizer)  # an encoder's [CLS] prompt [SEP] response [SEP]
    prompt_ids = [lead + encoded[p] + mid for p in prompts]
    responses = [[next(flat_ids) + tail for _ in group] for group in response_groups]
    return prompt_ids, responses, len(lead)


def tokenize_groups(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    response_groups: Sequence[Sequence[str]],
    max_length: int,
    max_prompt_length: int,
    prompt_messages: Sequence[Messages | None] | None = None,
    stats: TruncationStats | list[TruncationStats] | None = None,
    keep_first: int | None = None,
) -> list[list[TokenizedSequence]]:
    """THE rendering rule: every place that turns a prompt and responses into ids calls this (training,
    reference log-probs, reward scoring, preference tables, evaluation's log-prob table and generation
    prompts, GPO's sampling and scoring, the truncation audit), so a model is scored, sampled and
    audited in exactly the layout it was trained on (docs/reward.md "Sequence layout").

    The prompt is rendered once per group in the tokenizer's layout (module doc; ``prompt_messages``
    turns with a chat template) and cut once for the whole group by ``truncate_group`` (a pair is a
    group of 2: pair-consistent truncation; one response is a group of 1).

    Args:
        tokenizer: the model's tokenizer; its ``sequence_layout`` picks the layout.
        prompts: [N] flattened prompt texts (the single user turn of a chat when a row has no messages).
        response_groups: [N][G_n] responses sharing each prompt.
        max_length: most tokens per sequence (prompt and response).
        max_prompt_length: tokens the prompt is never cut below (``truncate_group``); needs
            ``1 <= max_prompt_length <= max_length - 2``.
        prompt_messages: [N] chat turns per row, or None (chat-template layout only; others read ``prompts``).
        stats: a ``TruncationStats`` counts every group's truncation (updated in place); a list gets
            one ``TruncationStats`` per group appended; None counts nothing.
        keep_first: leading prompt tokens never cut; None = what ``encode_prompt_groups`` reads from
            these rows (the token cache passes the value of a table's first row to each of its chunks,
            so a table tokenised in chunks equals the table tokenised at once).

    Returns:
        [N][G_n] ``TokenizedSequence`` of at most ``max_length`` tokens each; all sequences of a
        group start with the same prompt ids.

    Raises:
        ValueError: ``max_length`` leaving no room beside ``max_prompt_length`` (checked first), or
            ``response_groups`` / ``prompt_messages`` lengths other than ``len(prompts)``.
    """
    _check_lengths(max_length, max_prompt_length)
    prompt_ids, response_ids, keep = encode_prompt_groups(tokenizer, prompts, response_groups, prompt_messages)
    keep = keep if keep_first is None else keep_first
    out = []
    for p, group in zip(prompt_ids, response_ids):
        counts = TruncationStats() if isinstance(stats, list) else stats
        out.append(truncate_group(p, group, max_length, max_prompt_length, keep, counts))
        if isinstance(stats, list):
            stats.append(counts)
    return out


def tokenize_sequences(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
    max_prompt_length: int,
    stats: TruncationStats | None = None,
    prompt_messages: Sequence[Messages | None] | None = None,
) -> list[TokenizedSequence]:
    """One sequence per (prompt, response): ``tokenize_groups`` with groups of one.

    Args:
        tokenizer: the model's tokenizer; its ``sequence_layout`` picks the layout.
        prompts: [N] flattened prompt texts.
        responses: [N] response texts, one per prompt.
        max_length: most tokens per sequence (prompt and response).
        max_prompt_length: tokens the prompt is never cut below (``truncate_group``).
        stats: truncation counts updated in place, or None.
        prompt_messages: [N] optional chat turns per row (chat-template layout only).

    Returns:
        [N] ``TokenizedSequence`` (ids and prompt length in tokens), at most ``max_length`` tokens each.

    Raises:
        ValueError: ``prompts`` and ``responses`` (or ``prompt_messages``) differ in length, or
            ``max_length`` leaves no room for a response token beside ``max_prompt_length``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    groups = tokenize_groups(tokenizer, prompts, [[r] for r in responses], max_length, max_prompt_length,
                             prompt_messages, stats)
    return [g[0] for g in groups]


def tokenize_sequence(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_length: int,
    max_prompt_length: int,
    stats: TruncationStats | None = None,
    prompt_messages: Messages | None = None,
) -> TokenizedSequence:
    """One sequence (see ``tokenize_sequences`` for many).

    Args:
        tokenizer: the model's tokenizer; its ``sequence_layout`` picks the layout.
        prompt: the flattened prompt text.
        response: the response text.
        max_length: most tokens of the sequence (prompt and response).
        max_prompt_length: tokens the prompt is never cut below (``truncate_group``).
        stats: truncation counts updated in place, or None.
        prompt_messages: the row's chat turns, or None (chat-template layout only).

    Returns:
        The ``TokenizedSequence`` (ids and prompt length in tokens), at most ``max_length`` tokens.

    Raises:
        ValueError: ``max_length`` leaves no room for a response token beside ``max_prompt_length``.
    """
    messages = None if prompt_messages is None else [prompt_messages]
    return tokenize_sequences(tokenizer, [prompt], [response], max_length, max_prompt_length, stats, messages)[0]


def prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_length: int,
    max_prompt_length: int,
    prompt_messages: Sequence[Messages | None] | None = None,
) -> list[list[int]]:
    """The ids a policy generates from: each prompt as ``tokenize_groups`` renders it before a response
    (chat template: the turns plus the assistant header), truncated as for an empty response.

    Args:
        tokenizer: the policy's tokenizer; its ``sequence_layout`` picks the layout.
        prompts: [N] flattened prompt texts.
        max_length: most tokens of prompt plus (empty) response; the prompt is cut from the left to
            fit beside the ids an empty response renders to (end-of-turn / EOS / SEP).
        max_prompt_length: tokens the prompt is never cut below (``truncate_group``).
        prompt_messages: [N] chat turns per row, or None (chat-template layout only).

    Returns:
        [N] lists of token ids (what sampling continues; the response's first token comes next).

    Raises:
        ValueError: ``max_length`` leaves no room beside ``max_prompt_length``, or
            ``prompt_messages`` has a length other than ``len(prompts)``.
    """
    groups = tokenize_groups(tokenizer, prompts, [[""] for _ in prompts], max_length, max_prompt_length, prompt_messages)
    return [g[0].input_ids[: g[0].prompt_length] for g in groups]


def conversation_key(prompt: str, messages: Messages | None) -> tuple[tuple[str, str], ...]:
    """A hashable form of the prompt a row is rendered from: rows with equal keys get equal ids in every layout.

    Args:
        prompt: the row's flattened prompt text (used only when ``messages`` is None or empty).
        messages: the row's ``prompt_messages`` turns, or None.

    Returns:
        ``((role, content), ...)`` of ``conversation_of(prompt, messages)``, in turn order.
    """
    return tuple((m["role"], m["content"]) for m in conversation_of(prompt, messages))


@dataclass
class SequenceBatch:
    """N right-padded sequences. Shapes: [N, T] for the tensors, [N] for the indices."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    last_prompt_index: torch.Tensor
    last_index: torch.Tensor

    def to(self, device: torch.device | str) -> "SequenceBatch":
        """This batch with every tensor moved to ``device`` (a new batch; this one is unchanged).

        Args:
            device: the target device, e.g. ``"cuda"`` or ``torch.device("cpu")``.

        Returns:
            A ``SequenceBatch`` with the same values on ``device``.
        """
        return SequenceBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def rows(self, index: torch.Tensor) -> "SequenceBatch":
        """The sequences at ``index``, same width T (no re-padding).

        Args:
            index: [M] long row positions (or an [N] bool mask) into this batch's N rows.

        Returns:
            A ``SequenceBatch`` of those rows: [M, T] tensors and [M] indices.
        """
        return SequenceBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens in the batch: the sum of ``attention_mask``."""
        return int(self.attention_mask.sum())

    @property
    def padding_fraction(self) -> float:
        """Share of the N x T token slots that are padding, in [0, 1] (1.0 for an empty batch)."""
        return 1.0 - self.num_tokens / max(1, self.attention_mask.numel())


def collate_sequences(sequences: Sequence[TokenizedSequence], pad_token_id: int) -> SequenceBatch:
    """Right-pad to the longest sequence of this batch (batches are length-grouped, so it is short).

    Args:
        sequences: N >= 1 tokenised sequences.
        pad_token_id: the id written into padded slots (masked out by ``attention_mask``).

    Returns:
        A ``SequenceBatch`` with T = the longest sequence's length in tokens: ``input_ids`` [N, T]
        long; ``attention_mask`` [N, T] long, 1 on real tokens; ``response_mask`` [N, T] bool, True
        on positions ``prompt_length .. len - 1``; ``last_prompt_index`` [N] long,
        ``prompt_length - 1``; ``last_index`` [N] long, ``len - 1``.
    """
    width = max(len(s) for s in sequences)
    n = len(sequences)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq.input_ids, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
        response_mask[row, seq.prompt_length : len(seq)] = True
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    last_prompt = torch.tensor([s.prompt_length - 1 for s in sequences], dtype=torch.long)
    return SequenceBatch(input_ids, attention_mask, response_mask, last_prompt, lengths - 1)


@dataclass
class PairBatch:
    """B pairs as 2B sequences (chosen rows first) plus per-pair targets of shape [B]."""

    sequences: SequenceBatch
    p_chosen: torch.Tensor  # [B] float, soft target P(chosen > rejected)
    margin: torch.Tensor  # [B] float, NaN where the source has no margin
    pair_index: torch.Tensor  # [B] long, row of the pair in the tokenised table (for cached ref log-probs)

    def __len__(self) -> int:
        return int(self.p_chosen.shape[0])

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens over the batch's 2B sequences."""
        return self.sequences.num_tokens

    def to(self, device: torch.device | str) -> "PairBatch":
        """This batch with every tensor moved to ``device`` (a new batch; this one is unchanged).

        Args:
            device: the target device, e.g. ``"cuda"`` or ``torch.device("cpu")``.

        Returns:
            A ``PairBatch`` with the same values on ``device``.
        """
        return PairBatch(self.sequences.to(device), self.p_chosen.to(device), self.margin.to(device), self.pair_index.to(device))

    def shard(self, rank: int, world_size: int) -> "PairBatch":
        """This process's share of a global batch (pairs rank, rank+W, ...): DDP's mean = the global mean.

        Args:
            rank: this process's rank, ``0 <= rank < world_size``.
            world_size: W, the number of processes sharing the batch.

        Returns:
            A ``PairBatch`` of the pairs ``rank, rank + W, ...`` (ceil((B - rank) / W) of them, chosen
            rows first, then their rejected rows), same width T; ``pair_index`` keeps the table rows.
        """
        pairs = torch.arange(rank, len(self), world_size)
        rows = torch.cat([pairs, pairs + len(self)])
        return PairBatch(self.sequences.rows(rows), self.p_chosen[pairs], self.margin[pairs], self.pair_index[pairs])


@dataclass
class TokenizedPairs:
    """Every pair tokenised once; batches are cut from it per epoch.

    ``chosen`` / ``rejected`` are lists of ``TokenizedSequence`` (``tokenize_pairs``) or
    ``SequenceView``s over the on-disk token cache (``token_cache.open_token_cache``), whose
    per-pair values (p_chosen, margin, identical, pair_truncation) are ``PairValues`` read from the
    cache when asked; both give the same items, and ``subset`` / ``repeat`` of a cached table stay
    views that share one row index (int32 below 2^31 pairs).
    """

    chosen: list[TokenizedSequence]
    rejected: list[TokenizedSequence]
    p_chosen: np.ndarray | PairValues
    margin: np.ndarray | PairValues
    truncation: TruncationStats = field(default_factory=TruncationStats)
    identical: np.ndarray | PairValues | None = None  # [B] bool: the two sides are the same ids after truncation
    # [B, len(TruncationStats fields)] int: each pair's share of ``truncation`` (lets ``repeat`` count repeats);
    # a ``PairValues`` view for the on-disk cache (core/training/token_cache.py)
    pair_truncation: np.ndarray | PairValues | None = None

    def __post_init__(self) -> None:
        if self.identical is None:
            self.identical = np.array([c.input_ids == r.input_ids for c, r in zip(self.chosen, self.rejected)], dtype=bool)

    def __len__(self) -> int:
        return len(self.chosen)

    def _columns(self) -> list:
        return [self.chosen, self.rejected, self.p_chosen, self.margin, self.identical, self.pair_truncation]

    def subset(self, keep: Sequence[bool] | np.ndarray) -> "TokenizedPairs":
        """The pairs where ``keep`` is True (same order); truncation counts are kept as measured.

        Args:
            keep: [B] bool, one flag per pair.

        Returns:
            A ``TokenizedPairs`` of the kept pairs (views stay views: all kept, the same views; else
            one shared row index, a ``KeptRows`` of the dropped positions when fewer are dropped
            than kept). ``truncation`` is this table's totals unchanged (what tokenising measured),
            not recounted over the kept pairs.

        Raises:
            ValueError: ``keep`` does not have shape (B,).
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError(f"keep has shape {keep.shape}; need ({len(self)},)")
        dropped = positions_of(~keep)
        # few left out (without_identical): keep the dropped positions, not every kept one
        index = (None if not len(dropped) else KeptRows(len(self), dropped) if 2 * len(dropped) <= len(self)
                 else positions_of(keep))
        chosen, rejected, p, m, identical, per_pair = _take_pairs(self._columns(), index, len(self))
        return TokenizedPairs(chosen, rejected, p, m, self.truncation, identical, per_pair)

    def repeat(self, index: Sequence[int] | np.ndarray) -> "TokenizedPairs":
        """The pairs at ``index`` (in that order, repeats allowed), without tokenising again: equal to
        tokenising the table's rows ``frame[index]``, truncation counts included (summed per pair).

        Args:
            index: [M] int positions into these pairs.

        Returns:
            A ``TokenizedPairs`` of M pairs whose ``truncation`` is the sum of the per-pair counts of
            ``index`` (a repeated pair counted each time).

        Raises:
            ValueError: these pairs carry no per-pair counts (built by hand, not by ``tokenize_pairs``).
        """
        if self.pair_truncation is None:
            raise ValueError("repeat needs per-pair truncation counts (pair_truncation); tokenise with tokenize_pairs")
        chosen, rejected, p, m, identical, per_pair = _take_pairs(self._columns(), np.asarray(index), len(self))
        return TokenizedPairs(chosen, rejected, p, m, _stats_of(per_pair), identical, per_pair)

    def without_identical(self) -> "TokenizedPairs":
        """Drop pairs whose sides are token-identical after truncation: they carry no preference.

        Returns:
            ``subset(~identical)``: the other pairs in order, ``truncation`` totals unchanged.
        """
        return self.subset(~np.asarray(self.identical, dtype=bool))


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    p_chosen: Sequence[float] | None = None,
    margin: Sequence[float | None] | None = None,
    max_length: int = 256,
    max_prompt_length: int = 128,
    prompt_messages: Sequence[Messages | None] | None = None,
    keep_first: int | None = None,
) -> TokenizedPairs:
    """Tokenise every pair with pair-consistent truncation (module doc); none dropped here.

    Both sides of a pair get the same prompt ids. Pairs whose sides are token-identical after
    truncation are flagged in ``.identical`` [B] and counted in ``.truncation.identical_after_truncation``;
    training calls ``without_identical()``.

    Args:
        tokenizer: the model's tokenizer; its ``sequence_layout`` picks the layout.
        prompts: [B] flattened prompt texts.
        chosen: [B] chosen response texts.
        rejected: [B] rejected response texts.
        p_chosen: [B] soft targets, probability P(chosen > rejected) (None: all 1.0).
        margin: [B] margins in the source's unit, or None per pair (NaN); None: all NaN.
        max_length: most tokens per sequence (prompt and response).
        max_prompt_length: tokens the prompt is never cut below (``truncate_group``).
        prompt_messages: [B] chat turns per pair, or None (chat-template layout only).
        keep_first: leading prompt tokens never cut, as ``tokenize_groups`` (None: read from the rows).

    Returns:
        ``TokenizedPairs`` of B pairs (p_chosen, margin float64 [B]; per-pair counts int64 [B, 6]).
        The lengths of ``p_chosen`` and ``margin`` are not checked against B.

    Raises:
        ValueError: ``prompts`` / ``chosen`` / ``rejected`` (or ``prompt_messages``) lengths differ,
            or ``max_length`` leaves no room for a response token beside ``max_prompt_length``.
    """
    if not (len(prompts) == len(chosen) == len(rejected)):
        raise ValueError(f"prompts/chosen/rejected lengths differ: {len(prompts)}, {len(chosen)}, {len(rejected)}")
    group_stats: list[TruncationStats] = []
    groups = tokenize_groups(tokenizer, prompts, list(zip(chosen, rejected)), max_length, max_prompt_length,
                             prompt_messages, group_stats, keep_first)
    tok_chosen = [g[0] for g in groups]
    tok_rejected = [g[1] for g in groups]
    counts = [_stats_row(st) for st in group_stats]
    identical = np.array([c.input_ids == r.input_ids for c, r in zip(tok_chosen, tok_rejected)], dtype=bool)
    per_pair = np.array(counts, dtype=np.int64).reshape(len(prompts), len(_STATS_FIELDS))
    per_pair[:, _STATS_FIELDS.index("identical_after_truncation")] = identical
    stats = _stats_of(per_pair)
    p = np.ones(len(prompts)) if p_chosen is None else np.asarray(p_chosen, dtype=np.float64)
    m = np.full(len(prompts), np.nan) if margin is None else np.array([np.nan if v is None else v for v in margin], dtype=np.float64)
    return TokenizedPairs(tok_chosen, tok_rejected, p, m, stats, identical, per_pair)


_STATS_FIELDS = [f.name for f in fields(TruncationStats)]
_stats_row = operator.attrgetter(*_STATS_FIELDS)  # a pair's counts as a tuple (dataclasses.astuple is ~30x slower)


def _stats_of(per_pair: np.ndarray) -> TruncationStats:
    """The totals of per-pair truncation counts [B, fields] (python ints, for the metrics JSON)."""
    return TruncationStats(*(int(v) for v in per_pair.sum(axis=0)))


class BatchIndex(Sequence[np.ndarray]):
    """The batches of ``length_grouped_batches`` as one order array: batch ``k`` is
    ``order[b * batch_size : (b + 1) * batch_size]`` with ``b = batch_order[k]``, so N items cost one
    position each (int32 below 2^31 items) and no array object per batch.

    Args:
        order: [N] int positions, cut into consecutive batches of ``batch_size``.
        batch_size: items per batch (the last may hold fewer).
        batch_order: [ceil(N / batch_size)] the batches' permutation, or None (in order).
    """

    def __init__(self, order: np.ndarray, batch_size: int, batch_order: np.ndarray | None = None):
        self.order, self.batch_size, self.batch_order = order, int(batch_size), batch_order

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, k):  # type: ignore[override]
        """Batch ``k``: [<= batch_size] int64 positions (a copy; a slice gives a list of batches)."""
        if isinstance(k, slice):
            return [self[i] for i in range(len(self))[k]]
        if not -len(self) <= k < len(self):
            raise IndexError(f"batch {k} of {len(self)}")
        b = int(k) % len(self)
        b = b if self.batch_order is None else int(self.batch_order[b])
        return self.order[b * self.batch_size : (b + 1) * self.batch_size].astype(np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (the order and the batch permutation)."""
        return self.order.nbytes + (0 if self.batch_order is None else self.batch_order.nbytes)


def _permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """``rng.permutation(n)`` in ``index_dtype(n)``: the same shuffle of ``arange(n)`` (the draws do
    not depend on the item type), without its int64 array."""
    order = np.arange(n, dtype=index_dtype(n))
    rng.shuffle(order)
    return order


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int | None, group_batches: int = 16) -> BatchIndex:
    """Index batches of similar length: shuffle, sort within groups of ``group_batches`` batches, shuffle batch order.

    With ``seed`` None the order is deterministic (sorted by length), for evaluation.

    Args:
        lengths: [N] length of each item in tokens.
        batch_size: items per batch (>= 1); the last batch may hold fewer.
        seed: seed of the shuffles (``np.random.default_rng``), or None: no shuffle, longest first.
        group_batches: batches per sorted group (the group holds ``batch_size * group_batches``
            consecutive items of the shuffled order, sorted longest first before cutting).

    Returns:
        A ``BatchIndex`` of ceil(N / batch_size) int64 index arrays into ``lengths``, each index
        appearing exactly once; a function of ``lengths``, ``batch_size``, ``seed`` and
        ``group_batches`` only (the same batches as ``rng.permutation`` shuffles gave before the
        compact form: ``_permutation``).
    """
    lengths = np.asarray(lengths)
    if seed is None:
        return BatchIndex(np.argsort(-lengths, kind="stable").astype(index_dtype(len(lengths))), batch_size)
    rng = np.random.default_rng(seed)
    order = _permutation(len(lengths), rng)
    group = batch_size * group_batches
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        order[start : start + group] = chunk[np.argsort(-lengths[chunk], kind="stable")]
    return BatchIndex(order, batch_size, _permutation(-(-len(order) // batch_size), rng))


def pair_lengths(tokenized: TokenizedPairs) -> np.ndarray:
    """Each pair's length: its longer side (what batches are grouped by).

    Read from the offsets for the on-disk cache (one pass over the store's pairs, then the view's
    rows), so no token ids are read and no per-sequence lengths are kept.

    Args:
        tokenized: B tokenised pairs (in memory or the on-disk cache).

    Returns:
        [B] int length of each pair in tokens, ``max(len(chosen), len(rejected))``.
    """
    if not len(tokenized):
        return np.zeros(0, dtype=np.int64)
    chosen, rejected = tokenized.chosen, tokenized.rejected
    if (isinstance(chosen, SequenceView) and isinstance(rejected, SequenceView) and chosen.rows is rejected.rows
            and chosen.offsets is rejected.offsets and (chosen.start, chosen.step, rejected.start, rejected.step) == (0, 2, 1, 2)):
        pairs = chosen.store_items()
        longer = np.empty(pairs, dtype=np.int32)
        for a in range(0, pairs, 1 << 16):  # pairs a..b-1 are store sequences 2a..2b-1
            b = min(pairs, a + (1 << 16))
            both = _offset_lengths(chosen.offsets, 2 * a, 2 * (b - a))
            longer[a:b] = np.maximum(both[0::2], both[1::2])
        return longer if chosen.rows is None else _at(longer, chosen.rows)
    return np.maximum(sequence_lengths(chosen), sequence_lengths(rejected))


class PairBatches(Sequence[PairBatch]):
    """The padded ``PairBatch``es of one epoch layout, collated when read (``batches[k]``) and not
    kept, so a table of millions of pairs costs its index, not its batches, in memory.

    Batch ``k`` holds the pairs ``index[k]`` of ``length_grouped_batches(pair_lengths, batch_size, seed)``:
    a function of the lengths and the seed only, so a resumed run reads the same batches.

    Args:
        tokenized: the pairs (in memory or the on-disk cache).
        batch_size: pairs per batch.
        pad_token_id: the id in padded slots.
        seed: batch order seed (None: sorted by length, for evaluation).
    """

    def __init__(self, tokenized: TokenizedPairs, batch_size: int, pad_token_id: int, seed: int | None = 0):
        self.tokenized, self.pad_token_id = tokenized, pad_token_id
        lengths = pair_lengths(tokenized)  # not kept: the index is all a table of millions of pairs holds
        self.index = length_grouped_batches(lengths, batch_size, seed) if len(lengths) else []

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(len(self))[k]]
        index, t = self.index[k], self.tokenized
        seqs = [t.chosen[i] for i in index] + [t.rejected[i] for i in index]
        return PairBatch(
            collate_sequences(seqs, self.pad_token_id),
            torch.tensor(t.p_chosen[index], dtype=torch.float32),
            torch.tensor(t.margin[index], dtype=torch.float32),
            torch.as_tensor(index, dtype=torch.long),
        )

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    def padding_fraction(self) -> float:
        """Share of token slots that are padding over all batches, from the lengths alone: equal to
        ``padding_fraction(list(self))`` without collating a batch.

        Returns:
            Padded slots / all slots (each batch: 2 x its pairs x its longest side), in [0, 1];
            1.0 when there are no batches.
        """
        chosen, rejected = sequence_lengths(self.tokenized.chosen), sequence_lengths(self.tokenized.rejected)
        longer = np.maximum(chosen, rejected)
        tokens = slots = 0
        for index in self.index:
            tokens += int(chosen[index].sum() + rejected[index].sum())
            slots += 2 * len(index) * int(longer[index].max())
        return 1.0 - tokens / max(1, slots)


def make_pair_batches(tokenized: TokenizedPairs, batch_size: int, pad_token_id: int, seed: int | None = 0) -> PairBatches:
    """Length-grouped ``PairBatch``es; a pair's length is its longer side.

    Args:
        tokenized: the pairs (in memory or the on-disk cache).
        batch_size: pairs per batch (2 x batch_size sequences).
        pad_token_id: the id in padded slots.
        seed: batch order seed, None for a deterministic length-sorted order (evaluation).

    Returns:
        A ``PairBatches`` sequence (each batch collated when read).
    """
    return PairBatches(tokenized, batch_size, pad_token_id, seed)


def padding_fraction(batches: Sequence[PairBatch | SequenceBatch]) -> float:
    """Share of token slots that are padding, over all batches (from the lengths for ``PairBatches``).

    Args:
        batches: ``PairBatch``es or ``SequenceBatch``es, or a ``PairBatches``.

    Returns:
        Padded slots / all slots summed over the batches (not a mean of per-batch fractions), in
        [0, 1]; 1.0 when there are no slots.
    """
    if isinstance(batches, PairBatches):
        return batches.padding_fraction()
    seqs = [b.sequences if isinstance(b, PairBatch) else b for b in batches]
    total = sum(s.attention_mask.numel() for s in seqs)
    return 1.0 - sum(s.num_tokens for s in seqs) / max(1, total)


def prompt_messages_of(frame) -> list | None:
    """A pairs table's ``prompt_messages`` column as lists of turns, or None when it has none.

    Args:
        frame: a polars pairs table.

    Returns:
        One entry per row (its turns, or None), or None when the table has no ``prompt_messages`` column.
    """
    return frame["prompt_messages"].to_list() if "prompt_messages" in frame.columns else None


def tokenize_pair_frame(tokenizer: PreTrainedTokenizerBase, frame, max_length: int, max_prompt_length: int) -> TokenizedPairs:
    """A pairs table (polars: prompt, chosen, rejected[, p_chosen, margin, prompt_messages]) tokenised
    by ``tokenize_pairs``: pair-consistent truncation, the chat template when the tokenizer has one.

    Used by reward and policy training and by evaluation's truncation audit, so all three see the
    same ids (docs/methods.md s6).

    Args:
        tokenizer: the model's tokenizer; its ``sequence_layout`` picks the layout.
        frame: a polars pairs table with columns prompt, chosen, rejected and optionally p_chosen,
            margin, prompt_messages (absent optional columns: p_chosen 1.0, margin NaN, no turns).
        max_length: most tokens per sequence (prompt and response).
        max_prompt_length: tokens the prompt is never cut below (``truncate_group``).

    Returns:
        ``TokenizedPairs`` of the table's rows, in order (``tokenize_pairs``).

    Raises:
        ValueError: ``max_length`` leaves no room for a response token beside ``max_prompt_length``.
    """
    return tokenize_pairs(
        tokenizer, frame["prompt"].to_list(), frame["chosen"].to_list(), frame["rejected"].to_list(),
        frame["p_chosen"].to_list() if "p_chosen" in frame.columns else None,
        frame["margin"].to_list() if "margin" in frame.columns else None, max_length, max_prompt_length,
        prompt_messages_of(frame),
    )

