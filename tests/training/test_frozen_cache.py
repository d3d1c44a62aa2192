"""Frozen lower layers cached per packed segment (model.cache_frozen_layers): the same rewards, log-probs
and gradients as the uncached forward, computed once, shared by models with the same frozen weights."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from prefalign.core.models import build_backbone, build_causal_lm
from prefalign.core.models.backbone import ModelConfig, prepare_for_training
from prefalign.core.reward.model import RewardModel
from prefalign.core.reward.objectives import make_reward_loss_fn
from prefalign.core.reward.train_reward import RewardParams
from prefalign.core.training import frozen_cache
from prefalign.core.training.batching import tokenize_pairs
from prefalign.core.policy.logprobs import packed_sequence_logprobs
from prefalign.core.training.packing import make_packed_pair_batches
from tests.reward.helpers import toy_pairs, toy_tokenizer

MODEL = {"hidden_size": 32, "num_layers": 4, "num_heads": 4, "intermediate_size": 64, "max_position_embeddings": 256,
         "attn_implementation": "sdpa", "freeze_layers": 3}
LAYOUTS = [dict(share_prompt=False), dict(share_prompt=True), dict(share_prompt=True, row_tokens=64)]


@pytest.fixture(autouse=True)
def fresh_caches():
    frozen_cache.clear_caches()
    yield
    frozen_cache.clear_caches()


@pytest.fixture(scope="module")
def tokenizer():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def tokenized(tokenizer):
    x, w, l = toy_pairs(16, seed=5)
    return tokenize_pairs(tokenizer, x, w, l, max_length=24, max_prompt_length=8)


def reward_pair(tokenizer, head="scalar"):
    """Two reward models with the same weights: one uncached, one reading the frozen-layer cache."""
    plain = RewardModel(build_backbone(MODEL, tokenizer), {"head": head})
    cached = copy.deepcopy(plain)
    cached.backbone = prepare_for_training(cached.backbone, {**MODEL, "cache_frozen_layers": True}, causal_lm=False)
    return plain, cached


@pytest.mark.parametrize("head", ["scalar", "gpm"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cached_rewards_and_gradients_equal_the_full_forward(tokenizer, tokenized, head, layout):
    plain, cached = reward_pair(tokenizer, head)
    loss_fn = make_reward_loss_fn(RewardParams())
    for epoch in range(2):  # epoch 0 fills the cache, epoch 1 reads it
        for batch in make_packed_pair_batches(tokenized, 6, tokenizer.pad_token_id, seed=epoch, **layout):
            grads = []
            for model in (plain, cached):
                model.zero_grad()
                loss, _ = loss_fn(model.train(), batch)
                loss.backward()
                grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
            (loss_a, grad_a), (loss_b, grad_b) = grads
            torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=0)
            assert grad_a.keys() == grad_b.keys() and grad_a  # only the upper layers and the head train
            assert not any(".layers.0." in n or "embed_tokens" in n for n in grad_a)
            for name in grad_a:
                torch.testing.assert_close(grad_b[name], grad_a[name], atol=1e-6, rtol=1e-5)
    stats = frozen_cache.frozen_cache_of(cached.backbone).stats()
    assert stats["segments"] > 0 and stats["hits"] >= stats["misses"] > 0  # the second epoch read every segment


def test_cached_policy_logprobs_equal_the_full_forward(tokenizer, tokenized):
    plain = build_causal_lm(MODEL, tokenizer)
    cached = prepare_for_training(copy.deepcopy(plain), {**MODEL, "cache_frozen_layers": True}, causal_lm=True)
    for batch in make_packed_pair_batches(tokenized, 8, tokenizer.pad_token_id, seed=None, share_prompt=True):
        for _ in range(2):  # the first batch also runs the check against the full forward
            plain.zero_grad()
            cached.zero_grad()
            a = packed_sequence_logprobs(plain, batch.sequences)  # chunked LM head (its own decoder hook)
            b = packed_sequence_logprobs(cached, batch.sequences)
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-6)
            a.sum().backward()
            b.sum().backward()
            grads = {n: p.grad for n, p in cached.named_parameters() if p.grad is not None}
            assert grads, "no gradient reached the upper layers"
            for name, param in plain.named_parameters():
                if name in grads:
                    torch.testing.assert_close(grads[name], param.grad, atol=1e-5, rtol=1e-4)


def test_models_with_the_same_frozen_weights_share_one_cache(tokenizer, tokenized):
    _, first = reward_pair(tokenizer)
    second = copy.deepcopy(first)  # e.g. BT and MMPO built from one pretrained directory
    second.backbone = prepare_for_training(second.backbone, {**MODEL, "cache_frozen_layers": True}, causal_lm=False)
    assert frozen_cache.frozen_cache_of(first.backbone) is frozen_cache.frozen_cache_of(second.backbone)
    other = build_backbone({**MODEL, "seed": 1}, tokenizer)  # other frozen weights: another cache
    other = prepare_for_training(other, {**MODEL, "seed": 1, "cache_frozen_layers": True}, causal_lm=False)
    assert frozen_cache.frozen_cache_of(other) is not frozen_cache.frozen_cache_of(first.backbone)


def test_cache_refuses_layers_that_still_train(tokenizer):
    model = build_backbone(MODEL, tokenizer)
    with pytest.raises(ValueError, match="lowest 3 layers must be frozen"):
        prepare_for_training(model, {**MODEL, "freeze_layers": 3, "cache_frozen_layers": True,
                                     "lora": {"r": 2, "alpha": 4, "target_modules": "all-linear"}}, causal_lm=False)
    with pytest.raises(ValueError, match="needs model.freeze_layers >= 1"):
        ModelConfig.from_dict({**MODEL, "freeze_layers": 0, "cache_frozen_layers": True})


def test_an_architecture_whose_cached_path_differs_is_stopped(tokenizer, tokenized, monkeypatch):
    _, cached = reward_pair(tokenizer)
    real = frozen_cache._lower_hidden
    monkeypatch.setattr(frozen_cache, "_lower_hidden", lambda *a: real(*a) * 1.5)  # e.g. embeddings scaled inside forward
    batch = make_packed_pair_batches(tokenized, 6, tokenizer.pad_token_id, seed=0, share_prompt=True)[0]
    with pytest.raises(RuntimeError, match="differs from the full forward"):
        cached(batch.sequences)


def smollm2_dir() -> Path | None:
    path = Path(os.environ.get("PREFALIGN_SMOLLM2_DIR", "data/06_models/pretrained/SmolLM2-135M-Instruct"))
    return path if (path / "config.json").exists() else None


@pytest.mark.skipif(smollm2_dir() is None, reason="SmolLM2-135M-Instruct not fetched (scripts/fetch_pretrained_smollm2.py)")
def test_cached_rewards_equal_on_smollm2_real_weights():
    from transformers import AutoTokenizer

    path = str(smollm2_dir())
    tok = AutoTokenizer.from_pretrained(path)
    x, w, l = toy_pairs(4, seed=2)
    tokenized = tokenize_pairs(tok, x, w, l, max_length=48, max_prompt_length=16)
    params = {"name_or_path": path, "freeze_layers": 28, "attn_implementation": "sdpa"}
    plain = RewardModel(build_backbone(params, tok), {"head": "scalar"}).eval()
    cached = copy.deepcopy(plain)
    cached.backbone = prepare_for_training(cached.backbone, {**params, "cache_frozen_layers": True}, causal_lm=False)
    batch = make_packed_pair_batches(tokenized, 4, tok.pad_token_id, seed=None, share_prompt=True)[0]
    with torch.no_grad():
        torch.testing.assert_close(cached(batch.sequences).rewards, plain(batch.sequences).rewards, atol=1e-4, rtol=0)


def test_checkpoint_records_frozen_layers_and_scores_through_the_cache(tokenizer, tokenized, tmp_path):
    from prefalign.core.models.checkpoint import ModelBundle, load_bundle, save_bundle
    from prefalign.core.reward.scoring import pair_logits

    plain, cached = reward_pair(tokenizer)
    save_bundle(ModelBundle(cached, tokenizer, {"objective": "bt"}), tmp_path / "bt")
    loaded = load_bundle(tmp_path / "bt")
    assert loaded.metadata["frozen_layers"] == 3
    cache = frozen_cache.frozen_cache_of(loaded.model.backbone)
    assert cache is not None and cache is frozen_cache.frozen_cache_of(cached.backbone)  # same frozen weights, one cache
    prompts, chosen, rejected = ["why is the sky blue"] * 3, ["because light scatters", "no idea", "blue"], ["it is not", "green", "hmm"]
    for _ in range(2):
        torch.testing.assert_close(torch.from_numpy(pair_logits(loaded.model, tokenizer, prompts, chosen, rejected)),
                                   torch.from_numpy(pair_logits(plain, tokenizer, prompts, chosen, rejected)), atol=1e-5, rtol=0)
    assert cache.hits > 0
    # the loaded model's lower layers are trainable again: a training forward never reads the cache
    hits = cache.hits
    batch = make_packed_pair_batches(tokenized, 6, tokenizer.pad_token_id, seed=0, share_prompt=True)[0]
    loaded.model.train()(batch.sequences).rewards.sum().backward()
    assert cache.hits == hits
    assert frozen_cache.frozen_prefix_layers(plain) == 3 and frozen_cache.frozen_prefix_layers(loaded.model) == 0
