"""General Preference Optimisation, iterative and on-policy (docs/methods.md s4, "GPO").

One iteration, with pi_t the current policy:
  1. sample K responses per training prompt from pi_t (core/policy/generation.py);
  2. score every pair with the preference model: a (K, K) table of log-odds s(y_i > y_k | x)
     per prompt (GPM: K forward passes, then vector arithmetic; BT: r_i - r_k);
  3. s_i = (1/K) sum_k s(y_i > y_k | x);
  4. log pi_t(y_i|x) once, no grad (pi_t is the fixed reference of this iteration);
  5. minimise (log pi(y_i|x) - log pi_t(y_i|x) - s_i / beta)^2, starting from pi_t; the result
     is pi_{t+1}.
The policy and the preference model may use different tokenizers: the preference model reads the
sampled responses as text. Both read the prompt as its ``prompt_messages`` turns (the chat template's
layout when their tokenizer has one), the rule the policy and the preference model were trained with.

Scores are log-odds: P(y_i > y_k) = sigmoid(s(y_i > y_k)). For GPM that is the skew score
divided by its temperature tau, for BT the reward difference, so both baselines share one unit.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import polars as pl
import torch

from prefalign.core.models.precision import compute_precision
from prefalign.core.policy.batches import RowBatch
from prefalign.core.policy.generation import SamplingConfig, sample_responses
from prefalign.core.policy.logprobs import sequence_logprobs
from prefalign.core.policy.losses import gpo_loss, gpo_scores_from_matrix
from prefalign.core.schema import MESSAGES_DTYPE
from prefalign.core.training.batching import Messages, conversation_of
from prefalign.core.training.normalisation import StepLoss, Units

# (prompts, groups of K responses, prompt_messages or None) -> (P, K, K) tensor of log-odds s(y_i > y_k | x)
PreferenceTableFn = Callable[[Sequence[str], Sequence[Sequence[str]], Optional[Sequence[Messages]]], torch.Tensor]


def check_gpo_beta(beta: float) -> float:
    """GPO's beta, checked: the loss divides by it, so it must be > 0 (the one rule: GPOConfig.from_dict,
    and so the check before a run, call this too).

    Args:
        beta: GPO's beta (docs/methods.md s4.6).

    Returns:
        ``beta`` unchanged.

    Raises:
        ValueError: beta <= 0, naming the value.
    """
    if beta <= 0:
        raise ValueError(f"gpo.beta={beta!r} must be > 0 (the loss is (log-ratio - score / beta)^2)")
    return beta


def make_gpo_loss_fn(beta: float) -> StepLoss:
    """The GPO square loss in the training loop's shape; batches carry `old_logp` and `score` targets.

    Args:
        beta: > 0.

    Returns:
        A :class:`StepLoss` whose loss is per response (an example-level term: summed over the
        step's responses, divided by their number).

    Raises:
        ValueError: when beta <= 0.
    """
    check_gpo_beta(beta)

    def forward(model: torch.nn.Module, batch: RowBatch, denominators: Units) -> tuple[torch.Tensor, dict[str, float]]:
        seqs = batch.sequences
        logps = sequence_logprobs(model, seqs.input_ids, seqs.attention_mask, seqs.response_mask)
        old = batch.targets["old_logp"].to(logps.dtype)
        loss = gpo_loss(logps, old, batch.targets["score"], beta, denominators.examples)
        return loss, {"log_ratio": (logps - old).mean().item()}

    return StepLoss(forward)


def score_generations(
    prompts: Sequence[str], generations: pl.DataFrame, preference_table: PreferenceTableFn, k: int,
    prompt_messages: Sequence[Messages] | None = None,
) -> tuple[pl.DataFrame, torch.Tensor]:
    """Add the prompt (text and turns), s_i and the row of s(y_i > y_k) to every sampled response;
    also return the (P, K, K) table.

    Args:
        prompts: [P] flattened prompts.
        generations: K rows per prompt (``sample_responses``: prompt_index, sample_index, response).
        preference_table: the scorer, returning (P, K, K) log-odds s(y_i > y_k | x).
        k: samples per prompt (K).
        prompt_messages: [P] chat turns (None: one user turn holding each prompt).

    Returns:
        (rows, table): the generations sorted by (prompt_index, sample_index) with ``prompt``,
        ``prompt_messages``, ``score`` (s_i = (1/K) sum_k s(y_i > y_k | x), log-odds, float64) and
        ``pairwise_scores`` (the row s(y_i > y_k), k = 1..K); and the scorer's (P, K, K) table.
        Source: docs/methods.md s4.6 (Zhang et al. 2410.02197, s5).

    Raises:
        ValueError: the scorer's table is not (P, K, K), naming both shapes.
    """
    generations = generations.sort("prompt_index", "sample_index")
    groups = [generations["response"][p * k:(p + 1) * k].to_list() for p in range(len(prompts))]
    messages = [conversation_of(x, None if prompt_messages is None else prompt_messages[i]) for i, x in enumerate(prompts)]
    table = preference_table(list(prompts), groups, messages)
    if tuple(table.shape) != (len(prompts), k, k):
        raise ValueError(f"preference table has shape {tuple(table.shape)}, expected {(len(prompts), k, k)}")
    scores = gpo_scores_from_matrix(table.double())
    index = generations["prompt_index"].to_list()
    return generations.with_columns(
        pl.Series("prompt", [prompts[i] for i in index], dtype=pl.String),
        pl.Series("prompt_messages", [messages[i] for i in index], dtype=MESSAGES_DTYPE),
        pl.Series("score", scores.reshape(-1).tolist(), dtype=pl.Float64),
        pl.Series("pairwise_scores", table.double().reshape(len(prompts) * k, k).tolist(), dtype=pl.List(pl.Float64)),
    ), table


def sample_and_score(
    policy: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    preference_table: PreferenceTableFn,
    sampling: SamplingConfig,
    prompt_messages: Sequence[Messages] | None = None,
    timings: dict[str, float] | None = None,
) -> pl.DataFrame:
    """Steps 1-3 of an iteration: one row per sampled response with its score s_i.

    Args:
        policy: the current policy pi_t (samples with its own weights).
        tokenizer: the policy's tokenizer.
        prompts: [P] flattened prompts.
        prompt_ids: [P] their token ids by the training rule
            (``core.training.batching.prompt_token_ids`` with the same ``prompt_messages``).
        preference_table: the scorer, returning (P, K, K) log-odds.
        sampling: the sampling settings (K = ``samples_per_prompt``).
        prompt_messages: [P] chat turns (None: one user turn per prompt).
        timings: when given, receives ``sampling_seconds`` and ``scoring_seconds`` (wall time).

    Returns:
        P * K rows, one per sampled response, with its score s_i (``score_generations``' rows).

    Raises:
        ValueError: ``prompts`` and ``prompt_ids`` differ in length (also ``score_generations``'
            shape check, and a prompt of zero tokens from ``sample_responses``).
    """
    if len(prompt_ids) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(prompt_ids)} encoded prompts")
    start = time.perf_counter()
    generations = sample_responses(policy, tokenizer, prompt_ids, sampling)
    sampled = time.perf_counter()
    scored, _ = score_generations(prompts, generations, preference_table, sampling.samples_per_prompt, prompt_messages)
    if timings is not None:
        timings.update(sampling_seconds=sampled - start, scoring_seconds=time.perf_counter() - sampled)
    return scored


@torch.no_grad()
def rows_logprobs(policy: torch.nn.Module, batches: Sequence[RowBatch], n_rows: int, mixed_precision: str = "no") -> torch.Tensor:
    """log pi(y|x) of every row, in row order: one no-grad pass (pi_t before an iteration trains),
    under the training's ``mixed_precision`` autocast (auto | no | bf16 | fp16).

    Args:
        policy: the policy (its train/eval mode is restored afterwards).
        batches: row batches; each ``row_index`` says where its rows go in the output.
        n_rows: number of rows in all (the output length).
        mixed_precision: autocast mode of the training (auto | no | bf16 | fp16).

    Returns:
        float32 [n_rows] on the CPU: the summed response-token log-probs (nats) per row; 0 for a
        row no batch covers.
    """
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    out = torch.zeros(n_rows, dtype=torch.float32)
    for batch in batches:
        s = batch.sequences.to(device)
        with compute_precision(device, mixed_precision):
            logps = sequence_logprobs(policy, s.input_ids, s.attention_mask, s.response_mask)
        out[batch.row_index] = logps.float().cpu()
    policy.train(was_training)
    return out
