"""Scientific checks of the METHODS on the synthetic lab (issue 6): tiny, seeded, fast.

The heads (ScalarHead, GPMHead, RewardOutput.pair_logits), the loss factories (the registry's
entries reward_bt / reward_mmpo / reward_gpm) and the training loop (core/training/loop.train) are
the product's own. Only the backbone is replaced by a fast, legitimate one: a
learned bag of sentence embeddings (each distinct sentence of the training texts gets a vector;
a text's hidden state is their sum). Its "sequence" has two positions, the prompt (read by the
GPM gate, as the last prompt token) and the response (read by the heads, as the last token).
Both models of a comparison see the same pairs, the same backbone size and the same steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
import torch

from prefalign.core.evaluation import metrics as m, statistics as st
from prefalign.core.reward.heads import GPMHead, RewardOutput, ScalarHead, gather_rows
from prefalign.core.objectives import registry
from prefalign.core.training.loop import TrainConfig
from prefalign.core.training.loop import train as train_loop
from prefalign.core.synthetic import SyntheticConfig, cyclic_pairs, generate_cyclic, generate_scalar

HIDDEN = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: one thread is several times faster than two on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class SentenceBag(torch.nn.Module):
    """hidden_states [N, 2, H]: position 0 the prompt's sentence bag, position 1 the response's."""

    def __init__(self, texts: list[str], hidden: int = HIDDEN):
        super().__init__()
        sentences = sorted({s for t in texts for s in _SENTENCE.split(t)})
        self.index = {s: i + 1 for i, s in enumerate(sentences)}  # 0 = unknown sentence
        self.embed = torch.nn.Parameter(torch.randn(len(sentences) + 1, hidden) * 0.1)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Sentence counts [N, vocab], computed once per text list (not per step)."""
        counts = torch.zeros(len(texts), self.embed.shape[0])
        for row, text in enumerate(texts):
            for sentence in _SENTENCE.split(text):
                counts[row, self.index.get(sentence, 0)] += 1
        return counts

    def forward(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        return torch.stack([prompts @ self.embed, responses @ self.embed], dim=1)  # a sum of sentence vectors


class TinyRewardModel(torch.nn.Module):
    def __init__(self, texts: list[str], head: str, gpm_k: int = 2, tau: float = 0.1):
        super().__init__()
        self.backbone = SentenceBag(texts)
        self.head_kind, self.tau = head, tau
        self.head = ScalarHead(HIDDEN) if head == "scalar" else GPMHead(HIDDEN, gpm_k)

    def encode_pairs(self, prompts: list[str], first: list[str], second: list[str]):
        return self.backbone.encode(list(prompts) * 2), self.backbone.encode(list(first) + list(second))

    def forward(self, encoded) -> RewardOutput:
        """The reward branch's RewardOutput for 2B rows (rows 0..B-1 first, B..2B-1 second), as RewardModel."""
        hidden = self.backbone(*encoded)
        n = hidden.shape[0]
        last, last_prompt = torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
        if self.head_kind == "scalar":
            return RewardOutput(rewards=self.head(gather_rows(hidden, last)))
        v, gate = self.head(gather_rows(hidden, last), gather_rows(hidden, last_prompt))
        return RewardOutput(embeddings=v, gate=gate, tau=self.tau)

    def pair_logits(self, encoded) -> torch.Tensor:
        return self(encoded).pair_logits(encoded[0].shape[0] // 2)


@dataclass
class FullBatch:
    """All pairs as ONE batch in the loop's batch protocol (the sets are small): `sequences` is what
    the model reads, p_chosen and margin are per pair [B], as in core/training/batching.PairBatch."""

    sequences: tuple[torch.Tensor, torch.Tensor]
    p_chosen: torch.Tensor
    margin: torch.Tensor

    num_tokens = 0

    def __len__(self) -> int:
        return int(self.p_chosen.shape[0])

    def to(self, device) -> "FullBatch":
        return self

    def shard(self, rank: int, world_size: int) -> "FullBatch":
        assert world_size == 1
        return self


def train(model: TinyRewardModel, pairs: pl.DataFrame, namespace: str, steps: int, out, lr: float = 0.05) -> TinyRewardModel:
    """The product's loop and the registry entry's loss factory; AdamW without decay or clipping = Adam."""
    spec = registry.get(namespace)
    loss_fn = spec.loss(spec.parse({}))
    encoded = model.encode_pairs(*(pairs[c].to_list() for c in ("prompt", "chosen", "rejected")))
    p = torch.tensor(pairs["p_chosen"].to_numpy(), dtype=torch.float32)
    batch = FullBatch(encoded, p, torch.full_like(p, float("nan")))
    config = TrainConfig(max_steps=steps, learning_rate=lr, lr_schedule="constant", weight_decay=0.0, max_grad_norm=None,
                         eval_every=0, checkpoint_every=0, progress_bar=False, seed=0, cpu_threads=1)
    return train_loop(model, [batch], [], loss_fn, config, out).model


def logits_of(model: TinyRewardModel, prompts, first, second) -> np.ndarray:
    with torch.no_grad():
        return model.pair_logits(model.encode_pairs(list(prompts), list(first), list(second))).numpy()


def _split(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") != "train")


def test_mmpo_reward_model_is_better_calibrated_than_bt_at_equal_data_and_steps(tmp_path):
    pairs = generate_scalar(SyntheticConfig(n_prompts=160, seed=0))
    train_pairs, held_out = _split(pairs)
    assert held_out.height >= 60
    texts = train_pairs["prompt"].to_list() + train_pairs["chosen"].to_list() + train_pairs["rejected"].to_list()
    results = {}
    for objective in ("bt", "mmpo"):
        torch.manual_seed(0)
        model = train(TinyRewardModel(texts, "scalar"), train_pairs, f"reward_{objective}", 200, tmp_path / objective)
        z = logits_of(model, held_out["prompt"], held_out["chosen"], held_out["rejected"])
        results[objective] = {"ece": st.calibration_report(z, held_out["true_p"])["ece"],
                              "accuracy": m.pair_accuracy(z)}
    n = held_out.height
    noise = 2 * np.sqrt(0.25 / n)  # two standard errors of an accuracy near 0.5 (the widest case)
    print("calibration check (held-out synthetic_scalar pairs):", results)
    assert results["mmpo"]["ece"] < results["bt"]["ece"], results
    assert results["mmpo"]["accuracy"] >= results["bt"]["accuracy"] - noise, results


def test_gpm_learns_cycles_that_a_scalar_bt_model_cannot(tmp_path):
    config = SyntheticConfig(n_triples=120, seed=0)
    triples = generate_cyclic(config)
    train_triples, held_out = _split(triples)
    assert held_out.height >= 15
    train_pairs = cyclic_pairs(train_triples, config)
    texts = (train_pairs["prompt"].to_list() + train_pairs["chosen"].to_list() + train_pairs["rejected"].to_list())
    consistency = {}
    for name, head in (("bt", "scalar"), ("gpm", "gpm")):
        torch.manual_seed(0)
        model = train(TinyRewardModel(texts, head), train_pairs, f"reward_{name}", 200, tmp_path / name)
        args = (held_out["prompt"].to_list(),)
        ab = logits_of(model, *args, held_out["response_a"], held_out["response_b"])
        bc = logits_of(model, *args, held_out["response_b"], held_out["response_c"])
        ca = logits_of(model, *args, held_out["response_c"], held_out["response_a"])
        consistency[name] = m.cyclic_consistency(ab, bc, ca)["consistency"]
    print("cyclic check (held-out triples):", consistency)
    assert consistency["gpm"] >= 0.95, consistency
    assert consistency["bt"] <= 0.70, consistency


def test_gpm_score_is_antisymmetric_through_the_tiny_backbone():
    config = SyntheticConfig(n_triples=4)
    triples = generate_cyclic(config)
    texts = triples["prompt"].to_list() + triples["response_a"].to_list() + triples["response_b"].to_list()
    model = TinyRewardModel(texts, "gpm")
    p, a, b = triples["prompt"].to_list(), triples["response_a"].to_list(), triples["response_b"].to_list()
    assert logits_of(model, p, a, b) == pytest.approx(-logits_of(model, p, b, a), abs=1e-6)
    assert logits_of(model, p, a, a) == pytest.approx(np.zeros(len(p)), abs=1e-6)
