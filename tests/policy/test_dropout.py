"""Dropout off while training against a reference, and implicit accuracy that ignores float noise (issue 20, item 2).

At policy = reference (learning rate 1e-12, far below fp32 resolution of the weights) h = 0 for
every pair, so the DPO loss is ln 2 at every step and IPO's is (1 / (2 beta))^2. Before the fix the
training forward ran with the model's dropout while the reference table came from an eval-mode
pass: LoRA dropout 0.1 put the DPO loss 3.4e-3 away from ln 2, attention dropout 0.1 1.3e-3.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from prefalign.core.models import build_causal_lm, build_tokenizer
from prefalign.core.models.backbone import ModelConfig, small_architecture
from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.models.dropout import disable_dropout
from prefalign.core.objectives import registry
from prefalign.core.policy.losses import TIE_RTOL, implicit_accuracy
from prefalign.core.policy.train_policy import PolicyDataConfig, reference_logprobs, train_preference
from prefalign.core.training.loop import TrainConfig
from tests.policy.conftest import TINY_MODEL

# train batches of 8 against a reference pass in batches of 32: two batchings, so h carries float noise
DATA = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=8, eval_batch_size=32)
BETA = 0.1
LOSS_AT_ZERO = {"policy_dpo": math.log(2), "policy_mmpo": math.log(2), "policy_ipo": (1 / (2 * BETA)) ** 2}
# |loss - loss(h=0)| allowed for the float noise of two batchings (|h| ~ 4e-6 here): DPO's slope in h
# is beta/2 = 0.05, IPO's 1/beta = 10, so IPO's loss moves 200x more for the same noise
TOLERANCE = {"policy_dpo": 1e-6, "policy_mmpo": 1e-6, "policy_ipo": 1e-4}


def _tokenizer(pairs):
    return build_tokenizer({"vocab_size": 300}, pairs["prompt"].to_list() + pairs["chosen"].to_list() + pairs["rejected"].to_list())


def trained_lora_policy(tokenizer, dropout: float):
    """A LoRA policy whose adapter is not zero (B random, as after LoRA SFT), so LoRA dropout matters."""
    model = build_causal_lm({**TINY_MODEL, "lora": {"r": 4, "alpha": 8, "dropout": dropout, "target_modules": "all-linear"}}, tokenizer)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    return model


def attention_dropout_policy(tokenizer, dropout: float):
    """A checkpoint-style model whose config carries attention_dropout (Llama attention reads it at forward time)."""
    config = small_architecture(ModelConfig.from_dict(TINY_MODEL), tokenizer)
    config.attention_dropout = dropout
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


POLICIES = {"lora_dropout": trained_lora_policy, "attention_dropout": attention_dropout_policy}


def run_at_reference(pairs, tmp_path, namespace: str, make_policy, **training):
    tokenizer = _tokenizer(pairs)
    bundle = ModelBundle(make_policy(tokenizer, 0.1), tokenizer)
    config = TrainConfig(max_steps=3, learning_rate=1e-12, eval_every=0, checkpoint_every=0, progress_bar=False, **training)
    table = reference_logprobs(bundle, pairs, DATA, config)  # eval mode: no dropout
    spec = registry.get(namespace)
    return train_preference(bundle, pairs, table, spec, spec.parse({"beta": BETA}), DATA, config, tmp_path)


@pytest.mark.parametrize("kind", sorted(POLICIES))
@pytest.mark.parametrize("namespace", sorted(LOSS_AT_ZERO))
def test_policy_equal_to_reference_has_zero_margin_at_every_step(tiny_pairs, tmp_path, namespace, kind):
    run = run_at_reference(tiny_pairs, tmp_path, namespace, POLICIES[kind])
    curve = run.training_curve
    assert curve["train_loss"].to_list() == pytest.approx([LOSS_AT_ZERO[namespace]] * 3, abs=TOLERANCE[namespace], rel=0)
    assert max(abs(m) for m in curve["train_implicit_margin"]) < 1e-6
    # no pair is a win or a loss at policy = reference: the accuracy is exactly the tie value, not float noise
    assert curve["train_implicit_accuracy"].to_list() == [0.5, 0.5, 0.5]
    assert run.metrics["reference"]["train"]["implicit_accuracy"] == 0.5
    assert run.metrics["policy"]["train"]["implicit_accuracy"] == 0.5


def test_dropout_kept_on_request_moves_the_loss(tiny_pairs, tmp_path):
    """``disable_dropout: false`` keeps the model's dropout: then the loss is NOT ln 2 (what the option prevents)."""
    run = run_at_reference(tiny_pairs, tmp_path, "policy_dpo", attention_dropout_policy, disable_dropout=False)
    assert max(abs(x - math.log(2)) for x in run.training_curve["train_loss"]) > 1e-4


def test_disable_dropout_zeroes_modules_attributes_and_config(tiny_pairs):
    tokenizer = _tokenizer(tiny_pairs)
    lora = trained_lora_policy(tokenizer, 0.1)
    lora.base_model.model.config.attention_dropout = 0.1
    changed = disable_dropout(lora)
    assert any("lora_dropout" in c for c in changed) and "config.attention_dropout=0.1" in changed
    assert all(m.p == 0 for m in lora.modules() if isinstance(m, torch.nn.Dropout))

    llama = attention_dropout_policy(tokenizer, 0.1)
    changed = disable_dropout(llama)
    assert "model.layers.0.self_attn.attention_dropout=0.1" in changed
    assert llama.model.layers[0].self_attn.attention_dropout == 0.0 and llama.config.attention_dropout == 0.0

    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=50, n_positions=16, n_embd=8, n_layer=1, n_head=2))
    disable_dropout(gpt2)  # nn.Dropout modules (attn/resid/embd) and the config's *_pdrop rates
    assert all(m.p == 0 for m in gpt2.modules() if isinstance(m, torch.nn.Dropout))
    assert gpt2.config.attn_pdrop == gpt2.config.resid_pdrop == gpt2.config.embd_pdrop == 0.0
    ids = torch.tensor([[1, 2, 3, 4]])
    gpt2.train()
    assert torch.equal(gpt2(ids).logits, gpt2.eval()(ids).logits)  # train-mode forward = eval-mode forward
    assert disable_dropout(gpt2) == []  # nothing left to change


def test_implicit_accuracy_counts_ties_half_and_float_noise_as_a_tie():
    magnitude = torch.full((5,), 300.0)  # four summed log-probs of ~75 nats each
    tol = TIE_RTOL * 300.0
    h = torch.tensor([0.0, 1e-7, -tol / 2, 0.5, -0.5])
    # h = 0 and noise within the tolerance are ties (1/2 each); 0.5 is a win, -0.5 a loss
    assert float(implicit_accuracy(h, magnitude)) == pytest.approx((0.5 + 0.5 + 0.5 + 1 + 0) / 5)
    assert float(implicit_accuracy(torch.zeros(4), torch.full((4,), 300.0))) == 0.5  # the reference itself: chance
    assert float(implicit_accuracy(torch.tensor([2 * tol]), torch.tensor([300.0]))) == 1.0
    with pytest.raises(ValueError, match="1-D tensors of one shape"):
        implicit_accuracy(torch.zeros(3), torch.zeros(3, 1))
