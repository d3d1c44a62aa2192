"""Score tables: one number per pair, the logit of P(chosen > rejected), from any judge.

A `PairScorer` maps (prompts, first, second) to logits of P(first > second). Reward models,
GPM, and policies-as-implicit-rewards are wrapped into scorers by the branch that owns them
(see `reward_model_scorer`, `implicit_reward_scorer`); the synthetic ground truth is one too.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from prefalign.core.synthetic.generator import hidden_reward, majority_winner, response_attributes

PairScorer = Callable[[Sequence[str], Sequence[str], Sequence[str]], np.ndarray]


def _checked(logits: np.ndarray, expected: int, what: str) -> np.ndarray:
    array = np.asarray(logits, dtype=np.float64).reshape(-1)
    if array.size != expected:
        raise ValueError(f"scorer returned {array.size} logits for {expected} {what}; it must return one per pair")
    return array


def score_pairs(pairs: pl.DataFrame, scorer: PairScorer) -> pl.DataFrame:
    """The rows plus `logit` = logit P(chosen > rejected) (pairs table or RewardBench rows)."""
    logits = scorer(pairs["prompt"].to_list(), pairs["chosen"].to_list(), pairs["rejected"].to_list())
    return pairs.with_columns(pl.Series("logit", _checked(logits, pairs.height, "pairs")))


def score_triples(triples: pl.DataFrame, scorer: PairScorer) -> pl.DataFrame:
    """logit_ab, logit_bc, logit_ca for each A > B > C > A triple (three pairs per triple, one call)."""
    prompts = triples["prompt"].to_list() * 3
    first = triples["response_a"].to_list() + triples["response_b"].to_list() + triples["response_c"].to_list()
    second = triples["response_b"].to_list() + triples["response_c"].to_list() + triples["response_a"].to_list()
    logits = _checked(scorer(prompts, first, second), 3 * triples.height, "triple pairs").reshape(3, -1)
    return triples.with_columns(pl.Series("logit_ab", logits[0]), pl.Series("logit_bc", logits[1]),
                                pl.Series("logit_ca", logits[2]))


def scalar_truth_scorer(weights: Mapping[str, float], temperature: float = 1.0) -> PairScorer:
    """synthetic_scalar's truth as a judge: (r*(first) - r*(second)) / temperature.

    r* reads any text (core/synthetic/generator.py), so this also judges a policy's generations;
    text it does not recognise scores 0.
    """
    def scorer(prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        return np.array([(hidden_reward(p, x, weights) - hidden_reward(p, y, weights)) / temperature
                         for p, x, y in zip(prompts, first, second)], dtype=np.float64)

    return scorer


def cyclic_truth_scorer(strength: float) -> PairScorer:
    """synthetic_cyclic's truth: strength * (majority of helpfulness, correctness, concision)."""
    def levels(prompt: str, text: str) -> tuple[int, int, int]:
        a = response_attributes(prompt, text)
        return a["helpfulness"], a["correctness"], -a["verbosity"]

    def scorer(prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        return np.array([strength * majority_winner(levels(p, x), levels(p, y))
                         for p, x, y in zip(prompts, first, second)], dtype=np.float64)

    return scorer


def score_by_source(pairs: pl.DataFrame, scorers: Mapping[str, PairScorer]) -> pl.DataFrame:
    """Score each source with its own scorer; sources without one are dropped (and so not evaluated)."""
    parts = [score_pairs(pairs.filter(pl.col("source") == source), scorer) for source, scorer in scorers.items()]
    parts = [p for p in parts if p.height]
    if not parts:
        return pairs.clear().with_columns(pl.lit(None, dtype=pl.Float64).alias("logit"))
    return pl.concat(parts)


# ---------------------------------------------------------------------------------------------
# Policies as implicit rewards (docs/methods.md s5): beta * (log pi - log pi_ref), summed over response tokens
# ---------------------------------------------------------------------------------------------
def texts_to_score(*tables: pl.DataFrame) -> pl.DataFrame:
    """Every distinct (prompt, response) of pairs/RewardBench rows (chosen, rejected) and triples."""
    parts = []
    for table in tables:
        for column in ("chosen", "rejected", "response_a", "response_b", "response_c"):
            if column in table.columns and table.height:
                parts.append(table.select("prompt", pl.col(column).alias("response")))
    if not parts:
        return pl.DataFrame(schema={"prompt": pl.String, "response": pl.String})
    return pl.concat(parts).unique(maintain_order=True)


def sequence_logprob_table(model, tokenizer, texts: pl.DataFrame, max_length: int = 256,
                           max_prompt_length: int = 128, batch_size: int = 16) -> pl.DataFrame:
    """texts + `logp`: log pi(response | prompt) summed over response tokens (eos included).

    Tokenisation/truncation are the training core's (core/training/batching.py) and the pass is
    the policy core's (core/policy/gpo.rows_logprobs), so scores match what was trained.
    """
    from prefalign.core.policy.batches import make_row_batches
    from prefalign.core.policy.gpo import rows_logprobs
    from prefalign.core.training.batching import tokenize_sequences

    # one batched tokenizer call (prompts encoded once each), not one call per string
    sequences = tokenize_sequences(tokenizer, texts["prompt"].to_list(), texts["response"].to_list(),
                                   max_length, max_prompt_length)
    if not sequences:
        return texts.with_columns(pl.lit(None, dtype=pl.Float64).alias("logp"))
    batches = make_row_batches(sequences, batch_size, tokenizer.pad_token_id, seed=None)
    logps = rows_logprobs(model, batches, len(sequences)).double().cpu().numpy()
    return texts.with_columns(pl.Series("logp", logps))


def implicit_reward_scorer(policy_logps: pl.DataFrame, reference_logps: pl.DataFrame, beta: float) -> PairScorer:
    """logit = beta * [(log pi - log pi_ref)(first) - (log pi - log pi_ref)(second)] from logp tables."""
    joined = policy_logps.join(reference_logps.rename({"logp": "logp_ref"}), on=["prompt", "response"], how="inner")
    ratio = {(p, r): lp - lr for p, r, lp, lr in joined.select("prompt", "response", "logp", "logp_ref").iter_rows()}

    def scorer(prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        try:
            return np.array([beta * (ratio[(p, x)] - ratio[(p, y)]) for p, x, y in zip(prompts, first, second)])
        except KeyError as missing:
            raise ValueError(f"no log-prob for (prompt, response) {str(missing)[:120]}...; score it with "
                             "sequence_logprob_table under both the policy and the reference first") from None

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
