"""Policies on held-out prompts: sample, judge against the SFT reference, measure (docs/methods.md s5 "Win rate").

The judge must not have been trained against the policy: the synthetic lab's hidden reward
(core/synthetic) reads any text, so on synthetic prompts it is the judge. Sampling is the policy
core's (core/policy/generation.py), with prompts encoded by the training rule.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import polars as pl

from prefalign.core.evaluation.metrics import sigmoid
from prefalign.core.evaluation.pair_scorers import PairScorer
from prefalign.core.schema import MESSAGES_DTYPE
from prefalign.core.training.batching import prompt_messages_of


SAMPLES_SCHEMA = {"prompt": pl.String, "prompt_messages": MESSAGES_DTYPE, "sample_index": pl.Int64,
                  "response": pl.String, "length": pl.Float64, "finished": pl.Boolean,
                  "prompt_token_ids": pl.List(pl.Int64), "token_ids": pl.List(pl.Int64)}


def sample_for_prompts(bundle: Any, prompts: Sequence[str], sampling: dict[str, Any], max_length: int,
                       max_prompt_length: int, prompt_messages: Sequence[Any] | None = None) -> pl.DataFrame:
    """One row per (prompt, sample_index): the prompt (text and turns), the sampled response text, its
    length in characters, whether it ended in EOS, and the exact prompt and drawn token ids (for the KL
    estimate). Prompts are encoded by training's rule (``prompt_token_ids``: the chat template with
    the ``prompt_messages`` turns when the tokenizer has one).

    Args:
        bundle: the policy's ModelBundle (model and tokenizer).
        prompts: [P] flattened prompts.
        sampling: ``SamplingConfig`` keys (core/policy/generation.py): samples per prompt, temperature, ...
        max_length: the training rule's sequence cap in tokens (prompt + response).
        max_prompt_length: the training rule's prompt cap in tokens.
        prompt_messages: [P] chat turns, or None (one user turn each).

    Returns:
        A polars table with columns prompt, prompt_messages, sample_index, response, length
        (characters, float), finished (bool: ended in EOS), prompt_token_ids, token_ids
        (``SAMPLES_SCHEMA``); no rows when there is no prompt (nothing is sampled).

    Raises:
        ValueError: a bad sampling value (``SamplingConfig.from_dict``).
    """
    if not prompts:
        return pl.DataFrame(schema=SAMPLES_SCHEMA)
    from prefalign.core.policy.generation import SamplingConfig, sample_responses
    from prefalign.core.training.batching import conversation_of, prompt_token_ids

    config = SamplingConfig.from_dict(sampling)
    prompt_ids = prompt_token_ids(bundle.tokenizer, list(prompts), max_length, max_prompt_length, prompt_messages)
    messages = [conversation_of(x, None if prompt_messages is None else prompt_messages[i]) for i, x in enumerate(prompts)]
    samples = sample_responses(bundle.model, bundle.tokenizer, prompt_ids, config)
    indices = samples["prompt_index"].to_list()
    return samples.with_columns(
        pl.Series("prompt", [prompts[i] for i in indices], dtype=pl.String),
        pl.Series("prompt_messages", [messages[i] for i in indices], dtype=MESSAGES_DTYPE),
        pl.col("response").str.len_chars().cast(pl.Float64).alias("length"),
        pl.Series("prompt_token_ids", [prompt_ids[i] for i in indices], dtype=pl.List(pl.Int64)),
    ).select("prompt", "prompt_messages", "sample_index", "response", "length", "finished", "prompt_token_ids",
             "token_ids")


def judge_against_reference(policy_samples: pl.DataFrame, reference_samples: pl.DataFrame,
                            judge: PairScorer) -> pl.DataFrame:
    """Sample i of the policy vs sample i of the reference on each prompt (text and turns, as
    ``sample_for_prompts`` gives them): the judge's P(policy wins).

    Args:
        policy_samples: ``sample_for_prompts`` of the policy.
        reference_samples: ``sample_for_prompts`` of the reference (SFT), same prompts and sample indices.
        judge: a PairScorer; its logit is of P(first response beats second).

    Returns:
        One row per joined (prompt, sample_index): the policy sample's columns, judge_p in [0, 1],
        policy_length and reference_length (characters).
    """
    both = policy_samples.join(reference_samples, on=["prompt", "prompt_messages", "sample_index"], suffix="_reference")
    logits = judge(both["prompt"].to_list(), both["response"].to_list(), both["response_reference"].to_list(),
                   prompt_messages_of(both))
    return both.select(
        "prompt", "prompt_messages", "sample_index", "response", "finished", "prompt_token_ids", "token_ids",
        pl.Series("judge_p", sigmoid(np.asarray(logits, dtype=np.float64))),
        pl.col("length").alias("policy_length"), pl.col("length_reference").alias("reference_length"),
    )


def _same_vocabulary(policy: Any, reference: Any) -> bool:
    return policy.tokenizer is reference.tokenizer or policy.tokenizer.get_vocab() == reference.tokenizer.get_vocab()


def with_kl_terms(judged: pl.DataFrame, policy: Any, reference: Any, batch_size: int = 16) -> pl.DataFrame:
    """Add log pi and log pi_ref of the policy's own samples (the KL estimate's terms).

    Both are taken on exactly the ids the policy drew (`prompt_token_ids` + `token_ids`, EOS
    included only where it was drawn), so the mean log-ratio is the Monte-Carlo estimate of
    KL(pi || pi_ref) of docs/methods.md s5. Every policy here starts from the SFT checkpoint and keeps
    its tokenizer; a reference with another vocabulary cannot score our ids and is refused.

    Args:
        judged: ``judge_against_reference``'s table (needs prompt_token_ids and token_ids).
        policy: the policy's ModelBundle.
        reference: the reference's ModelBundle.
        batch_size: sequences per forward pass.

    Returns:
        ``judged`` with policy_logp and reference_logp (sequence log-probs of the sampled response, nats).

    Raises:
        ValueError: the two tokenizers' vocabularies differ.
    """
    from prefalign.core.policy.generation import sampled_sequence_logprobs

    if not _same_vocabulary(policy, reference):
        raise ValueError("KL(pi || pi_ref) needs the policy and the reference to share a tokenizer (the SFT "
                         "checkpoint's): their vocabularies differ, so the sampled ids mean different text")
    rows = judged.select("prompt_token_ids", "token_ids").with_row_index("prompt_index")
    prompt_ids = rows["prompt_token_ids"].to_list()
    columns = {}
    for name, bundle in (("policy_logp", policy), ("reference_logp", reference)):
        columns[name] = sampled_sequence_logprobs(bundle.model, prompt_ids, rows, bundle.tokenizer.pad_token_id,
                                                  batch_size).numpy()
    return judged.with_columns(*(pl.Series(name, values) for name, values in columns.items()))
