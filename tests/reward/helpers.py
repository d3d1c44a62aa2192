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
