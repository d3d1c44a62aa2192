"""Tiny data and models for the policy tests (seconds on one CPU core)."""

from __future__ import annotations

import random

import polars as pl
import pytest

from prefalign.core.models import build_causal_lm, build_tokenizer
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.schema import PAIRS_SCHEMA, pair_id_of, prompt_id_of

TINY_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
SUBJECTS = ["cats", "rivers", "bread", "stars", "trains", "music", "gardens", "rain", "books", "chess", "tea", "boats"]


def make_pairs(n_prompts: int = 24, seed: int = 0) -> pl.DataFrame:
    """Pairs with an easy, consistent preference: the chosen answer is polite and on topic."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        subject = SUBJECTS[i % len(SUBJECTS)]
        prompt = f"Tell me about {subject} ({i})."
        chosen = f"Sure! {subject.capitalize()} are lovely and I am glad to help."
        rejected = f"No. {rng.choice(['whatever', 'go away', 'not now'])} {rng.randint(0, 99)}"
        p = rng.choice([1.0, 0.9, 0.75, 0.6])
        rows.append({
            "pair_id": pair_id_of(prompt, chosen, rejected), "prompt_id": prompt_id_of(prompt),
            "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "margin": None, "p_chosen": p, "source": "synthetic_scalar", "feedback": "synthetic",
            "signal": "ground_truth", "true_p": p, "split": "val" if i % 4 == 3 else "train",
        })
    return pl.DataFrame(rows, schema=PAIRS_SCHEMA)


@pytest.fixture(scope="session")
def tiny_pairs() -> pl.DataFrame:
    return make_pairs()


@pytest.fixture
def tiny_policy(tiny_pairs: pl.DataFrame) -> ModelBundle:
    texts = tiny_pairs["prompt"].to_list() + tiny_pairs["chosen"].to_list() + tiny_pairs["rejected"].to_list()
    tokenizer = build_tokenizer({"vocab_size": 300}, texts)
    return ModelBundle(build_causal_lm(TINY_MODEL, tokenizer), tokenizer)
