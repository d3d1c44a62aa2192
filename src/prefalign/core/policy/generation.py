"""Batched sampling of K responses per prompt from a causal LM.

Prompts go in as token ids (encoded by the same rule the training batches use), responses come
out as strings: a preference model with another tokenizer reads the text, never our ids. The
sampled ids come out too (`token_ids`), so a log-probability of a sample (the KL estimate of
docs/methods.md s5) is taken on exactly the tokens that were drawn, never on a re-tokenisation of the
text (a BPE re-encoding can merge differently, which biased the KL estimate below zero).
Left padding, so every row's next token is generated at the same position.
"""

from __future__ import annotations

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
    batch_size: int = 16  # rows (prompt x sample) per generate() call
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


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_token_ids: Sequence[Sequence[int]],
    config: SamplingConfig,
) -> pl.DataFrame:
    """K sampled responses for each prompt: one row per (prompt_index, sample_index).

    Rows are generated in batches of similar prompt length (less left padding). Each batch runs
    under its own seed (config.seed + batch number) inside a forked RNG, so results do not depend
    on what ran before and the caller's RNG state is untouched.

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
    k = config.samples_per_prompt
    jobs = [(p, s) for p in range(len(prompt_token_ids)) for s in range(k)]
    jobs.sort(key=lambda job: len(prompt_token_ids[job[0]]))
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    records: list[dict[str, Any]] = []
    for batch_number, start in enumerate(range(0, len(jobs), config.batch_size)):
        chunk = jobs[start:start + config.batch_size]
        input_ids, attention_mask = left_pad([prompt_token_ids[p] for p, _ in chunk], pad_id)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed + batch_number)
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                do_sample=True,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=0,  # only nucleus filtering, as configured
                max_new_tokens=config.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
            )
        new_tokens = output[:, input_ids.size(1):].cpu()
        for (prompt_index, sample_index), row in zip(chunk, new_tokens.tolist()):
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
