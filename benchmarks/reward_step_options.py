"""What removes work from a reward step on the real model: the last layer at the pooled rows only, torch.compile.

    python benchmarks/reward_step_options.py                          # SmolLM2, last-layer option, shared + padded layouts
    python benchmarks/reward_step_options.py --compile --layouts padded --reps 2

One reward forward + backward (scalar head, loss = sum of rewards: the same backward work as the BT
loss) on the first --batches length-grouped batches of real pairs (benchmarks/common.py), one
thread. Variants are timed in turn on the same batches (plain, option, plain, option, ...), in CPU
seconds of this process (on a shared machine wall time is mostly other processes' load); printed:
median CPU seconds per batch and their ratio.

- ``rows``: ``RewardModel.last_layer_at_pooled_rows`` (core/models/pooled_rows.py): the last
  layer's o_proj and MLP only at the pooled positions.
- ``--compile``: torch.compile (inductor, CPU) of every decoder layer (regional compilation: one
  compiled graph reused by the 30 identical layers, dynamic sequence length), padded layout only
  (the packed layouts' segment attention loops over a per-batch plan in Python); compile time = the
  first step's CPU time minus an eager step's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SMOLLM2, load_line, pretruncate, real_pairs  # noqa: E402


def forward_backward(model, batch) -> float:
    """CPU seconds of one forward + backward of a (padded or packed) pair batch (this process's CPU
    time, one thread: robust to other processes' load, unlike wall time)."""
    t0 = time.process_time()
    model(batch.sequences).rewards.sum().backward()
    model.zero_grad(set_to_none=True)
    return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(SMOLLM2))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--n-pairs", type=int, default=6)
    parser.add_argument("--pairs", default=None, help="JSONL of prompt/chosen/rejected (default: data/01_raw via the feedback code)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--layouts", default="shared,padded")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--layers", type=int, default=None,
                        help="keep only the lowest N decoder layers (the same layer shapes, less memory and time; "
                             "per-layer effects such as compile speed-ups carry over)")
    parser.add_argument("--bf16", action="store_true", help="under CPU bf16 autocast (as training.mixed_precision: bf16)")
    parser.add_argument("--profile", action="store_true",
                        help="instead: torch.profiler over one forward + backward per batch of the first layout, self CPU time by op group")
    a = parser.parse_args()
    import contextlib

    import torch

    from prefalign.core.models import build_backbone
    from prefalign.core.models.backbone import transformer_layers
    from prefalign.core.reward.model import RewardModel
    from prefalign.core.training import TrainConfig
    from prefalign.core.training.packing import pair_batches

    torch.set_num_threads(a.threads)
    tok, tp, _ = pretruncate(real_pairs(a.n_pairs, a.pairs), 0, a.max_length, a.max_length // 2, a.model)
    model = RewardModel(build_backbone({"name_or_path": a.model, "dtype": "float32", "attn_implementation": "sdpa"}, tok), {"head": "scalar"})
    if a.layers:
        layers = transformer_layers(model.backbone)
        del layers[a.layers:]
        model.backbone.config.num_hidden_layers = a.layers
    model.train()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    print(f"{Path(a.model).name}{f' (lowest {a.layers} layers)' if a.layers else ''}, batch {a.batch} pairs, max_length {a.max_length}, {a.threads} thread(s), "
          f"{'bf16 autocast' if a.bf16 else 'fp32'}; {load_line()}", flush=True)

    def timed(batch) -> float:
        with autocast():
            return forward_backward(model, batch)

    for layout in [x for x in a.layouts.split(",") if x]:
        cfg = TrainConfig.from_dict({"packing": layout == "packed", "share_prompt": layout == "shared"})
        every = pair_batches(tp, a.batch, tok.pad_token_id, 0, cfg)
        batches = [every[k] for k in range(min(a.batches, len(every)))]
        if a.profile:
            profile(timed, batches, layout)
            continue
        if a.compile:
            if layout != "padded":
                print(f"{layout}: --compile is measured on the padded layout only")
                continue
            plain = [[], []]
            for b in batches:  # eager reference times first (warm)
                timed(b)
            eager = [timed(b) for b in batches]
            layers = transformer_layers(model.backbone)
            for layer in layers:
                layer.compile(dynamic=True)
            t0 = time.perf_counter()
            first = timed(batches[0])
            compile_s = first - eager[0]
            rest = [timed(b) for b in batches[1:]]  # new lengths: recompiles, if any, show here
            for _ in range(a.reps):
                plain[0].append([timed(b) for b in batches])
            for layer in layers:  # back to eager for the alternation
                layer._compiled_call_impl = None
            for _ in range(a.reps):
                plain[1].append([timed(b) for b in batches])
            comp = [statistics.median(x) for x in zip(*plain[0])]
            eag = [statistics.median(x) for x in zip(*plain[1])]
            print(f"padded compile: first step {first:.1f} s (compile ~{compile_s:.1f} s), other new lengths "
                  f"{' '.join(f'{t:.1f}' for t in rest)} s, total {time.perf_counter() - t0:.0f} s")
            print(f"padded CPU s/batch eager {' '.join(f'{t:.2f}' for t in eag)} | compiled {' '.join(f'{t:.2f}' for t in comp)} | "
                  f"ratio eager/compiled {sum(eag) / sum(comp):.3f}; {load_line()}", flush=True)
            continue
        timed(batches[0])  # warm-up
        times = {"plain": [], "rows": []}
        for _ in range(a.reps):
            for variant in times:
                model.last_layer_at_pooled_rows = variant == "rows"
                times[variant].append([timed(b) for b in batches])
        med = {v: [statistics.median(x) for x in zip(*t)] for v, t in times.items()}
        print(f"{layout}: CPU s/batch plain {' '.join(f'{t:.2f}' for t in med['plain'])} | last layer at pooled rows "
              f"{' '.join(f'{t:.2f}' for t in med['rows'])} | ratio plain/rows {sum(med['plain']) / sum(med['rows']):.3f}; "
              f"{load_line()}", flush=True)


GROUPS = (  # op name fragments -> group, first match wins
    ("attention (SDPA forward + backward)", ("scaled_dot_product", "flash_attention", "_efficient_attention", "attention")),
    ("matrix products", ("::mm", "::addmm", "::bmm", "::matmul", "::linear", "::baddbmm")),
    ("element-wise (norms, rotary, SiLU, adds, muls)", ("::mul", "::add", "::silu", "::pow", "::rsqrt", "::mean", "::neg", "::sub",
                                                          "::div", "::sigmoid", "::cos", "::sin", "::exp", "::sum", "::where")),
    ("copies / cat / index / fill", ("::copy_", "::cat", "::index", "::fill_", "::zero", "::clone", "::contiguous", "::to", "::_to_copy",
                                     "::gather", "::scatter", "::split", "::unbind", "::stack", "::new_zeros", "::empty")),
)


def profile(timed, batches, layout: str) -> None:
    """Self CPU time of one forward + backward per batch, summed by op group (leaf ops only)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    timed(batches[0])  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches:
            timed(b)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key
        group = next((g for g, keys in GROUPS if any(k in name for k in keys)), "everything else")
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values())
    print(f"{layout}: self CPU time {whole / 1e6:.1f} s over {len(batches)} forward + backward passes: "
          + ", ".join(f"{g} {t / whole:.1%}" for g, t in sorted(totals.items(), key=lambda x: -x[1])), flush=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)


if __name__ == "__main__":
    main()
