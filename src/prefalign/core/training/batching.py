"""Tokenise (prompt, response) sequences and group them into low-padding batches.

Layout of one sequence: ``[bos] prompt [response ... eos]``, right-padded. ``response_mask`` marks
the response tokens (eos included), so policies can sum response-only log-probs.
``last_prompt_index`` is the last prompt token (GPM's gate reads it) and ``last_index`` the last
real token (reward heads read it).

Truncation is explicit and counted, never a silent drop: when a sequence is longer than
``max_length``, the prompt is cut from the LEFT (the end nearest the response survives) down to
``max_prompt_length``, then the response is cut from the right. Every pair is kept.

Pairs: chosen and rejected of a pair go through ONE forward pass. A ``PairBatch`` of B pairs
holds 2B sequences: rows 0..B-1 are the chosen, rows B..2B-1 the rejected responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class TruncationStats:
    """Counts of what truncation did; a person reads these in the run's metrics."""

    sequences: int = 0
    truncated_prompts: int = 0
    truncated_responses: int = 0
    prompt_tokens_removed: int = 0
    response_tokens_removed: int = 0

    def add(self, other: "TruncationStats") -> "TruncationStats":
        return TruncationStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class TokenizedSequence:
    input_ids: list[int]
    prompt_length: int  # tokens before the response, bos included

    def __len__(self) -> int:
        return len(self.input_ids)


def assemble_sequence(
    prompt_ids: list[int],
    response_ids: list[int],
    max_length: int,
    max_prompt_length: int,
    stats: TruncationStats | None = None,
) -> TokenizedSequence:
    """Truncate already-tokenised ``prompt_ids`` ([bos] included) and ``response_ids`` ([eos] included).

    Rule (module doc): cut the prompt from the left down to what fits beside the full response, but
    never below ``max_prompt_length``; then cut the response from the right. Counted in ``stats``.
    """
    if max_prompt_length < 1 or max_length < max_prompt_length + 2:
        raise ValueError(
            f"need 1 <= max_prompt_length ({max_prompt_length}) and max_length ({max_length}) >= "
            "max_prompt_length + 2 so that at least one response token fits"
        )
    overflow = len(prompt_ids) + len(response_ids) - max_length
    cut_prompt = cut_response = 0
    if overflow > 0:
        keep_prompt = max(min(len(prompt_ids), max_prompt_length), max_length - len(response_ids))
        cut_prompt = len(prompt_ids) - keep_prompt
        if cut_prompt > 0:
            prompt_ids = prompt_ids[:1] + prompt_ids[1 + cut_prompt :]  # keep [bos] and the prompt's end
        cut_response = max(0, len(prompt_ids) + len(response_ids) - max_length)
        if cut_response > 0:
            response_ids = response_ids[: len(response_ids) - cut_response]
    if stats is not None:
        stats.sequences += 1
        stats.truncated_prompts += cut_prompt > 0
        stats.truncated_responses += cut_response > 0
        stats.prompt_tokens_removed += cut_prompt
        stats.response_tokens_removed += cut_response
    return TokenizedSequence(prompt_ids + response_ids, len(prompt_ids))


def _encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    # One batched call: the Rust tokenizer encodes the list in parallel (per-string calls were ~10x slower).
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []


def _bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    # Tokenizers without a bos token (e.g. Qwen) get the eos token as the separator in front.
    return [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]


def tokenize_sequences(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
    max_prompt_length: int,
    stats: TruncationStats | None = None,
) -> list[TokenizedSequence]:
    """``[bos] prompt response [eos]`` for each (prompt, response), truncated by the module's rule."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    unique = list(dict.fromkeys(prompts))  # pairs share prompts: encode each once
    encoded = dict(zip(unique, _encode(tokenizer, unique)))
    bos, eos = _bos(tokenizer), [tokenizer.eos_token_id]
    return [
        assemble_sequence(bos + encoded[x], ids + eos, max_length, max_prompt_length, stats)
        for x, ids in zip(prompts, _encode(tokenizer, responses))
    ]


def tokenize_sequence(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_length: int,
    max_prompt_length: int,
    stats: TruncationStats | None = None,
) -> TokenizedSequence:
    """One ``[bos] prompt response [eos]`` sequence (see ``tokenize_sequences`` for many)."""
    return tokenize_sequences(tokenizer, [prompt], [response], max_length, max_prompt_length, stats)[0]


@dataclass
class SequenceBatch:
    """N right-padded sequences. Shapes: [N, T] for the tensors, [N] for the indices."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    last_prompt_index: torch.Tensor
    last_index: torch.Tensor

    def to(self, device: torch.device | str) -> "SequenceBatch":
        return SequenceBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def rows(self, index: torch.Tensor) -> "SequenceBatch":
        return SequenceBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.num_tokens / max(1, self.attention_mask.numel())


