"""The pairs table: the one contract between ingestion and everything downstream.

Every feedback source ends in this polars schema (architecture.md, "The one contract").
"""

from __future__ import annotations

import hashlib

import polars as pl

PAIRS_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.String,  # stable hash of (prompt, chosen, rejected)
    "prompt_id": pl.String,  # stable hash of the prompt; the unit of splitting
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "margin": pl.Float64,  # how much better, in the source's unit; null for binary
    "p_chosen": pl.Float64,  # soft target P(chosen > rejected) in [0.5, 1]
    "source": pl.String,
    "feedback": pl.String,  # human | ai | synthetic
    "signal": pl.String,  # score_gap | judge_prob | votes | binary | ground_truth
    "true_p": pl.Float64,  # ground-truth probability where known (synthetic), else null
    "split": pl.String,  # train | val | test (by a hash of prompt_id) | heldout (held-out sources' prompts)
}
PAIR_COLUMNS: list[str] = list(PAIRS_SCHEMA)

FEEDBACK_KINDS = ("human", "ai", "synthetic")
SIGNALS = ("score_gap", "judge_prob", "votes", "binary", "ground_truth")
SPLITS = ("train", "val", "test")  # drawn by ratio (core/feedback/pairs.py assign_split)
HELDOUT = "heldout"  # every prompt of a held-out source (feedback.split.heldout_sources); never trained on
ALL_SPLITS = (*SPLITS, HELDOUT)


def stable_hash(*parts: str) -> str:
    """A hash that is the same on every machine and run (unlike Python's hash()).

    Parts are joined with a separator that cannot appear in UTF-8 text, so
    ("ab", "c") and ("a", "bc") hash differently.
    """
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(part.encode("utf-8", errors="surrogatepass"))
        h.update(b"\xff")
    return h.hexdigest()


def prompt_id_of(prompt: str) -> str:
    return stable_hash("prompt", prompt)


def pair_id_of(prompt: str, chosen: str, rejected: str) -> str:
    return stable_hash("pair", prompt, chosen, rejected)


def empty_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema=PAIRS_SCHEMA)


def conform_to_pairs_schema(frame: pl.DataFrame) -> pl.DataFrame:
    """Select and cast the contract's columns, in order; a missing column is an error."""
    missing = [c for c in PAIR_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"pairs table is missing columns {missing}; every source must produce {PAIR_COLUMNS}"
        )
    return frame.select([pl.col(c).cast(t) for c, t in PAIRS_SCHEMA.items()])
