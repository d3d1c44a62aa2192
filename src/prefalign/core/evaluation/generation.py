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
from prefalign.core.evaluation.scoring import PairScorer, sequence_logprob_table


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
    ).select("prompt", "sample_index", "response", "length")


def judge_against_reference(policy_samples: pl.DataFrame, reference_samples: pl.DataFrame,
                            judge: PairScorer) -> pl.DataFrame:
    """Sample i of the policy vs sample i of the reference on each prompt: the judge's P(policy wins)."""
    both = policy_samples.join(reference_samples, on=["prompt", "sample_index"], suffix="_reference")
    logits = judge(both["prompt"].to_list(), both["response"].to_list(), both["response_reference"].to_list())
    return both.select(
        "prompt", "sample_index", "response",
        pl.Series("judge_p", sigmoid(np.asarray(logits, dtype=np.float64))),
        pl.col("length").alias("policy_length"), pl.col("length_reference").alias("reference_length"),
    )


def with_kl_terms(judged: pl.DataFrame, policy: Any, reference: Any, max_length: int, max_prompt_length: int,
                  batch_size: int = 16) -> pl.DataFrame:
    """Add log pi and log pi_ref of the policy's own samples (the KL estimate's terms).

    The sampled text is re-tokenised, as training data is; for a BPE tokenizer this can differ
    from the sampled ids in rare merges, a small bias of the estimate.
    """
    texts = judged.select("prompt", "response")
    kwargs = {"max_length": max_length, "max_prompt_length": max_prompt_length, "batch_size": batch_size}
    policy_logp = sequence_logprob_table(policy.model, policy.tokenizer, texts, **kwargs)["logp"]
    reference_logp = sequence_logprob_table(reference.model, reference.tokenizer, texts, **kwargs)["logp"]
    return judged.with_columns(policy_logp.alias("policy_logp"), reference_logp.alias("reference_logp"))
