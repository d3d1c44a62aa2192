"""The KV-cache sampler (core/policy/generation.py): each prompt encoded once for its K samples,
finished rows leaving the batch, the nucleus rule; checked against transformers' own generate."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from prefalign.core.models import build_causal_lm
from prefalign.core.policy.generation import SamplingConfig, draw_tokens, prompt_batches, sample_responses


def prompts_of(tok):
    texts = ["Tell me about cats (1).", "Hi", "Tell me about rivers and boats and tea (5)."]
    return [[tok.bos_token_id] + tok.encode(t) for t in texts]


def test_same_draws_as_transformers_generate_with_the_same_seed(tiny_policy):
    """Until a row finishes, the same seed draws the same tokens as ``model.generate`` on the
    left-padded rows (prompt repeated K times): the same distribution, the same random numbers."""
    model, tok = tiny_policy.model.eval(), tiny_policy.tokenizer
    prompts = prompts_of(tok)[:2]
    cfg = SamplingConfig(samples_per_prompt=3, max_new_tokens=8, batch_size=6, temperature=1.0, top_p=1.0, seed=4)
    ours = sample_responses(model, tok, prompts, cfg)
    assert not ours["finished"].any()  # the premise: no row left early (else the random streams part)
    # the same rows in the same order as ours: prompts by length (shorter first), K samples each
    order = sorted(range(len(prompts)), key=lambda p: len(prompts[p]))
    rows = [prompts[p] for p in order for _ in range(cfg.samples_per_prompt)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    torch.manual_seed(cfg.seed)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                         max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    expected = out[:, width:].tolist()
    got = {(p, s): ids_ for p, s, ids_ in ours.select("prompt_index", "sample_index", "token_ids").iter_rows()}
    assert [got[(p, s)] for p in order for s in range(cfg.samples_per_prompt)] == expected


def test_finished_rows_leave_and_the_others_continue_unchanged(tiny_policy):
    """Near-greedy sampling with EOS set to a token one row produces early: that row stops there,
    every row equals its own greedy continuation computed alone (so dropping rows from the cache
    left the others' keys and values intact)."""
    tok = tiny_policy.tokenizer
    # a small init repeats one token whatever the context: weights of std 0.3 make every step depend on it
    model = build_causal_lm({"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128,
                             "max_position_embeddings": 128, "seed": 3}, tok).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0, 0.3)
    prompts = prompts_of(tok)
    cfg = SamplingConfig(samples_per_prompt=2, max_new_tokens=10, batch_size=6, temperature=1e-4)
    free = sample_responses(model, tok, prompts, cfg)
    runs = {p: free.filter(free["prompt_index"] == p)["token_ids"][0].to_list() for p in range(len(prompts))}
    # EOS := a token that one prompt's rows draw at some step and another prompt's rows never draw
    q, at = next((q, i) for q in runs for i in range(len(runs[q])) if runs[q][i] not in runs[q][:i]
                 and any(runs[q][i] not in runs[o] for o in runs if o != q))
    eos = runs[q][at]
    stub = SimpleNamespace(pad_token_id=tok.pad_token_id, eos_token_id=eos, decode=lambda ids, **_: " ".join(map(str, ids)))
    stopped = sample_responses(model, stub, prompts, cfg)
    assert stopped.filter(stopped["prompt_index"] == q)["n_tokens"].to_list() == [at, at]
    assert stopped["n_tokens"].max() == cfg.max_new_tokens > at + 1  # other rows went on after prompt q's left the batch
    for p, row in enumerate(prompts):
        x = torch.tensor([row])
        greedy = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=cfg.max_new_tokens,
                                pad_token_id=tok.pad_token_id, eos_token_id=eos)[0, len(row):].tolist()
        if eos in greedy:
            greedy = greedy[: greedy.index(eos) + 1]
        assert stopped.filter(stopped["prompt_index"] == p)["token_ids"].to_list() == [greedy, greedy]


def test_each_prompt_is_encoded_once_for_its_samples(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    prompts = prompts_of(tok)
    calls = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    try:
        sample_responses(model, tok, prompts, SamplingConfig(samples_per_prompt=4, max_new_tokens=3, batch_size=12))
    finally:
        hook.remove()
    width = max(len(p) for p in prompts)
    assert calls[0] == (3, width)  # the prompt pass: 3 distinct prompts, not 12 rows
    assert all(c[1] == 1 and c[0] <= 12 for c in calls[1:])  # then one new token per live row


def test_prompt_batches_by_hand():
    # lengths 5, 2, 9; K = 3, 4 rows per batch: shortest prompt first, a prompt's samples together
    assert prompt_batches([5, 2, 9], 3, 4) == [[(1, 0, 3)], [(0, 0, 3)], [(2, 0, 3)]]
    assert prompt_batches([5, 2], 2, 4) == [[(1, 0, 2), (0, 0, 2)]]
    # K above the batch size: a prompt's samples in chunks of at most batch_size rows (a chunk never split)
    assert prompt_batches([5, 2], 3, 2) == [[(1, 0, 2)], [(1, 2, 1)], [(0, 0, 2)], [(0, 2, 1)]]


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    # probabilities 0.5, 0.3, 0.15, 0.05 (token order shuffled): top_p 0.7 keeps {0.5, 0.3}, renormalised to 5/8, 3/8
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    logits = probs.log().expand(40000, 4)
    torch.manual_seed(0)
    counts = torch.bincount(draw_tokens(logits, 1.0, 0.7), minlength=4).float() / 40000
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1] - 5 / 8) < 0.01 and abs(counts[3] - 3 / 8) < 0.01
    # top_p 1: the plain softmax; temperature 2 flattens it: p_i proportional to sqrt(probs_i)
    counts = torch.bincount(draw_tokens(logits, 2.0, 1.0), minlength=4).float() / 40000
    expected = probs.sqrt() / probs.sqrt().sum()
    assert torch.allclose(counts, expected, atol=0.01)