def collate_sequences(sequences: Sequence[TokenizedSequence], pad_token_id: int) -> SequenceBatch:
    """Right-pad to the longest sequence of this batch (batches are length-grouped, so it is short)."""
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
        return self.sequences.num_tokens

    def to(self, device: torch.device | str) -> "PairBatch":
        return PairBatch(self.sequences.to(device), self.p_chosen.to(device), self.margin.to(device), self.pair_index.to(device))

    def shard(self, rank: int, world_size: int) -> "PairBatch":
        """This process's share of a global batch (pairs rank, rank+W, ...): DDP's mean = the global mean."""
        pairs = torch.arange(rank, len(self), world_size)
        rows = torch.cat([pairs, pairs + len(self)])
        return PairBatch(self.sequences.rows(rows), self.p_chosen[pairs], self.margin[pairs], self.pair_index[pairs])


@dataclass
class TokenizedPairs:
    """Every pair tokenised once; batches are cut from it per epoch."""

    chosen: list[TokenizedSequence]
    rejected: list[TokenizedSequence]
    p_chosen: np.ndarray
    margin: np.ndarray
    truncation: TruncationStats = field(default_factory=TruncationStats)

    def __len__(self) -> int:
        return len(self.chosen)


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    p_chosen: Sequence[float] | None = None,
    margin: Sequence[float | None] | None = None,
    max_length: int = 256,
    max_prompt_length: int = 128,
) -> TokenizedPairs:
    """Tokenise every pair (none dropped); truncation counts land in ``.truncation``."""
    if not (len(prompts) == len(chosen) == len(rejected)):
        raise ValueError(f"prompts/chosen/rejected lengths differ: {len(prompts)}, {len(chosen)}, {len(rejected)}")
    stats = TruncationStats()
    tok_chosen = tokenize_sequences(tokenizer, prompts, chosen, max_length, max_prompt_length, stats)
    tok_rejected = tokenize_sequences(tokenizer, prompts, rejected, max_length, max_prompt_length, stats)
    p = np.ones(len(prompts)) if p_chosen is None else np.asarray(p_chosen, dtype=np.float64)
    m = np.full(len(prompts), np.nan) if margin is None else np.array([np.nan if v is None else v for v in margin], dtype=np.float64)
    return TokenizedPairs(tok_chosen, tok_rejected, p, m, stats)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int | None, group_batches: int = 16) -> list[np.ndarray]:
    """Index batches of similar length: shuffle, sort within groups of ``group_batches`` batches, shuffle batch order.

    With ``seed`` None the order is deterministic (sorted by length), for evaluation.
    """
    lengths = np.asarray(lengths)
    if seed is None:
        order = np.argsort(-lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    group = batch_size * group_batches
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        order[start : start + group] = chunk[np.argsort(-lengths[chunk], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def make_pair_batches(tokenized: TokenizedPairs, batch_size: int, pad_token_id: int, seed: int | None = 0) -> list[PairBatch]:
    """Length-grouped ``PairBatch``es; a pair's length is its longer side."""
    lengths = [max(len(c), len(r)) for c, r in zip(tokenized.chosen, tokenized.rejected)]
    batches = []
    for index in length_grouped_batches(lengths, batch_size, seed):
        seqs = [tokenized.chosen[i] for i in index] + [tokenized.rejected[i] for i in index]
        batches.append(
            PairBatch(
                collate_sequences(seqs, pad_token_id),
                torch.tensor(tokenized.p_chosen[index], dtype=torch.float32),
                torch.tensor(tokenized.margin[index], dtype=torch.float32),
                torch.as_tensor(index, dtype=torch.long),
            )
        )
    return batches


def padding_fraction(batches: Sequence[PairBatch | SequenceBatch]) -> float:
    """Share of token slots that are padding, over all batches."""
    seqs = [b.sequences if isinstance(b, PairBatch) else b for b in batches]
    total = sum(s.attention_mask.numel() for s in seqs)
    return 1.0 - sum(s.num_tokens for s in seqs) / max(1, total)
