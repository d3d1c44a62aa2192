"""Tiny, learnable preference data and a tiny scalar reward model for loop tests."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from prefalign.core.models import build_backbone, build_tokenizer

TINY_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
GOOD = ["great", "helpful", "clear", "correct", "kind"]
BAD = ["awful", "rude", "wrong", "vague", "lazy"]


def toy_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Chosen responses use GOOD words, rejected BAD words: a tiny model can learn it in a few steps."""
    rng = random.Random(seed)
    prompts, chosen, rejected = [], [], []
    for i in range(n):
        prompts.append(f"question {i}: " + " ".join(rng.choice(["why", "how", "what", "sky", "cat"]) for _ in range(rng.randint(1, 6))))
        length = rng.randint(1, 8)
        chosen.append(" ".join(rng.choice(GOOD) for _ in range(length)))
        rejected.append(" ".join(rng.choice(BAD) for _ in range(rng.randint(1, 8))))
    return prompts, chosen, rejected


def toy_tokenizer(texts: list[str] | None = None):
    texts = texts or sum(toy_pairs(64), [])
    return build_tokenizer({"vocab_size": 300}, texts)


class TinyScalarRM(torch.nn.Module):
    """Backbone + linear head on the last real token (the loop tests need some model)."""

    def __init__(self, tokenizer, seed: int = 0):
        super().__init__()
        self.backbone = build_backbone({**TINY_MODEL, "seed": seed}, tokenizer)
        self.head = torch.nn.Linear(TINY_MODEL["hidden_size"], 1)

    def forward(self, seqs):
        hidden = self.backbone(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask).last_hidden_state
        last = hidden[torch.arange(hidden.shape[0]), seqs.last_index]
        return self.head(last).squeeze(-1)


def bt_loss_fn(model, batch):
    rewards = model(batch.sequences)
    b = len(batch)
    z = rewards[:b] - rewards[b:]
    return -F.logsigmoid(z).mean(), {"accuracy": (z > 0).float().mean()}


def toy_pairs_frame(n_train: int = 96, n_val: int = 32, seed: int = 0):
    """A validated_pairs-shaped table (PAIRS_SCHEMA) of the toy pairs; every 8th pair is a tie."""
    import polars as pl

    from prefalign.core.schema import conform_to_pairs_schema, pair_id_of, prompt_id_of

    prompts, chosen, rejected = toy_pairs(n_train + n_val, seed)
    n = n_train + n_val
    p = [0.5 if i % 8 == 7 else 0.6 + 0.4 * ((i * 7) % 10) / 10 for i in range(n)]
    frame = pl.DataFrame(
        {
            "pair_id": [pair_id_of(x, w, l) for x, w, l in zip(prompts, chosen, rejected)],
            "prompt_id": [prompt_id_of(x) for x in prompts],
            "prompt": prompts,
            "chosen": chosen,
            "rejected": rejected,
            "margin": [None if i % 5 == 0 else float(i % 9) for i in range(n)],
            "p_chosen": p,
            "source": ["synthetic_scalar"] * n,
            "feedback": ["synthetic"] * n,
            "signal": ["ground_truth"] * n,
            "true_p": p,
            "split": ["train"] * n_train + ["val"] * n_val,
        }
    )
    return conform_to_pairs_schema(frame)
