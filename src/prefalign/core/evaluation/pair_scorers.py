"""Score tables: one number per pair, the logit of P(chosen > rejected), from any judge.

A `PairScorer` maps (prompts, first, second, prompt_messages) to logits of P(first > second);
``prompt_messages`` ([N] chat turns, or None for one user turn per prompt) is what a model with a
chat template reads, as in training. Reward models, GPM, and policies-as-implicit-rewards are
wrapped into scorers by the branch that owns them (the evaluation nodes, `implicit_reward_scorer`);
the synthetic ground truth is one too (it reads the flattened text).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import polars as pl
import torch

from prefalign.core.schema import MESSAGES_DTYPE, with_prompt_messages
from prefalign.core.synthetic.generator import hidden_reward, majority_winner, response_attributes
from prefalign.core.training.batching import Messages, conversation_key, prompt_messages_of

# (prompts [N], first [N], second [N], prompt_messages [N] | None) -> logits [N] of P(first > second)
PairScorer = Callable[[Sequence[str], Sequence[str], Sequence[str], "Sequence[Messages] | None"], np.ndarray]


def _checked(logits: np.ndarray, expected: int, what: str) -> np.ndarray:
    array = np.asarray(logits, dtype=np.float64).reshape(-1)
    if array.size != expected:
        raise ValueError(f"scorer returned {array.size} logits for {expected} {what}; it must return one per pair")
    return array


def score_pairs(pairs: pl.DataFrame, scorer: PairScorer) -> pl.DataFrame:
    """The rows plus `logit` = logit P(chosen > rejected) (pairs table or RewardBench rows); the
    scorer gets the rows' `prompt_messages` (None where the table has no such column).

    Args:
        pairs: rows with prompt, chosen, rejected (and optionally prompt_messages).
        scorer: a PairScorer.

    Returns:
        ``pairs`` with a float64 ``logit`` column.

    Raises:
        ValueError: the scorer returned other than one logit per row.
    """
    logits = scorer(pairs["prompt"].to_list(), pairs["chosen"].to_list(), pairs["rejected"].to_list(),
                    prompt_messages_of(pairs))
    return pairs.with_columns(pl.Series("logit", _checked(logits, pairs.height, "pairs")))


def score_triples(triples: pl.DataFrame, scorer: PairScorer) -> pl.DataFrame:
    """logit_ab, logit_bc, logit_ca for each A > B > C > A triple (three pairs per triple, one call).

    Args:
        triples: rows with prompt, response_a, response_b, response_c (and optionally prompt_messages).
        scorer: a PairScorer.

    Returns:
        ``triples`` with float64 logit_ab, logit_bc, logit_ca (logit of P(a beats b), etc.).

    Raises:
        ValueError: the scorer returned other than 3 logits per triple.
    """
    prompts = triples["prompt"].to_list() * 3
    first = triples["response_a"].to_list() + triples["response_b"].to_list() + triples["response_c"].to_list()
    second = triples["response_b"].to_list() + triples["response_c"].to_list() + triples["response_a"].to_list()
    messages = prompt_messages_of(triples)
    logits = _checked(scorer(prompts, first, second, None if messages is None else messages * 3),
                      3 * triples.height, "triple pairs").reshape(3, -1)
    return triples.with_columns(pl.Series("logit_ab", logits[0]), pl.Series("logit_bc", logits[1]),
                                pl.Series("logit_ca", logits[2]))


def scalar_truth_scorer(weights: Mapping[str, float], temperature: float = 1.0) -> PairScorer:
    """synthetic_scalar's truth as a judge: (r*(first) - r*(second)) / temperature.

    r* reads any text (core/synthetic/generator.py), so this also judges a policy's generations;
    text it does not recognise scores 0.

    Args:
        weights: the hidden reward's attribute weights (SyntheticConfig.weights).
        temperature: divides the reward gap (the lab's true_p = sigmoid(gap / temperature)).

    Returns:
        A PairScorer (prompt_messages ignored: r* reads the flattened text).
    """
    def scorer(prompts: Sequence[str], first: Sequence[str], second: Sequence[str], prompt_messages=None) -> np.ndarray:
        return np.array([(hidden_reward(p, x, weights) - hidden_reward(p, y, weights)) / temperature
                         for p, x, y in zip(prompts, first, second)], dtype=np.float64)

    return scorer


def cyclic_truth_scorer(strength: float) -> PairScorer:
    """synthetic_cyclic's truth: strength * (majority of helpfulness, correctness, concision).

    Args:
        strength: the logit magnitude of a decided pair (SyntheticConfig.cyclic_strength).

    Returns:
        A PairScorer giving +strength, -strength or 0 per pair.
    """
    def levels(prompt: str, text: str) -> tuple[int, int, int]:
        a = response_attributes(prompt, text)
        return a["helpfulness"], a["correctness"], -a["verbosity"]

    def scorer(prompts: Sequence[str], first: Sequence[str], second: Sequence[str], prompt_messages=None) -> np.ndarray:
        return np.array([strength * majority_winner(levels(p, x), levels(p, y))
                         for p, x, y in zip(prompts, first, second)], dtype=np.float64)

    return scorer


def score_by_source(pairs: pl.DataFrame, scorers: Mapping[str, PairScorer]) -> pl.DataFrame:
    """Score each source with its own scorer; sources without one are dropped (and so not evaluated).

    Args:
        pairs: a pairs table (needs source and the ``score_pairs`` columns).
        scorers: source name -> its PairScorer.

    Returns:
        The scored rows of the sources with a scorer, in ``scorers`` order, with ``logit``; an empty
        table with a null ``logit`` column when none is scored.

    Raises:
        ValueError: a scorer returned other than one logit per row.
    """
    parts = [score_pairs(pairs.filter(pl.col("source") == source), scorer) for source, scorer in scorers.items()]
    parts = [p for p in parts if p.height]
    if not parts:
        return pairs.clear().with_columns(pl.lit(None, dtype=pl.Float64).alias("logit"))
    return pl.concat(parts)


# ---------------------------------------------------------------------------------------------
# Policies as implicit rewards (docs/methods.md s5): beta * (log pi - log pi_ref), summed over response tokens
# ---------------------------------------------------------------------------------------------
PAIRS_TO_SCORE_SCHEMA = {"prompt": pl.String, "prompt_messages": MESSAGES_DTYPE, "first": pl.String, "second": pl.String}


def pairs_to_score(*tables: pl.DataFrame) -> pl.DataFrame:
    """Every distinct (prompt, prompt_messages, first, second) pair the evaluation scores: pairs and
    RewardBench rows (first = chosen, second = rejected) and triples (a-b, b-c, c-a).

    A policy's implicit reward of a pair is taken on the pair's own sequences, rendered and truncated
    as in training (both sides share the prompt ids), so the log-probs are per PAIR, not per response.
    Rows without ``prompt_messages`` get one user turn holding the prompt.

    Args:
        *tables: pairs tables, RewardBench rows or triples tables (empty ones are skipped).

    Returns:
        Distinct rows of prompt, prompt_messages, first, second (PAIRS_TO_SCORE_SCHEMA), first-seen order.
    """
    parts = []
    for table in tables:
        if not table.height:
            continue
        table = with_prompt_messages(table)
        for first, second in (("chosen", "rejected"), ("response_a", "response_b"), ("response_b", "response_c"),
                              ("response_c", "response_a")):
            if first in table.columns and second in table.columns:
                parts.append(table.select("prompt", pl.col("prompt_messages").cast(MESSAGES_DTYPE),
                                          pl.col(first).alias("first"), pl.col(second).alias("second")))
    if not parts:
        return pl.DataFrame(schema=PAIRS_TO_SCORE_SCHEMA)
    return pl.concat(parts).unique(maintain_order=True)


def pair_logprob_table(model, tokenizer, pairs: pl.DataFrame, max_length: int = 256,
                       max_prompt_length: int = 128, batch_size: int = 16) -> pl.DataFrame:
    """pairs (``pairs_to_score``) + `logp_first`, `logp_second`: log pi(response | prompt) summed over
    each side's response tokens (eos included), nats.

    The pairs are tokenised by training's rule (``tokenize_pairs``: the chat template with the
    ``prompt_messages`` turns, pair-consistent truncation) and scored by training's reference pass
    (core/policy/reference.score_pair_batches) in the training's layout (packed and prompt-shared for a
    causal LM with sdpa, ``packing.packable``), so a policy is scored on the sequences it was trained
    on, and a checkpoint with frozen lower layers reads them from the frozen-layer cache.

    Args:
        model: a causal LM (the policy or the reference).
        tokenizer: its tokenizer.
        pairs: ``pairs_to_score``'s table.
        max_length: sequence cap in tokens (prompt + response), as in training.
        max_prompt_length: prompt cap in tokens, as in training.
        batch_size: pairs per forward batch.

    Returns:
        ``pairs`` with float64 logp_first and logp_second (nats); null columns for an empty table.
    """
    from prefalign.core.policy.reference import score_pair_batches
    from prefalign.core.training.batching import make_pair_batches, tokenize_pairs
    from prefalign.core.training.packing import make_packed_pair_batches, packable

    if pairs.height == 0:
        return pairs.with_columns(pl.lit(None, dtype=pl.Float64).alias("logp_first"),
                                  pl.lit(None, dtype=pl.Float64).alias("logp_second"))
    tokenized = tokenize_pairs(tokenizer, pairs["prompt"].to_list(), pairs["first"].to_list(), pairs["second"].to_list(),
                               max_length=max_length, max_prompt_length=max_prompt_length,
                               prompt_messages=prompt_messages_of(pairs))
    can_pack, can_share = packable(model)  # a causal LM scores in its packed, prompt-shared training layout
    batches = (make_packed_pair_batches(tokenized, batch_size, tokenizer.pad_token_id, seed=None, share_prompt=can_share)
               if can_pack else make_pair_batches(tokenized, batch_size, tokenizer.pad_token_id, seed=None))
    index, first, second = score_pair_batches(model, batches)
    order = torch.argsort(index)
    return pairs.with_columns(pl.Series("logp_first", first[order].double().numpy()),
                              pl.Series("logp_second", second[order].double().numpy()))


def implicit_reward_scorer(policy_logps: pl.DataFrame, reference_logps: pl.DataFrame, beta: float) -> PairScorer:
    """logit = beta * [(log pi - log pi_ref)(first) - (log pi - log pi_ref)(second)] from two
    ``pair_logprob_table``s of the same pairs (a pair asked for in the other orientation is negated:
    pair truncation is symmetric).

    Source: DPO's implicit reward (Rafailov et al. 2023, arXiv:2305.18290), docs/methods.md s5.

    Args:
        policy_logps: ``pair_logprob_table`` under the policy.
        reference_logps: ``pair_logprob_table`` of the same pairs under the reference.
        beta: the objective's beta (dimensionless; logits in nats times beta).

    Returns:
        A PairScorer; it raises ValueError for a pair in neither orientation of the tables.
    """
    def ratios(table: pl.DataFrame) -> dict:
        return {(p, conversation_key(p, m), a, b): (la, lb)
                for p, m, a, b, la, lb in table.select("prompt", "prompt_messages", "first", "second", "logp_first",
                                                       "logp_second").iter_rows()}

    policy, reference = ratios(policy_logps), ratios(reference_logps)
    gap = {key: (lp[0] - reference[key][0]) - (lp[1] - reference[key][1]) for key, lp in policy.items() if key in reference}

    def scorer(prompts: Sequence[str], first: Sequence[str], second: Sequence[str], prompt_messages=None) -> np.ndarray:
        out = np.empty(len(prompts))
        for i, (p, x, y) in enumerate(zip(prompts, first, second)):
            turns = conversation_key(p, None if prompt_messages is None else prompt_messages[i])
            if (p, turns, x, y) in gap:
                out[i] = beta * gap[(p, turns, x, y)]
            elif (p, turns, y, x) in gap:
                out[i] = -beta * gap[(p, turns, y, x)]
            else:
                raise ValueError(f"no log-prob for the pair (prompt {p[:80]!r}, first {x[:40]!r}, second {y[:40]!r}); "
                                 "score it with pair_logprob_table under both the policy and the reference first")
        return out

    return scorer


# ---------------------------------------------------------------------------------------------
# Truncation in evaluation (docs/methods.md s9): counted, and pairs it makes identical kept apart
# ---------------------------------------------------------------------------------------------
def truncation_audit(tokenizer, pairs: pl.DataFrame, max_length: int, max_prompt_length: int) -> tuple[np.ndarray, dict]:
    """Which pairs a model sees as the SAME tokens on both sides, and how much truncation cut.

    Each pair is tokenised exactly as training and scoring tokenise it (``tokenize_pair_frame``:
    pair-consistent truncation at the model's max_length / max_prompt_length, docs/methods.md s6),
    and once more without a length limit: the difference is what truncation removed.

    Returns:
        identical: bool [n_pairs], True where chosen and rejected are token-identical once truncated.
        stats: sequences (2 per pair), sequences_truncated, tokens_removed (total), mean_tokens_removed
        and max_tokens_removed (over the cut sequences), pairs_identical_after_truncation.

    Args:
        tokenizer: the model's tokenizer.
        pairs: rows with prompt, chosen, rejected (and optionally prompt_messages).
        max_length: the model's sequence cap in tokens.
        max_prompt_length: the model's prompt cap in tokens.
    """
    from prefalign.core.training.batching import tokenize_pair_frame

    n = pairs.height
    if n == 0:
        return np.zeros(0, dtype=bool), {"sequences": 0, "sequences_truncated": 0, "tokens_removed": 0,
                                         "mean_tokens_removed": 0.0, "max_tokens_removed": 0,
                                         "pairs_identical_after_truncation": 0}
    cut = tokenize_pair_frame(tokenizer, pairs, max_length, max_prompt_length)
    full = tokenize_pair_frame(tokenizer, pairs, 1 << 40, max_prompt_length)
    removed = np.array([len(f) - len(c) for f, c in zip(full.chosen + full.rejected, cut.chosen + cut.rejected)])
    identical = np.asarray(cut.identical, dtype=bool)
    truncated = removed > 0
    return identical, {
        "sequences": int(removed.size), "sequences_truncated": int(truncated.sum()),
        "tokens_removed": int(removed.sum()),
        "mean_tokens_removed": float(removed[truncated].mean()) if truncated.any() else 0.0,
        "max_tokens_removed": int(removed.max()), "pairs_identical_after_truncation": int(identical.sum()),
    }
