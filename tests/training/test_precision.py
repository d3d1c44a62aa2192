"""fp32 master weights by default; pure bf16 only on request, with a warning when updates round away (issue 20, item 3)."""

from __future__ import annotations

import logging
import tempfile

import pytest
import torch

from prefalign.core.models import build_causal_lm, build_tokenizer
from prefalign.core.models.precision import half_ulp, warn_if_updates_round_away
from prefalign.core.policy.batches import make_row_batches
from prefalign.core.policy.objectives import sft_loss_fn
from prefalign.core.training.batching import tokenize_sequences
from prefalign.core.training.loop import TrainConfig, train

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
PROMPTS = [f"question {i} about rivers" for i in range(4)]
ANSWERS = [f"a long and careful answer number {i}" for i in range(4)]


def _step(model_params: dict, tok, **training) -> tuple[torch.nn.Module, dict]:
    """One SFT step at learning rate 5e-7 (bf16 autocast); returns the model and the weights before it."""
    model = build_causal_lm({**TINY, **model_params}, tok)
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    batches = make_row_batches(tokenize_sequences(tok, PROMPTS, ANSWERS, 48, 24), 4, tok.pad_token_id)
    config = TrainConfig(max_steps=1, learning_rate=5e-7, mixed_precision="bf16", eval_every=0, checkpoint_every=0,
                         progress_bar=False, **training)
    with tempfile.TemporaryDirectory() as out:
        return train(model, batches, [], sft_loss_fn, config, out).model, before


def _moved(model: torch.nn.Module, before: dict, names) -> float:
    changed = total = 0
    for name, p in model.named_parameters():
        if name in names:
            changed += int((p.detach().float() != before[name]).sum())
            total += p.numel()
    return changed / total


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer({"vocab_size": 300}, PROMPTS + ANSWERS)


def test_half_ulp_by_hand():
    assert half_ulp(0.02, torch.bfloat16) == 2.0 ** -6 * 2.0 ** -7 / 2  # 0.02 in [2^-6, 2^-5): ULP 2^-13
    assert half_ulp(1.0, torch.float32) == 2.0 ** -24
    assert half_ulp(3.0, torch.bfloat16) == 2.0 ** -7


def test_bf16_weights_train_on_fp32_master_copies_by_default(tok, caplog):
    with caplog.at_level(logging.WARNING):
        model, before = _step({"dtype": "bfloat16"}, tok)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    weights = {n for n, p in model.named_parameters() if p.ndim == 2}
    assert _moved(model, before, weights) > 0.99
    assert "round away" not in caplog.text


def test_pure_bf16_on_request_warns_and_barely_moves(tok, caplog):
    with caplog.at_level(logging.WARNING):
        model, before = _step({"dtype": "bfloat16"}, tok, fp32_master_weights=False)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert "learning_rate=5e-07 is below half a ULP" in caplog.text and "fp32_master_weights: true" in caplog.text
    weights = {n for n, p in model.named_parameters() if p.ndim == 2}
    assert _moved(model, before, weights) < 0.05  # the hazard the warning names (measured 1.06% on the gpu setting)


def test_no_warning_when_the_rate_is_representable(tok):
    model = build_causal_lm({**TINY, "dtype": "bfloat16"}, tok)
    assert warn_if_updates_round_away(model, 1e-2) is None
    assert warn_if_updates_round_away(build_causal_lm(TINY, tok), 5e-7) is None  # fp32 weights: nothing to warn


def test_frozen_lora_base_keeps_its_dtype(tok):
    model, _ = _step({"dtype": "bfloat16", "lora": {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": "all-linear"}}, tok)
    dtypes = {p.requires_grad: set() for p in model.parameters()}
    for p in model.parameters():
        dtypes[p.requires_grad].add(p.dtype)
    assert dtypes == {True: {torch.float32}, False: {torch.bfloat16}}


def test_reference_and_pi_t_passes_run_at_the_training_precision(tiny_pairs):
    """The reference table (and GPO's log pi_t) are computed under the training forward's autocast:
    an fp32 reference against a bf16-autocast policy puts h != 0 at policy = reference (measured on
    IPO at lr 1e-12, 2 layers x 64: |loss - loss(h=0)| up to 4.2e-2 against 4.4e-3 with the same precision)."""
    from prefalign.core.models.checkpoint import ModelBundle
    from prefalign.core.policy.gpo import rows_logprobs
    from prefalign.core.policy.train_policy import PolicyDataConfig, reference_logprobs

    texts = tiny_pairs["prompt"].to_list() + tiny_pairs["chosen"].to_list() + tiny_pairs["rejected"].to_list()
    tokenizer = build_tokenizer({"vocab_size": 300}, texts)
    model = build_causal_lm({**TINY, "num_layers": 2, "hidden_size": 64, "intermediate_size": 128}, tokenizer)
    bundle = ModelBundle(model, tokenizer)
    data = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=8, eval_batch_size=32)
    bf16, fp32 = TrainConfig(mixed_precision="bf16"), TrainConfig(mixed_precision="no")
    table = reference_logprobs(bundle, tiny_pairs, data, bf16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the loop's forward runs under
        expected = reference_logprobs(bundle, tiny_pairs, data, fp32)
    assert table.equals(expected)
    difference = (table["ref_chosen_logp"] - reference_logprobs(bundle, tiny_pairs, data, fp32)["ref_chosen_logp"]).abs()
    assert difference.max() > 1e-3  # bf16 compute is not fp32 compute: the precision has to match

    rows = make_row_batches(tokenize_sequences(tokenizer, PROMPTS, ANSWERS, 48, 24), 2, tokenizer.pad_token_id, seed=None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected_rows = rows_logprobs(model, rows, len(PROMPTS))
    assert torch.equal(rows_logprobs(model, rows, len(PROMPTS), "bf16"), expected_rows)
    assert not torch.equal(rows_logprobs(model, rows, len(PROMPTS), "no"), expected_rows)
