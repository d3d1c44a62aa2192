"""Response log-probs through the LM head in chunks (core/models/lm_head.py) equal the unfused
computation: full logits of the unpacked batch, log-softmax, masked sum (fp32, <= 1e-5), in values
and in every parameter's gradient, padded and packed, with tied and untied embeddings."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prefalign.core.models import ModelConfig, build_causal_lm
from prefalign.core.models.lm_head import DEFAULT_CHUNK_TOKENS, chunked_target_logprobs, logprob_chunk_tokens
from prefalign.core.policy.batches import RowBatch
from prefalign.core.policy.logprobs import (
    _fusable_parts,
    batch_pair_logprobs,
    masked_sequence_logprobs,
    sequence_logprobs,
)
from prefalign.core.policy.losses import sft_loss
from prefalign.core.policy.objectives import sft_loss_fn
from prefalign.core.training.batching import SequenceBatch, TokenizedSequence
from prefalign.core.training.packing import pack_pairs

VOCAB = 3000  # >> the chunk: one chunk's logits are a small part of [tokens x vocabulary]
CHUNK = 16  # positions per chunk: the batches below have ~100 response tokens, so 7+ chunks


def tiny_llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tied, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).train()
    if not tied:  # a different output table than the input embeddings, so a wrong tie would show
        torch.nn.init.normal_(model.lm_head.weight, std=0.05)
    return model


def random_pairs(n: int = 3, seed: int = 0) -> tuple[list[TokenizedSequence], list[TokenizedSequence]]:
    """n pairs sharing a prompt per pair (so prompt sharing applies), responses of different lengths."""
    g = torch.Generator().manual_seed(seed)
    chosen, rejected = [], []
    for i in range(n):
        prompt = [1] + torch.randint(3, VOCAB, (5 + 2 * i,), generator=g).tolist()
        for side, length in ((chosen, 12 + 3 * i), (rejected, 9 + 5 * i)):
            side.append(TokenizedSequence(prompt + torch.randint(3, VOCAB, (length,), generator=g).tolist() + [2], len(prompt)))
    return chosen, rejected


def padded(sequences: list[TokenizedSequence]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, response_mask) of the sequences, written out here."""
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    attention, response = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, s in enumerate(sequences):
        ids[row, : len(s)] = torch.tensor(s.input_ids)
        attention[row, : len(s)] = 1
        response[row, s.prompt_length : len(s)] = 1
    return ids, attention, response


def values_and_grads(model: torch.nn.Module, compute) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """compute() -> [N] summed log-probs; the gradient of a weighted sum (weights of both signs, as DPO's)."""
    model.zero_grad()
    logps = compute()
    weights = torch.linspace(-1.5, 2.0, logps.shape[0])
    (logps * weights).sum().backward()
    return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def unfused(model: torch.nn.Module, ids, attention, response) -> torch.Tensor:
    """The reference: every position's [V] logits, log-softmax, masked sum (policy.logprobs.masked_sequence_logprobs)."""
    return masked_sequence_logprobs(model(input_ids=ids, attention_mask=attention).logits, ids, response)


def assert_same(got, expected):
    (v, g), (v_ref, g_ref) = got, expected
    # sums of ~20 token log-probs of magnitude ~8: fp32 summation order alone moves them by ~1e-5 (relative 1e-7)
    torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-6)
    assert g.keys() == g_ref.keys() and g
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("chunk", [CHUNK, 7, None])
def test_padded_chunked_logprobs_and_gradients_equal_unfused(tied, chunk):
    model = tiny_llama(tied)
    chosen, rejected = random_pairs()
    ids, attention, response = padded(chosen + rejected)
    assert response[:, 1:].sum() > 4 * CHUNK
    expected = values_and_grads(model, lambda: unfused(model, ids, attention, response))
    got = values_and_grads(model, lambda: sequence_logprobs(model, ids, attention, response, chunk_tokens=chunk))
    assert_same(got, expected)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("share_prompt", [False, True])
