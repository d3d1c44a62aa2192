"""Tiny data and models for the policy tests (seconds on one CPU core)."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from prefalign.core.models import build_causal_lm, build_tokenizer
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.schema import PAIRS_SCHEMA, pair_id_of, prompt_id_of
from tests.conftest import PROJECT_ROOT

# Local workarounds for the shared tests/conftest.py (reported to the lead; drop once fixed there):
# the shared kedro_project fixture copies data/01_raw (created by the feedback branch) and
# bootstrap_project needs a src/ folder, which the fixture does not copy.
(PROJECT_ROOT / "data" / "01_raw").mkdir(parents=True, exist_ok=True)


@pytest.fixture
def kedro_project(kedro_project: Path) -> Path:
    """The shared tmp project plus an empty src/ (the package is imported from the repository)."""
    (kedro_project / "src").mkdir(exist_ok=True)
    return kedro_project

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


def tiny_reward_bundle(pairs: pl.DataFrame, head: str, seed: int = 0) -> ModelBundle:
    """An untrained reward-pipeline model (GPM or scalar head) with its OWN tokenizer (another
    vocabulary than the policy's: text passes between them as strings)."""
    from prefalign.core.models import build_backbone
    from prefalign.core.reward.model import HeadConfig, RewardModel

    texts = pairs["chosen"].to_list() + pairs["rejected"].to_list()
    tokenizer = build_tokenizer({"vocab_size": 280}, texts)
    head_cfg = {"head": head, "gpm_k": 2, "tau": 0.1, "max_length": 64, "max_prompt_length": 32} if head == "gpm" else {"head": head, "max_length": 64, "max_prompt_length": 32}
    model = RewardModel(build_backbone({**TINY_MODEL, "seed": seed}, tokenizer), HeadConfig.from_dict(head_cfg))
    return ModelBundle(model.eval(), tokenizer, {"head": head})


@pytest.fixture(scope="session")
def tiny_pairs() -> pl.DataFrame:
    return make_pairs()


@pytest.fixture
def tiny_policy(tiny_pairs: pl.DataFrame) -> ModelBundle:
    texts = tiny_pairs["prompt"].to_list() + tiny_pairs["chosen"].to_list() + tiny_pairs["rejected"].to_list()
    tokenizer = build_tokenizer({"vocab_size": 300}, texts)
    return ModelBundle(build_causal_lm(TINY_MODEL, tokenizer), tokenizer)
