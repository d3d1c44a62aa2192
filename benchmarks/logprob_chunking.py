"""Peak RSS and time of one DPO step's policy forward + backward, with and without LM-head chunking.

    python benchmarks/logprob_chunking.py                       # SmolLM2-135M-Instruct when fetched, else its shape from config
    python benchmarks/logprob_chunking.py --chunks 1024 none --layouts padded shared --pairs 8 --response 200

Each (layout, chunk) runs in a fresh interpreter with one thread (its own peak RSS): the model is
loaded, then ``--steps`` DPO losses (make_pairwise_loss_fn, sigmoid DPO, a constant reference
table) are computed and back-propagated, without an optimizer step. Pairs are random token ids:
a prompt of ``--prompt`` tokens (+/- 25%) and two responses of ``--response`` tokens (+/- 10%)
each; the compute does not depend on which ids they are. Printed per run: RSS after loading,
the peak RSS during the steps, each step's wall and CPU time (the process's own; on a shared CPU
the wall time partly measures how much CPU the run got), with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RssSampler, load_line, rss_mb  # noqa: E402

SMOLLM2 = Path(__file__).resolve().parents[1] / "data/06_models/pretrained/SmolLM2-135M-Instruct"
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=100000.0)


def load_model(path: str | None):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if path:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE, attn_implementation="sdpa"))


def child(a: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from prefalign.core.models.lm_head import set_logprob_chunk_tokens
    from prefalign.core.policy.objectives import DPOConfig, dpo_objective, make_pairwise_loss_fn
    from prefalign.core.policy.reference import ReferenceLogprobs
    from prefalign.core.training.batching import TokenizedPairs, TokenizedSequence, make_pair_batches
    from prefalign.core.training.packing import make_packed_pair_batches

    model = load_model(a.model).train()
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    set_logprob_chunk_tokens(model, None if a.chunk == "none" else int(a.chunk))
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    def around(n: int, spread: float) -> int:
        return int(n * (1 + spread * (2 * torch.rand(1, generator=g).item() - 1)))

    chosen, rejected = [], []
    for _ in range(a.pairs):
        prompt = [1] + ids(around(a.prompt, 0.25))
        chosen.append(TokenizedSequence(prompt + ids(around(a.response, 0.1)) + [2], len(prompt)))
        rejected.append(TokenizedSequence(prompt + ids(around(a.response, 0.1)) + [2], len(prompt)))
    n = a.pairs
    tokenized = TokenizedPairs(chosen, rejected, np.ones(n), np.zeros(n))
    if a.layout == "padded":
        batch = make_pair_batches(tokenized, n, 0, seed=None)[0]
    else:
        batch = make_packed_pair_batches(tokenized, n, 0, seed=None, share_prompt=a.layout == "shared")[0]
    reference = ReferenceLogprobs(torch.full((n,), -1000.0), torch.full((n,), -1000.0))
    loss_fn = make_pairwise_loss_fn(dpo_objective, DPOConfig(beta=0.1), reference)
    response_tokens = sum(len(s) - s.prompt_length for s in chosen + rejected)
    rss = RssSampler()
    loaded = rss_mb()
    rss.phase("steps")
    seconds, cpu_seconds = [], []
    for _ in range(a.steps):
        model.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.process_time()
        loss, _ = loss_fn(model, batch)
        loss.backward()
        seconds.append(round(time.perf_counter() - t0, 2))
        cpu_seconds.append(round(time.process_time() - c0, 2))
    peaks = rss.report()
    print(json.dumps({"layout": a.layout, "chunk": a.chunk, "gradient_checkpointing": a.gradient_checkpointing, "loaded_rss_mb": round(loaded, 1), "peak_rss_mb": peaks.get("steps"),
                      "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "step_seconds": seconds, "step_cpu_seconds": cpu_seconds,
                      "response_tokens": response_tokens, "loss": round(float(loss), 6), "load": load_line()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SMOLLM2) if (SMOLLM2 / "config.json").exists() else None,
                   help="a causal LM directory (default: the fetched SmolLM2-135M-Instruct, else its shape from config)")
    p.add_argument("--layouts", nargs="+", default=["padded", "shared"], choices=["padded", "packed", "shared"])
    p.add_argument("--chunks", nargs="+", default=["256", "none"], help="model.logprob_chunk_tokens values; none = unchunked")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--prompt", type=int, default=100)
    p.add_argument("--response", type=int, default=200)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="re-run each layer in the backward pass (activations ~1/20: the LM head's share of the peak shows)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--layout", help=argparse.SUPPRESS)
    p.add_argument("--chunk", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    print(f"model: {a.model or 'SmolLM2-135M shape from config (random weights)'}; {a.pairs} pairs, prompt ~{a.prompt}, "
          f"responses ~{a.response} tokens; one thread per run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for layout in a.layouts:
        for chunk in a.chunks:
            argv = [sys.executable, __file__, "--child", "--layout", layout, "--chunk", chunk, "--pairs", str(a.pairs),
                    "--prompt", str(a.prompt), "--response", str(a.response), "--steps", str(a.steps)]
            if a.model:
                argv += ["--model", a.model]
            if a.gradient_checkpointing:
                argv.append("--gradient-checkpointing")
            out = subprocess.run(argv, env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-4000:])
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
