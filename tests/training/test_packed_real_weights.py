"""Equality on real weights (issue 19 item 7): on SmolLM2-135M-Instruct's weights (fp32, all 30 layers),
the packed and prompt-shared layouts give the padded layout's rewards and response log-probs within
1e-4, and the same gradients after one backward.

The weights come from ``scripts/fetch_pretrained_smollm2.py`` (default target
``data/06_models/pretrained/SmolLM2-135M-Instruct``, or ``$PREFALIGN_SMOLLM2_DIR``). Without them the
test runs the same checks on a tiny Llama with a ChatML template (the code path, not the real scale).
A few short chat pairs keep it to seconds; run with ``-s`` to see the measured differences.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prefalign.core.feedback.parsers import flatten_messages
from prefalign.core.models import build_backbone, build_causal_lm, build_tokenizer
from prefalign.core.policy.logprobs import batch_pair_logprobs
from prefalign.core.reward.model import RewardModel
from prefalign.core.training.batching import make_pair_batches, tokenize_pairs
from prefalign.core.training.packing import make_packed_pair_batches
from tests.reward.offline_tokenizers import chatml_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = Path(os.environ.get("PREFALIGN_SMOLLM2_DIR") or ROOT / "data/06_models/pretrained/SmolLM2-135M-Instruct")
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "max_position_embeddings": 512}
SYSTEM = {"role": "system", "content": "You are a concise assistant."}
PAIRS = [  # (turns, chosen, rejected): system and multi-turn prompts, responses of different lengths
    ([SYSTEM, {"role": "user", "content": "What is the capital of France?"}], "Paris.", "The capital of France is Lyon, I think."),
    ([{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "Seven."},
      {"role": "user", "content": "Another one?"}], "Eleven is prime.", "Nine."),
    ([{"role": "user", "content": "Say hello in Spanish."}], "Hola.", "Bonjour, which is French."),
]


def _model_source():
    """(name, tokenizer, model kwargs): the real weights when fetched, else a tiny ChatML Llama."""
    if (SMOLLM2 / "config.json").exists():
        return "SmolLM2-135M-Instruct", build_tokenizer({"name_or_path": str(SMOLLM2)}), {"name_or_path": str(SMOLLM2)}
    return "tiny ChatML Llama", chatml_tokenizer(), {**TINY, "seed": 0}


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    name, tok, model_params = _model_source()
    assert tok.chat_template  # the chat layout: system and earlier turns rendered as turns
    tokenized = tokenize_pairs(tok, [flatten_messages(t) for t, _, _ in PAIRS], [c for _, c, _ in PAIRS],
                               [r for _, _, r in PAIRS], max_length=128, max_prompt_length=96,
                               prompt_messages=[t for t, _, _ in PAIRS])
    batches = {
        "padded": make_pair_batches(tokenized, len(PAIRS), tok.pad_token_id, seed=None)[0],
        "packed": make_packed_pair_batches(tokenized, len(PAIRS), tok.pad_token_id, seed=None)[0],
        "prompt-shared": make_packed_pair_batches(tokenized, len(PAIRS), tok.pad_token_id, seed=None, share_prompt=True)[0],
    }
    assert batches["prompt-shared"].sequences.shares_prompts
    return name, tok, model_params, batches


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def _compare(name: str, what: str, values: dict, grads: dict) -> None:
    for layout in ("packed", "prompt-shared"):
        value_diff = (values[layout] - values["padded"]).abs().max().item()
        grad_abs = max((a - b).abs().max().item() for a, b in zip(grads[layout], grads["padded"]))
        grad_rel = max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(grads[layout], grads["padded"]))
        scale = max(b.abs().max().item() for b in grads["padded"])
        print(f"{name} {what} {layout} vs padded: max |value diff| {value_diff:.3g}; gradients max |diff| "
              f"{grad_abs:.3g} (largest |grad| {scale:.3g}), max per-tensor relative {grad_rel:.3g}")
        assert value_diff <= 1e-4, (what, layout, value_diff)
        assert len(grads[layout]) == len(grads["padded"])
        # the same gradient: every tensor within 1e-3 of its norm, and no entry off by 1e-4 of the largest
        assert grad_rel <= 1e-3 and grad_abs <= 1e-4 * scale, (what, layout, grad_rel, grad_abs, scale)


def test_reward_model_layouts_agree_on_real_weights(source):
    name, tok, model_params, batches = source
    model = RewardModel(build_backbone(model_params, tok), {"head": "scalar"}).eval()  # eval: no dropout
    torch.manual_seed(1)
    torch.nn.init.normal_(model.head.score.weight, std=0.05)
    values, grads = {}, {}
    for layout, batch in batches.items():
        model.zero_grad(set_to_none=True)
        rewards = model(batch.sequences).rewards
        b = len(batch)
        F.softplus(-(rewards[:b] - rewards[b:])).mean().backward()  # the BT loss
        values[layout], grads[layout] = rewards.detach(), _grads(model)
    _compare(name, "rewards", values, grads)


def test_policy_layouts_agree_on_real_weights(source):
    name, tok, model_params, batches = source
    model = build_causal_lm(model_params, tok).eval()
    values, grads = {}, {}
    for layout, batch in batches.items():
        model.zero_grad(set_to_none=True)
        chosen, rejected = batch_pair_logprobs(model, batch.sequences)
        F.softplus(-0.1 * (chosen - rejected)).mean().backward()  # DPO's loss at a zero reference
        values[layout], grads[layout] = torch.cat([chosen, rejected]).detach(), _grads(model)
    _compare(name, "response log-probs", values, grads)