def test_packed_chunked_logprobs_and_gradients_equal_unfused(tied, share_prompt):
    model = tiny_llama(tied)
    model.config.prefalign_logprob_chunk_tokens = CHUNK  # the model's own setting (ModelConfig.logprob_chunk_tokens)
    chosen, rejected = random_pairs()
    packed = pack_pairs(chosen, rejected, share_prompt=share_prompt)
    assert packed.shares_prompts == share_prompt and packed.target_ids.numel() > 4 * CHUNK
    expected = values_and_grads(model, lambda: unfused(model, *padded(chosen + rejected)))
    got = values_and_grads(model, lambda: torch.cat(batch_pair_logprobs(model, packed)))
    assert_same(got, expected)


def test_token_logprobs_equal_per_position():
    """Each position's log-prob, not only the sums, against log_softmax of the full logits."""
    torch.manual_seed(0)
    head = torch.nn.Linear(24, VOCAB, bias=False)
    hidden = torch.randn(70, 24, requires_grad=True)
    targets = torch.randint(0, VOCAB, (70,))
    expected = torch.log_softmax(head(hidden), -1).gather(1, targets[:, None]).squeeze(1)
    got = chunked_target_logprobs(hidden, head, targets, CHUNK)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    g = torch.randn(70)
    grads = torch.autograd.grad((got * g).sum(), (hidden, head.weight))
    ref = torch.autograd.grad((expected * g).sum(), (hidden, head.weight))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_no_tokens_by_vocabulary_tensor_is_kept_for_the_backward_pass():
    """What autograd saves between the passes: the unfused path keeps [tokens, V] tensors (the
    log-softmax); the chunked path nothing with a vocabulary axis but the head's own [V, H] weight."""
    model = tiny_llama(tied=True)
    chosen, rejected = random_pairs()
    ids, attention, response = padded(chosen + rejected)
    n_targets = int(response[:, 1:].sum())
    weight = model.lm_head.weight

    def largest_saved_vocab_tensor(compute) -> int:
        sizes = [0]

        def pack(t):
            is_weight = t.untyped_storage().data_ptr() == weight.untyped_storage().data_ptr()
            if VOCAB in t.shape and not is_weight:
                sizes.append(t.numel() // VOCAB)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            compute()
        return max(sizes)

    assert largest_saved_vocab_tensor(lambda: unfused(model, ids, attention, response)) >= n_targets
    assert largest_saved_vocab_tensor(lambda: sequence_logprobs(model, ids, attention, response, chunk_tokens=CHUNK)) == 0


def test_lora_adapted_head_runs_chunked_through_its_own_forward():
    """peft's LoRA on lm_head is not a plain Linear: each chunk goes through the module under
    checkpointing; values and the adapters' gradients equal the unfused computation."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(tied=False), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"], lora_dropout=0.0))
    for name, p in model.named_parameters():  # B = 0 at the start would hide a missing adapter term
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    parts = _fusable_parts(model)
    assert parts is not None and type(parts[1]) is not torch.nn.Linear
    chosen, rejected = random_pairs()
    ids, attention, response = padded(chosen + rejected)
    expected = values_and_grads(model, lambda: unfused(model, ids, attention, response))
    got = values_and_grads(model, lambda: sequence_logprobs(model, ids, attention, response, chunk_tokens=CHUNK))
    assert any("lm_head" in n and "lora_A" in n for n in got[1])
    assert_same(got, expected)


def test_sft_loss_fn_equals_the_full_logits_loss():
    model = tiny_llama(tied=True)
    model.config.prefalign_logprob_chunk_tokens = CHUNK
    chosen, _ = random_pairs()
    ids, attention, response = padded(chosen)
    rows = torch.zeros(3, dtype=torch.long)
    batch = RowBatch(SequenceBatch(ids, attention, response, rows, rows))
    expected = values_and_grads(model, lambda: sft_loss(model(input_ids=ids, attention_mask=attention).logits, ids, response)[None])
    got = values_and_grads(model, lambda: sft_loss_fn(model, batch)[0][None])
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
    for name in expected[1]:
        torch.testing.assert_close(got[1][name], expected[1][name], atol=1e-6, rtol=0, msg=name)


def test_bf16_autocast_matches_the_unfused_autocast_path():
    """Under CPU autocast (training.mixed_precision: bf16) the head's product runs in bf16 as nn.Linear's would."""
    model = tiny_llama(tied=False)
    chosen, rejected = random_pairs()
    ids, attention, response = padded(chosen + rejected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = values_and_grads(model, lambda: unfused(model, ids, attention, response))
        got = values_and_grads(model, lambda: sequence_logprobs(model, ids, attention, response, chunk_tokens=CHUNK))
    torch.testing.assert_close(got[0], expected[0], atol=0.05, rtol=1e-3)  # bf16 products of ~20 tokens
    for name in expected[1]:
        scale = expected[1][name].abs().max().item()
        assert (got[1][name] - expected[1][name]).abs().max().item() <= 0.02 * scale, name


def test_logit_transforms_and_sharded_weights_take_the_plain_path():
    """A model that scales or caps logits after the head (Gemma's soft-capping) must not be fused,
    nor one whose weights FSDP shards (the head's weight is whole only inside its forward)."""
    from torch.distributed.fsdp import FSDPModule

    model = tiny_llama(tied=True)
    assert _fusable_parts(model) is not None
    model.config.final_logit_softcapping = 30.0
    assert _fusable_parts(model) is None
    sharded = tiny_llama(tied=True)
    sharded.__class__ = type("FSDPLlamaForCausalLM", (FSDPModule, LlamaForCausalLM), {})  # what fully_shard makes of it
    assert _fusable_parts(sharded) is None


def test_chunk_size_is_a_model_option_saved_with_the_checkpoint(tmp_path):
    from tests.reward.helpers import toy_tokenizer

    assert ModelConfig().logprob_chunk_tokens == DEFAULT_CHUNK_TOKENS
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="logprob_chunk_tokens"):
            ModelConfig.from_dict({"logprob_chunk_tokens": bad})
    tokenizer = toy_tokenizer()
    model = build_causal_lm({"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                             "logprob_chunk_tokens": 64}, tokenizer)
    assert logprob_chunk_tokens(model) == 64
    model.save_pretrained(tmp_path)
    assert logprob_chunk_tokens(LlamaForCausalLM.from_pretrained(tmp_path)) == 64
    assert logprob_chunk_tokens(build_causal_lm({"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                                                 "logprob_chunk_tokens": None}, tokenizer)) is None
    assert logprob_chunk_tokens(tiny_llama(tied=True)) == DEFAULT_CHUNK_TOKENS  # a model from elsewhere: the default


def test_a_zero3_partitioned_head_runs_once_through_its_own_forward():
    """Under DeepSpeed ZeRO-3 the head's weight carries a ``ds_id`` and is whole only inside the head's
    forward, whose gather is a collective every process must run equally often (the processes' chunk
    counts differ): one unchunked call, the same values and gradients as the fused chunks."""
    torch.manual_seed(0)
    hidden, targets = torch.randn(50, 8), torch.randint(0, 40, (50,))
    fused, zero3 = torch.nn.Linear(8, 40, bias=False), torch.nn.Linear(8, 40, bias=False)
    zero3.weight = torch.nn.Parameter(fused.weight.detach().clone())
    zero3.weight.ds_id = 0  # what deepspeed.zero marks its partitioned parameters with
    calls = []
    zero3.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    h_fused, h_zero3 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    expected, got = chunked_target_logprobs(h_fused, fused, targets, 16), chunked_target_logprobs(h_zero3, zero3, targets, 16)
    assert calls == [50]  # one call over all 50 positions, not 4 chunks
    assert torch.allclose(got, expected, atol=1e-5)
    expected.sum().backward()
    got.sum().backward()
    assert torch.allclose(h_zero3.grad, h_fused.grad, atol=1e-5) and torch.allclose(zero3.weight.grad, fused.weight.grad, atol=1e-5)
