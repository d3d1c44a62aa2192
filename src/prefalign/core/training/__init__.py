"""Shared training infrastructure: batching and the one accelerate-based loop."""

from prefalign.core.training.batching import (
    PairBatch,
    SequenceBatch,
    TokenizedPairs,
    TruncationStats,
    collate_sequences,
    make_pair_batches,
    padding_fraction,
    prompt_token_ids,
    tokenize_groups,
    tokenize_pairs,
    tokenize_sequence,
    tokenize_sequences,
)
from prefalign.core.training.loop import TrainConfig, TrainResult, evaluate, latest_checkpoint, train

__all__ = [
    "PairBatch", "SequenceBatch", "TokenizedPairs", "TruncationStats", "collate_sequences",
    "make_pair_batches", "padding_fraction", "prompt_token_ids", "tokenize_groups", "tokenize_pairs", "tokenize_sequence", "tokenize_sequences",
    "TrainConfig", "TrainResult", "evaluate", "latest_checkpoint", "train",
]
