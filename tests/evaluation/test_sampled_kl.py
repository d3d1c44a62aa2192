"""KL(pi || pi_ref) on the exact sampled ids (docs/methods.md s5 "KL"), against brute-force enumeration."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import polars as pl
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prefalign.core.evaluation.win_rate import with_kl_terms
from prefalign.core.evaluation.metrics import kl_to_reference
from prefalign.core.policy.generation import SamplingConfig, sample_responses, sampled_sequence_logprobs

PAD, EOS, VOCAB = 0, 1, 4  # tokens 2 and 3 are words; PAD can be drawn too (nothing forbids it)
PROMPT = [2, 3]
MAX_NEW = 2
# A duck-typed tokenizer: sampling only needs the special ids and decode.
TOKENIZER = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS, get_vocab=lambda: {str(i): i for i in range(VOCAB)},
                            decode=lambda ids, skip_special_tokens=True: " ".join(str(i) for i in ids))


def _tiny_lm(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                         initializer_range=0.8,  # peaked next-token distributions: a clearly positive KL
                         pad_token_id=PAD, eos_token_id=EOS, bos_token_id=2)
    return LlamaForCausalLM(config).eval()


@torch.no_grad()
def _exact_logprob(model: LlamaForCausalLM, response: tuple[int, ...]) -> float:
    """log pi(y|x) token by token from full-vocabulary softmaxes (no batching, no masks)."""
    total = 0.0
    for t, token in enumerate(response):
        logits = model(torch.tensor([PROMPT + list(response[:t])])).logits[0, -1]
        total += torch.log_softmax(logits.double(), -1)[token].item()
    return total


def _all_responses() -> list[tuple[int, ...]]:
    """Every response the sampler can produce: EOS at step t ends it, else the cap ends it."""
    out = []
    for length in range(1, MAX_NEW + 1):
        for ids in itertools.product(range(VOCAB), repeat=length):
            if EOS in ids[:-1]:
                continue
            if length < MAX_NEW and ids[-1] != EOS:
                continue
            out.append(ids)
    return out


def _exact_kl(policy: LlamaForCausalLM, reference: LlamaForCausalLM) -> float:
    kl, mass = 0.0, 0.0
    for y in _all_responses():
        logp, logq = _exact_logprob(policy, y), _exact_logprob(reference, y)
        kl += math.exp(logp) * (logp - logq)
        mass += math.exp(logp)
    assert mass == pytest.approx(1.0, abs=1e-9)  # the enumeration covers every outcome
    return kl


def _samples(model: LlamaForCausalLM, n: int) -> pl.DataFrame:
    config = SamplingConfig(samples_per_prompt=n, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW,
                            batch_size=1000, seed=0)
    return sample_responses(model, TOKENIZER, [PROMPT], config)


def test_sampled_ids_carry_eos_exactly_when_finished_and_score_like_the_enumeration():
    policy = _tiny_lm(0)
    samples = _samples(policy, 200)
    for finished, ids, n_tokens in samples.select("finished", "token_ids", "n_tokens").iter_rows():
        assert finished == (ids[-1] == EOS) and EOS not in ids[:-1]
        assert len(ids) == n_tokens + int(finished)
        assert finished or len(ids) == MAX_NEW  # not finished: the length cap stopped it
    batched = sampled_sequence_logprobs(policy, [PROMPT], samples, PAD, batch_size=7)
    exact = {y: _exact_logprob(policy, y) for y in {tuple(ids) for ids in samples["token_ids"].to_list()}}
    for logp, ids in zip(batched.tolist(), samples["token_ids"].to_list()):
        assert logp == pytest.approx(exact[tuple(ids)], abs=1e-4)


def test_kl_of_a_policy_with_itself_is_zero():
    policy = _tiny_lm(0)
    samples = _samples(policy, 64).with_columns(pl.lit("p").alias("prompt"),
                                                pl.Series("prompt_token_ids", [PROMPT] * 64))
    bundle = SimpleNamespace(model=policy, tokenizer=TOKENIZER)
    judged = with_kl_terms(samples, bundle, bundle, batch_size=16)
    assert kl_to_reference(judged["policy_logp"], judged["reference_logp"])["kl"] == pytest.approx(0.0, abs=1e-9)


def test_monte_carlo_kl_matches_brute_force_enumeration():
    policy, reference = _tiny_lm(0), _tiny_lm(1)
    exact = _exact_kl(policy, reference)
    samples = _samples(policy, 3000).with_columns(pl.Series("prompt_token_ids", [PROMPT] * 3000))
    judged = with_kl_terms(samples, SimpleNamespace(model=policy, tokenizer=TOKENIZER),
                           SimpleNamespace(model=reference, tokenizer=TOKENIZER), batch_size=1000)
    estimate = kl_to_reference(judged["policy_logp"], judged["reference_logp"])
    assert exact > 0.05  # two different models: a clearly positive KL
    assert estimate["kl"] > 0
    print(f"exact KL {exact:.4f}, Monte-Carlo {estimate['kl']:.4f} +- {estimate['kl_se']:.4f}")
    assert abs(estimate["kl"] - exact) < 4 * estimate["kl_se"], (estimate, exact)


def test_kl_refuses_a_reference_with_another_vocabulary():
    other = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS, get_vocab=lambda: {"a": 0})
    samples = pl.DataFrame({"prompt_token_ids": [PROMPT], "token_ids": [[2, EOS]]})
    with pytest.raises(ValueError, match="share a tokenizer"):
        with_kl_terms(samples, SimpleNamespace(model=_tiny_lm(0), tokenizer=TOKENIZER),
                      SimpleNamespace(model=_tiny_lm(1), tokenizer=other))


def test_no_prompt_samples_nothing_and_keeps_the_columns():
    from prefalign.core.evaluation.win_rate import SAMPLES_SCHEMA, sample_for_prompts

    empty = sample_for_prompts(None, [], {}, 64, 32)  # no model is touched
    assert empty.height == 0 and empty.schema == SAMPLES_SCHEMA
