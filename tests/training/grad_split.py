"""One optimizer step of every objective on 4 tiny pairs of very different lengths, split any way.

Used in-process by test_grad_accumulation.py and, under ``accelerate launch`` (2 processes, gloo),
by grad_split_worker.py: the same builders on both sides, so the two runs see the same model,
batches and loss.
"""

from __future__ import annotations

import copy
import tempfile

import torch

from prefalign.core.models import build_backbone, build_causal_lm, build_tokenizer
from prefalign.core.policy.batches import make_row_batches
from prefalign.core.policy.objectives import (
    DPOConfig,
    ORPOConfig,
    SimPOConfig,
    dpo_objective,
    make_pairwise_loss_fn,
    orpo_objective,
    sft_loss_fn,
    simpo_objective,
)
from prefalign.core.policy.reference import ReferenceLogprobs
from prefalign.core.reward.model import HeadConfig, RewardModel
from prefalign.core.reward.objectives import make_reward_loss_fn
from prefalign.core.reward.train_reward import RewardParams
from prefalign.core.training.batching import make_pair_batches, tokenize_pairs, tokenize_sequences
from prefalign.core.training.loop import TrainConfig, train

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
PROMPTS = ["Tell me about cats.", "Why is the sky blue?", "Name a river.", "What is tea?"]
# chosen responses of 3 to 25 words: micro-batches of one split hold very different token counts
CHOSEN = ["Cats are small furry animals that purr and sleep a lot during the day and hunt at night.", "Light scatters.",
          "The Nile.", "Tea is a drink made by pouring hot water over the cured leaves of the tea plant, enjoyed around the world."]
REJECTED = ["No.", "Because it is blue and that is the way it has always been for ever and ever.",
            "Go away, I do not know any river names at all.", "A thing."]
P_CHOSEN = [1.0, 0.8, 0.6, 0.9]
OBJECTIVES = ["sft", "dpo", "orpo", "simpo", "reward_bt", "reward_mmpo", "reward_gpm"]


def tokenizer():
    return build_tokenizer({"vocab_size": 300}, PROMPTS + CHOSEN + REJECTED)


def setup(objective: str, n_pairs: int = 4):
    """(model, batches(batch_size) -> list, loss_fn) of ``objective`` on the first ``n_pairs`` pairs."""
    tok = tokenizer()
    pad = tok.pad_token_id
    pairs = tokenize_pairs(tok, PROMPTS[:n_pairs], CHOSEN[:n_pairs], REJECTED[:n_pairs], P_CHOSEN[:n_pairs],
                           max_length=64, max_prompt_length=32)

    def pair_batches(batch_size: int):
        return make_pair_batches(pairs, batch_size, pad, seed=0)

    if objective == "sft":
        seqs = tokenize_sequences(tok, PROMPTS[:n_pairs], CHOSEN[:n_pairs], 64, 32)
        return build_causal_lm(TINY, tok), lambda bs: make_row_batches(seqs, bs, pad, seed=0), sft_loss_fn
    if objective.startswith("reward_"):
        head = "gpm" if objective == "reward_gpm" else "scalar"
        model = RewardModel(build_backbone(TINY, tok), HeadConfig.from_dict({"head": head}))
        params = RewardParams(soft_targets=objective == "reward_mmpo", centering=0.01 if head == "scalar" else 0.0)
        return model, pair_batches, make_reward_loss_fn(params)
    policy = build_causal_lm(TINY, tok)
    if objective == "dpo":
        # any fixed reference table: log pi_ref = -20 - 3 * (pair index), so h is not 0
        ref = torch.arange(n_pairs, dtype=torch.float32)
        loss_fn = make_pairwise_loss_fn(dpo_objective, DPOConfig(beta=0.1), ReferenceLogprobs(-20.0 - 3 * ref, -25.0 - ref))
    elif objective == "orpo":
        loss_fn = make_pairwise_loss_fn(orpo_objective, ORPOConfig(odds_ratio_weight=0.5), None)
    else:
        loss_fn = make_pairwise_loss_fn(simpo_objective, SimPOConfig(), None)
    return policy, pair_batches, loss_fn


def one_step(objective: str, batch_size: int, accum: int, n_pairs: int = 4, val_batch_size: int | None = None) -> dict:
    """The logged loss and grad norm of one step, the gradient the optimizer saw (flattened, fp32),
    and with ``val_batch_size`` the validation loss after it (the same pairs in batches of that size)."""
    model, batches, loss_fn = setup(objective, n_pairs)
    captured = {}
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        captured["grad"] = torch.cat([p.grad.detach().flatten().clone() for g in self.param_groups for p in g["params"]
                                      if p.grad is not None])
        return adamw_step(self, *args, **kwargs)

    config = TrainConfig(max_steps=1, learning_rate=1e-9, gradient_accumulation_steps=accum, max_grad_norm=1e9,
                         eval_every=0, checkpoint_every=0, progress_bar=False, lr_schedule="constant")
    torch.optim.AdamW.step = recording_step
    try:
        with tempfile.TemporaryDirectory() as out:
            val = batches(val_batch_size) if val_batch_size else []
            result = train(copy.deepcopy(model), batches(batch_size), val, loss_fn, config, out)
    finally:
        torch.optim.AdamW.step = adamw_step
    row = result.history[0]
    return {"loss": row["train_loss"], "grad_norm": row["grad_norm"], "grad": captured["grad"], "val_loss": row.get("val_loss"),
            "history": row}
