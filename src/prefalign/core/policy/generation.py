"""Batched sampling of K responses per prompt from a causal LM.

Prompts go in as token ids (encoded by the same rule the training batches use), responses come
out as strings: a preference model with another tokenizer reads the text, never our ids. The
sampled ids come out too (`token_ids`), so a log-probability of a sample (the KL estimate of
docs/methods.md s5) is taken on exactly the tokens that were drawn, never on a re-tokenisation of the
text (a BPE re-encoding can merge differently, which biased the KL estimate below zero).
Left padding, so every row's next token is generated at the same position; each prompt is encoded
once for its K samples (its key/value cache repeated), and finished rows leave the batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import polars as pl
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefalign.core.models.params import dataclass_from_params
from prefalign.core.policy.batches import make_row_batches
from prefalign.core.policy.logprobs import sequence_logprobs
from prefalign.core.training.batching import TokenizedSequence

GENERATIONS_SCHEMA = {
    "prompt_index": pl.Int64,
    "sample_index": pl.Int64,
    "response": pl.String,
    "n_tokens": pl.Int64,  # generated tokens, EOS and padding excluded
    "finished": pl.Boolean,  # True: the model emitted EOS; False: it hit max_new_tokens
    # The drawn ids: the response tokens, then EOS when finished (log pi(y|x) covers the EOS draw;
    # a capped sample never drew EOS). Padding after EOS is not included.
    "token_ids": pl.List(pl.Int64),
}


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample: K per prompt, temperature, nucleus top_p, a cap on new tokens, a seed."""

    samples_per_prompt: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    batch_size: int = 16  # rows (prompt x sample) per sampling batch
    seed: int = 0

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "SamplingConfig":
        """The ``sampling`` parameter block, checked.

        Args:
            params: the block; None = defaults.

        Returns:
            The checked configuration.

        Raises:
            ParameterError: an unknown key or a value of the wrong type.
            ValueError: samples_per_prompt < 2, temperature <= 0, top_p outside (0, 1], or
                max_new_tokens / batch_size < 1.
        """
        cfg = dataclass_from_params(cls, params, "sampling")
        if cfg.samples_per_prompt < 2:
            raise ValueError(f"sampling.samples_per_prompt={cfg.samples_per_prompt}: GPO compares responses, use K >= 2")
        if cfg.temperature <= 0 or not 0 < cfg.top_p <= 1:
            raise ValueError(
                f"sampling.temperature={cfg.temperature} must be > 0 and sampling.top_p={cfg.top_p} in (0, 1]"
            )
        if cfg.max_new_tokens < 1 or cfg.batch_size < 1:
            raise ValueError("sampling.max_new_tokens and sampling.batch_size must be >= 1")
        return cfg


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every row right-aligned.

    Args:
        rows: token-id lists (an empty row is all padding).
        pad_id: the id written into padding.

    Returns:
        (input_ids [N, W] long, attention_mask [N, W] long), W = the longest row.
    """
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            attention_mask[i, width - len(row):] = 1
    return input_ids, attention_mask


def _accepts(model: torch.nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def prompt_batches(prompt_lengths: Sequence[int], samples_per_prompt: int, batch_size: int) -> list[list[tuple[int, int, int]]]:
    """Batches of (prompt_index, first sample, samples) for :func:`sample_responses`: prompts in order
    of length (less left padding), each prompt's K samples together when K <= ``batch_size`` (its
    prompt is then encoded once for all of them), batches of at most ``batch_size`` rows.

    Args:
        prompt_lengths: [P] prompt lengths in tokens.
        samples_per_prompt: K, the samples drawn for each prompt.
        batch_size: the most rows (samples) in one batch.

    Returns:
        The batches, each a list of (prompt_index, first sample index, sample count) jobs; every
        (prompt, sample) appears exactly once.
    """
    order = sorted(range(len(prompt_lengths)), key=lambda p: prompt_lengths[p])
    batches: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    rows = 0
    for p in order:
        for first in range(0, samples_per_prompt, batch_size):
            n = min(batch_size, samples_per_prompt - first)
            if rows + n > batch_size:
                batches.append(current)
                current, rows = [], 0
            current.append((p, first, n))
            rows += n
    if current:
        batches.append(current)
    return batches


def draw_tokens(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), restricted to the nucleus: the most
    probable tokens whose mass reaches ``top_p`` (the first token always kept; Holtzman et al. 2020).

    Args:
        logits: [N, V] next-token logits.
        temperature: > 0; divides the logits.
        top_p: the nucleus mass in (0, 1]; 1 = no cut.

    Returns:
        [N] long: the drawn token ids.
    """
    scaled = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        outside = probs.cumsum(dim=-1) - probs > top_p  # the mass before this token already reaches top_p
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(scaled.softmax(dim=-1), 1).squeeze(-1)


