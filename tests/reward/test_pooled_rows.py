"""The last layer at the pooled rows only (core/models/pooled_rows.py) equals the plain computation,
in rewards and in every parameter's gradient, and really skips the work."""

from __future__ import annotations

import pytest
import torch

from prefalign.core.models import build_backbone
from prefalign.core.models.backbone import transformer_layers
from prefalign.core.models.pooled_rows import last_layer_at_rows, supports_last_layer_at_rows
from prefalign.core.reward.model import RewardModel
from prefalign.core.training.batching import make_pair_batches, tokenize_pairs
from prefalign.core.training.packing import make_packed_pair_batches
from tests.reward.helpers import toy_pairs, toy_tokenizer

MODEL = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
         "max_position_embeddings": 256, "attn_implementation": "sdpa"}
LAYOUTS = {"padded": None, "packed": dict(share_prompt=False), "shared": dict(share_prompt=True)}


@pytest.fixture(scope="module")
def tokenizer():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def tokenized(tokenizer):
    x, w, l = toy_pairs(12, seed=5)
    return tokenize_pairs(tokenizer, x, w, l, max_length=24, max_prompt_length=8)


def batch_of(layout, tokenized, tokenizer):
    if LAYOUTS[layout] is None:
        return make_pair_batches(tokenized, 6, tokenizer.pad_token_id, seed=0)[0]
    return make_packed_pair_batches(tokenized, 6, tokenizer.pad_token_id, seed=0, **LAYOUTS[layout])[0]


def outputs_and_grads(model, batch, at_rows: bool):
    model.zero_grad(set_to_none=True)
    model.last_layer_at_pooled_rows = at_rows
    out = model(batch.sequences)
    z = out.pair_logits(len(batch))
    (torch.nn.functional.logsigmoid(z).sum() + z.square().sum()).backward()  # any loss of the pooled outputs
    values = [out.rewards] if out.rewards is not None else [out.embeddings, out.gate]
    return [v.detach().clone() for v in values], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("head", ["scalar", "gpm"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_rewards_and_gradients_equal_the_plain_path(tokenizer, tokenized, head, layout):
    model = RewardModel(build_backbone({**MODEL, "seed": 1}, tokenizer), {"head": head}).train()
    batch = batch_of(layout, tokenized, tokenizer)
    plain_out, plain_grads = outputs_and_grads(model, batch, at_rows=False)
    rows_out, rows_grads = outputs_and_grads(model, batch, at_rows=True)
    for a, b in zip(plain_out, rows_out):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert rows_grads.keys() == plain_grads.keys()
    last = transformer_layers(model.backbone)[-1]
    assert last.mlp.down_proj.weight.grad.abs().sum() > 0  # the skipped layer's weights still get their gradient
    for name in plain_grads:
        torch.testing.assert_close(rows_grads[name], plain_grads[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("head", ["scalar", "gpm"])
def test_the_mlp_runs_only_at_the_pooled_rows(tokenizer, tokenized, head):
    model = RewardModel(build_backbone({**MODEL, "seed": 1}, tokenizer), {"head": head}).train()
    batch = batch_of("padded", tokenized, tokenizer)
    seen = []
    layers = transformer_layers(model.backbone)
    hooks = [layer.mlp.up_proj.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[:-1].numel())) for layer in layers]
    model.last_layer_at_pooled_rows = True
    model(batch.sequences)
    for h in hooks:
        h.remove()
    s = batch.sequences
    pooled = {(r, int(c)) for r, c in enumerate(s.last_index)}
    if head == "gpm":
        pooled |= {(r, int(c)) for r, c in enumerate(s.last_prompt_index)}
    assert seen == [s.input_ids.numel(), len(pooled)]  # lower layer: every position; last layer: the distinct pooled ones


def test_left_alone_under_gradient_checkpointing_and_restored_after(tokenizer):
    backbone = build_backbone({**MODEL, "gradient_checkpointing": True}, tokenizer)
    assert not supports_last_layer_at_rows(backbone)  # the layer re-runs in backward, outside the context
    with last_layer_at_rows(backbone, torch.tensor([[0, 1]]), 4) as active:
        assert active is False
    plain = build_backbone(MODEL, tokenizer)
    mlp = transformer_layers(plain)[-1].mlp
    with last_layer_at_rows(plain, torch.tensor([[0, 1]]), 4) as active:
        assert active is True and "forward" in mlp.__dict__
    assert "forward" not in mlp.__dict__  # the class's forward again
