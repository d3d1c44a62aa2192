"""What a reward-model training step costs on SmolLM2-135M-Instruct on this CPU, per way of training it.

The `cpu_chat` environment has to fit BT, MMPO and GPM reward models and seven policies into 60
minutes on 2 cores, so it removes work rather than waiting. This script measures the candidates on
the same real pairs, rendered with the model's chat template, packed and prompt-shared (the
environment's layout), batch 8, in fp32:

- ``full``: every weight trains;
- ``lora``: LoRA r=16 on every linear layer (peft), base frozen;
- ``freeze``: embeddings + the lowest N layers frozen (the backward stops at layer N);
- ``cache``: the same, with the frozen layers' output cached per segment
  (model.cache_frozen_layers): the first epoch fills the cache (``cache_fill``), later epochs
  read it (``cache``).

Each mode runs in its own interpreter (its own peak RSS). Prints one line per mode: pairs/s,
real tokens/s, seconds per step and peak RSS, plus the ratio to ``full``.

    python benchmarks/cpu_chat_modes.py [--model DIR] [--freeze 26] [--steps 6] [--threads 2]

Run after `kedro run --pipelines feedback,validation` (it reads the newest validated_pairs).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT_MODEL = ROOT / "data/06_models/pretrained/SmolLM2-135M-Instruct"
SOURCES = ["ultrafeedback", "tulu2_bon", "alpaca_eval", "arena_bench", "vicuna_eval", "prometheus"]


def run_mode(a: argparse.Namespace) -> dict:
    import polars as pl
    import torch
    from transformers import AutoTokenizer

    from prefalign.core.models import build_backbone
    from prefalign.core.reward.model import RewardModel
    from prefalign.core.reward.objectives import make_reward_loss_fn
    from prefalign.core.reward.train_reward import RewardParams
    from prefalign.core.training.batching import tokenize_pair_frame
    from prefalign.core.training.packing import make_packed_pair_batches

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    path = sorted(ROOT.glob("data/05_model_input/validated_pairs.parquet/*/validated_pairs.parquet"))[-1]
    pairs = (pl.read_parquet(path).filter(pl.col("split").eq("train") & pl.col("source").is_in(SOURCES) & (pl.col("p_chosen") > 0.5))
             .sort("pair_id").head(a.batch * a.steps))
    tok = AutoTokenizer.from_pretrained(a.model)
    tokenized = tokenize_pair_frame(tok, pairs, a.max_length, a.max_prompt_length)
    batches = make_packed_pair_batches(tokenized, a.batch, tok.pad_token_id, seed=0, share_prompt=True)
    model_params = {"name_or_path": str(a.model), "attn_implementation": "sdpa"}
    if a.mode == "lora":
        model_params["lora"] = {"r": 16, "alpha": 32, "target_modules": "all-linear", "dropout": 0.0}
    if a.mode in ("freeze", "cache"):
        model_params["freeze_layers"] = a.freeze
    if a.mode == "cache":
        model_params["cache_frozen_layers"] = True
    model = RewardModel(build_backbone(model_params, tok), {"head": "scalar"}).train()
    loss_fn = make_reward_loss_fn(RewardParams())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    timings = {}
    for phase in (["cache_fill", "cache"] if a.mode == "cache" else [a.mode]):
        start, tokens = time.perf_counter(), 0
        for batch in batches:
            loss, _ = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += batch.num_tokens
        seconds = time.perf_counter() - start
        timings[phase] = {"pairs_per_s": a.batch * len(batches) / seconds, "tokens_per_s": tokens / seconds,
                          "s_per_step": seconds / len(batches)}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"timings": timings, "trainable": trainable, "peak_rss_gb": rss_gb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--freeze", type=int, default=26)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-prompt-length", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["full", "lora", "freeze", "cache"])
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.mode:
        print(json.dumps(run_mode(a)))
        return
    print(f"model {a.model.name}, {a.steps} steps of {a.batch} pairs, max_length {a.max_length}, {a.threads} threads, "
          f"freeze {a.freeze}, load {os.getloadavg()[0]:.1f}")
    base = None
    for mode in a.modes:
        cmd = [sys.executable, __file__, "--mode", mode] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
                                                              if k not in ("mode", "modes")]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"{mode}: failed\n{out.stderr[-2000:]}")
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        for phase, t in result["timings"].items():
            base = base or t["pairs_per_s"]
            print(f"{phase:>10}: pairs/s={t['pairs_per_s']:.3f} tokens/s={t['tokens_per_s']:.0f} s/step={t['s_per_step']:.2f} "
                  f"trainable={result['trainable'] / 1e6:.1f}M peak_rss={result['peak_rss_gb']:.2f}GB x{t['pairs_per_s'] / base:.2f} vs full")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