def _sample_batch(model, jobs: list[tuple[int, int, int]], prompt_token_ids, config: SamplingConfig, pad_id: int, eos_id: int,
                  device: torch.device) -> list[list[int]]:
    """The drawn ids (through EOS, or max_new_tokens of them) of one batch's rows, in job order.

    Each distinct prompt is encoded once (left-padded batch of the prompts), its key/value cache then
    repeated for its samples; rows that drew EOS leave the batch (their cache rows are dropped)."""
    input_ids, attention_mask = left_pad([prompt_token_ids[p] for p, _, _ in jobs], pad_id)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    cache_key = "cache" if _accepts(model, "cache") else "past_key_values"  # transformers >= 5.2x names it cache
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, **extra)
    rows = torch.repeat_interleave(torch.arange(len(jobs), device=device), torch.tensor([n for _, _, n in jobs], device=device))
    cache = _cache_of(out)
    cache.batch_select_indices(rows)  # prompt i's cache rows, once per sample
    logits, mask, position = out.logits[rows, -1], attention_mask[rows], positions[rows, -1]
    alive = torch.arange(len(rows), device=device)  # which of the batch's rows are still generating
    drawn: list[list[int]] = [[] for _ in range(len(rows))]
    for step in range(config.max_new_tokens):
        tokens = draw_tokens(logits, config.temperature, config.top_p)
        for row, token in zip(alive.tolist(), tokens.tolist()):
            drawn[row].append(token)
        going = tokens != eos_id
        if step == config.max_new_tokens - 1 or not bool(going.any()):
            break
        if not bool(going.all()):  # finished rows leave the batch
            keep = going.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            alive, tokens, mask, position = alive[keep], tokens[keep], mask[keep], position[keep]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        position = position + 1
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position[:, None], use_cache=True, **{cache_key: cache})
        cache, logits = _cache_of(out), out.logits[:, -1]
    return drawn


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_token_ids: Sequence[Sequence[int]],
    config: SamplingConfig,
) -> pl.DataFrame:
    """K sampled responses for each prompt: one row per (prompt_index, sample_index).

    Batched sampling with a key/value cache (``prompt_batches``): prompts of similar length share a
    left-padded batch, each prompt is encoded ONCE and its cache repeated for its K samples (K times
    less prompt compute than encoding every sample's copy), and a row leaves the batch when it draws
    EOS. Tokens are drawn from softmax(logits / temperature) within the top_p nucleus. Each batch
    runs under its own seed (config.seed + batch number) inside a forked RNG, so results do not
    depend on what ran before and the caller's RNG state is untouched.

    Args:
        model: the causal LM (left in its train/eval mode afterwards).
        tokenizer: its tokenizer (pad and eos ids; decodes the responses).
        prompt_token_ids: [P] encoded prompts, each at least one token.
        config: K, temperature, top_p (top_k off), max_new_tokens, batch_size, seed.

    Returns:
        A GENERATIONS_SCHEMA table with P * K rows, sorted by (prompt_index, sample_index).

    Raises:
        ValueError: a prompt of zero tokens.
    """
    if any(len(p) == 0 for p in prompt_token_ids):
        raise ValueError("a prompt encoded to zero tokens; the encoding rule must add at least BOS")
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    records: list[dict[str, Any]] = []
    batches = prompt_batches([len(p) for p in prompt_token_ids], config.samples_per_prompt, config.batch_size)
    for batch_number, jobs in enumerate(batches):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed + batch_number)
            drawn = _sample_batch(model, jobs, prompt_token_ids, config, pad_id, eos_id, device)
        labels = [(p, first + j) for p, first, n in jobs for j in range(n)]
        for (prompt_index, sample_index), row in zip(labels, drawn):
            finished = eos_id in row
            kept = row[: row.index(eos_id)] if finished else row
            records.append({
                "prompt_index": prompt_index,
                "sample_index": sample_index,
                "response": tokenizer.decode(kept, skip_special_tokens=True),
                "n_tokens": len(kept),
                "finished": finished,
                "token_ids": kept + [eos_id] if finished else kept,
            })
    model.train(was_training)
    return pl.DataFrame(records, schema=GENERATIONS_SCHEMA).sort("prompt_index", "sample_index")


@torch.no_grad()
def sampled_sequence_logprobs(
    model: PreTrainedModel,
    prompt_token_ids: Sequence[Sequence[int]],
    samples: pl.DataFrame,
    pad_token_id: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """log pi(y|x) of each sampled response, summed over exactly its drawn ids (`token_ids`).

    `samples` has one row per sample with `prompt_index` (into prompt_token_ids) and
    `token_ids`; the result is in row order. Scoring the same drawn ids under a policy and its
    reference gives the per-sample log-ratio whose mean is the Monte-Carlo KL(pi || pi_ref)
    (docs/methods.md s5 "KL"): unbiased, and non-negative in expectation, when the samples were drawn
    from pi itself (temperature 1, top_p 1).

    Args:
        model: the policy or the reference (left in its train/eval mode afterwards).
        prompt_token_ids: the encoded prompts the samples answer.
        samples: ``sample_responses``' table (needs prompt_index and token_ids).
        pad_token_id: the id written into padding.
        batch_size: sequences per forward pass.

    Returns:
        [len(samples)] float64 log pi(y|x) on CPU, nats.

    Raises:
        ValueError: ``samples`` lacks prompt_index or token_ids.
    """
    missing = {"prompt_index", "token_ids"} - set(samples.columns)
    if missing:
        raise ValueError(f"samples lack columns {sorted(missing)}: pass sample_responses' output")
    sequences = []
    for prompt_index, token_ids in samples.select("prompt_index", "token_ids").iter_rows():
        prompt = list(prompt_token_ids[prompt_index])
        sequences.append(TokenizedSequence(prompt + list(token_ids), len(prompt)))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.zeros(len(sequences), dtype=torch.float64)
    for batch in make_row_batches(sequences, batch_size, pad_token_id, seed=None):
        s = batch.sequences.to(device)
        out[batch.row_index] = sequence_logprobs(model, s.input_ids, s.attention_mask, s.response_mask).double().cpu()
    model.train(was_training)
    return out
