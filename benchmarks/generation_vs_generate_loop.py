"""GPO's sampler (core/policy/generation.sample_responses) vs a plain ``model.generate`` loop, on SmolLM2.

    python benchmarks/generation_vs_generate_loop.py                     # 4 real prompts x 4 samples, 48 new tokens
    python benchmarks/generation_vs_generate_loop.py --prompts 8 --samples 4 --max-new-tokens 64 --rounds 2

Both sample K responses to each of P real prompts (benchmarks/common.real_pairs), rendered by the
model's chat template as GPO renders them (core/training/batching.prompt_token_ids: the turns plus
the assistant header), temperature 1, top_p 1, the same max_new_tokens:

- ours: ``sample_responses``: prompts sorted by length, left-padded, up to --batch-size rows per
  batch; each prompt encoded once and its KV cache repeated for its K samples; rows leave the
  batch when they draw EOS;
- batched generate: the same rows, left-padded, one ``model.generate`` call per --batch-size rows
  (what sample_responses did before: every sample's copy of the prompt encoded, finished rows
  kept to the end);
- plain loop: one ``model.generate`` call per sample (batch of 1, its own KV cache): what a
  straightforward script does.

Sampled tokens = the generated tokens up to and including EOS (padding after EOS excluded), counted
on each side's own samples (different random draws, so the counts differ a little: the rate is
per sampled token). The sides alternate --rounds times in one process, one thread by default; rates
are per CPU-second of this process (on a shared machine wall time is mostly the others' load; wall
seconds are printed too). The LAST line is ``ratio sampled_tokens_per_s=..`` (ours / plain loop,
median over rounds), the line before it ours / batched generate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SMOLLM2, load_line, real_pairs  # noqa: E402


def plain_loop(model, tok, prompt_ids, samples: int, max_new_tokens: int, seed: int) -> int:
    """One generate call per (prompt, sample); returns the sampled tokens (through EOS)."""
    import torch

    torch.manual_seed(seed)
    tokens = 0
    for ids in prompt_ids:
        for _ in range(samples):
            x = torch.tensor([ids])
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0, top_p=1.0,
                                 top_k=0, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            new = out[0, x.shape[1]:].tolist()
            tokens += new.index(tok.eos_token_id) + 1 if tok.eos_token_id in new else len(new)
    return tokens


def batched_generate(model, tok, prompt_ids, samples: int, max_new_tokens: int, batch_size: int, seed: int) -> int:
    """Rows (prompt x sample) sorted by prompt length, left-padded, ``batch_size`` rows per generate call."""
    import torch

    from prefalign.core.policy.generation import left_pad

    torch.manual_seed(seed)
    rows = sorted((ids for ids in prompt_ids for _ in range(samples)), key=len)
    tokens = 0
    for start in range(0, len(rows), batch_size):
        x, mask = left_pad(rows[start:start + batch_size], tok.pad_token_id)
        out = model.generate(input_ids=x, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for new in out[:, x.shape[1]:].tolist():
            tokens += new.index(tok.eos_token_id) + 1 if tok.eos_token_id in new else len(new)
    return tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(SMOLLM2))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-prompt-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16, help="ours: rows per generate call (sampling.batch_size)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args(argv)
    import torch

    from prefalign.core.models import build_causal_lm, build_tokenizer
    from prefalign.core.policy.generation import SamplingConfig, sample_responses
    from prefalign.core.training.batching import prompt_token_ids

    torch.set_num_threads(a.threads)
    pairs = real_pairs(a.prompts)
    tok = build_tokenizer({"name_or_path": a.model}, [])
    model = build_causal_lm({"name_or_path": a.model, "dtype": "float32", "attn_implementation": "sdpa"}, tok).eval()
    prompt_ids = prompt_token_ids(tok, [p["prompt"] for p in pairs], a.max_prompt_length + a.max_new_tokens, a.max_prompt_length)
    lengths = [len(p) for p in prompt_ids]
    print(f"{Path(a.model).name}: {a.prompts} real prompts (chat template; {min(lengths)}-{max(lengths)} tokens) x {a.samples} samples, "
          f"max_new_tokens {a.max_new_tokens}, ours batch_size {a.batch_size}, {a.threads} thread(s); {load_line()}", flush=True)
    cfg = SamplingConfig(samples_per_prompt=a.samples, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, seed=0)
    rates: dict[str, list[float]] = {"ours": [], "batched generate": [], "plain loop": []}
    with torch.no_grad():
        sample_responses(model, tok, prompt_ids[:1], SamplingConfig(samples_per_prompt=2, max_new_tokens=2))  # warm-up
        for k in range(a.rounds):
            sides = {
                "ours": lambda: int(sum(len(t) for t in sample_responses(model, tok, prompt_ids, SamplingConfig(**{**cfg.__dict__, "seed": k}))["token_ids"])),
                "batched generate": lambda: batched_generate(model, tok, prompt_ids, a.samples, a.max_new_tokens, a.batch_size, seed=k),
                "plain loop": lambda: plain_loop(model, tok, prompt_ids, a.samples, a.max_new_tokens, seed=k),
            }
            line = []
            for side, fn in sides.items():
                t0, c0 = time.perf_counter(), time.process_time()
                tokens = fn()
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                rates[side].append(tokens / cpu)
                line.append(f"{side} {tokens} tokens in {seconds:.1f} s wall, {cpu:.1f} CPU-s ({tokens / cpu:.1f}/CPU-s)")
            print(f"  round {k + 1}: " + "; ".join(line) + f"; {load_line()}", flush=True)
    med = {side: statistics.median(r) for side, r in rates.items()}
    print(f"sampled tokens per CPU-second (median of {a.rounds}): " + ", ".join(f"{s} {v:.1f}" for s, v in med.items()))
    print(f"ratio[vs batched generate] sampled_tokens_per_s={med['ours'] / med['batched generate']:.2f}")
    print(f"ratio sampled_tokens_per_s={med['ours'] / med['plain loop']:.2f}")


if __name__ == "__main__":
    main()
