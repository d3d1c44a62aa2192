"""Policies on held-out prompts: sample, judge against the SFT reference, measure (methods.md s5 "Win rate").

The judge must not have been trained against the policy: the synthetic lab's hidden reward
(core/synthetic) reads any text, so on synthetic prompts it is the judge. Sampling is the policy
core's (core/policy/generation.py), with prompts encoded by the training rule.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import polars as pl

from prefalign.core.evaluation.metrics import sigmoid
from prefalign.core.evaluation.scoring import PairScorer


def sample_for_prompts(bundle: Any, prompts: Sequence[str], sampling: dict[str, Any], max_length: int,
                       max_prompt_length: int) -> pl.DataFrame:
    """One row per (prompt, sample_index): the sampled response text and its length in characters."""
    from prefalign.core.policy.generation import SamplingConfig, sample_responses
    from prefalign.core.training.batching import tokenize_sequence

    config = SamplingConfig.from_dict(sampling)
    prompt_ids = []
    for prompt in prompts:
        seq = tokenize_sequence(bundle.tokenizer, prompt, "", max_length, max_prompt_length)
        prompt_ids.append(seq.input_ids[: seq.prompt_length])
    samples = sample_responses(bundle.model, bundle.tokenizer, prompt_ids, config)
    return samples.with_columns(
        pl.Series("prompt", [prompts[i] for i in samples["prompt_index"].to_list()], dtype=pl.String),
        pl.col("response").str.len_chars().cast(pl.Float64).alias("length"),
    ).select("prompt", "sample_index", "response", "length", "finished")


def judge_against_reference(policy_samples: pl.DataFrame, reference_samples: pl.DataFrame,
                            judge: PairScorer) -> pl.DataFrame:
    """Sample i of the policy vs sample i of the reference on each prompt: the judge's P(policy wins)."""
    both = policy_samples.join(reference_samples, on=["prompt", "sample_index"], suffix="_reference")
    logits = judge(both["prompt"].to_list(), both["response"].to_list(), both["response_reference"].to_list())
    return both.select(
        "prompt", "sample_index", "response", "finished",
        pl.Series("judge_p", sigmoid(np.asarray(logits, dtype=np.float64))),
        pl.col("length").alias("policy_length"), pl.col("length_reference").alias("reference_length"),
    )


def _sample_sequences(tokenizer: Any, judged: pl.DataFrame, max_length: int, max_prompt_length: int) -> list:
    """The samples as token sequences: EOS only where the model emitted it (a sample cut at
    max_new_tokens did not sample EOS, so its log-prob must not include one)."""
    from prefalign.core.training.batching import TokenizedSequence, tokenize_sequence

    sequences = []
    for prompt, response, finished in judged.select("prompt", "response", "finished").iter_rows():
        seq = tokenize_sequence(tokenizer, prompt, response, max_length, max_prompt_length)
        ids = seq.input_ids if finished or len(seq.input_ids) == seq.prompt_length else seq.input_ids[:-1]
        sequences.append(TokenizedSequence(ids, seq.prompt_length))
    return sequences


def with_kl_terms(judged: pl.DataFrame, policy: Any, reference: Any, max_length: int, max_prompt_length: int,
                  batch_size: int = 16) -> pl.DataFrame:
    """Add log pi and log pi_ref of the policy's own samples (the KL estimate's terms).

    The sampled text is re-tokenised; for a BPE tokenizer the ids can differ from the sampled
    ones in rare merges, a small bias of the estimate (documented in docs/evaluation.md).
    """
    from prefalign.core.policy.batches import make_row_batches
    from prefalign.core.policy.gpo import rows_logprobs

    columns = {}
    for name, bundle in (("policy_logp", policy), ("reference_logp", reference)):
        sequences = _sample_sequences(bundle.tokenizer, judged, max_length, max_prompt_length)
        batches = make_row_batches(sequences, batch_size, bundle.tokenizer.pad_token_id, seed=None)
        columns[name] = rows_logprobs(bundle.model, batches, len(sequences)).double().cpu().numpy()
    return judged.with_columns(*(pl.Series(name, values) for name, values in columns.items()))
