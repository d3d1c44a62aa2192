"""Held-out-source accuracy of a cpu_chat BT reward model against the pairs it has seen.

The `cpu_chat` reward model (SmolLM2-135M-Instruct, lowest 28 layers frozen and cached, top 2 layers
and the head trained) is trained here step by step on the environment's own train pairs, and every
``--eval-every`` steps its accuracy on the held-out sources (hh_rlhf, PandaLM: split `heldout`,
label ties left out, at most ``--heldout-per-source`` pairs per source, seeded like the evaluation)
is printed next to pick-the-longer on the same pairs, with a 95% bootstrap interval over pairs.
One process: the frozen layers run once per pair (train and held-out), every learning rate and
every evaluation reads them from the cache (core/training/frozen_cache.py).

    python benchmarks/cpu_chat_learning_curve.py [--lrs 2e-4 5e-5] [--steps 100] [--eval-every 25]

Run after `kedro run --pipelines feedback,validation` (any environment: it reads the newest
validated_pairs). Uses the project's own tokenisation, packing, loss and scoring functions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SOURCES = ["ultrafeedback", "tulu2_bon", "arena_bench", "vicuna_eval", "prometheus"]  # conf/cpu_chat/parameters_reward.yml


def bootstrap(correct, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    import numpy as np

    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), size=(resamples, len(correct)))].mean(axis=1)
    return float(correct.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "data/06_models/pretrained/SmolLM2-135M-Instruct"))
    parser.add_argument("--freeze", type=int, default=28)
    parser.add_argument("--train-pairs", type=int, default=400)
    parser.add_argument("--heldout-per-source", type=int, default=100)
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-4, 5e-5])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args()

    import numpy as np
    import polars as pl
    import torch
    from transformers import AutoTokenizer

    from prefalign.core.models import build_backbone
    from prefalign.core.reward.model import RewardModel
    from prefalign.core.reward.objectives import make_reward_loss_fn
    from prefalign.core.reward.scoring import pair_logits
    from prefalign.core.reward.train_reward import RewardParams
    from prefalign.core.training.batching import tokenize_pair_frame
    from prefalign.core.training.frozen_cache import frozen_cache_of
    from prefalign.core.training.packing import make_packed_pair_batches

    torch.set_num_threads(a.threads)
    path = sorted(ROOT.glob("data/05_model_input/validated_pairs.parquet/*/validated_pairs.parquet"))[-1]
    pairs = pl.read_parquet(path)
    train = (pairs.filter(pl.col("split").eq("train") & pl.col("source").is_in(SOURCES) & (pl.col("p_chosen") > 0.5))
             .sort("pair_id").head(a.train_pairs))
    held = pairs.filter(pl.col("split").eq("heldout") & (pl.col("p_chosen") != 0.5))
    held = held.filter(pl.int_range(pl.len()).shuffle(seed=0).over("source") < a.heldout_per_source).sort("pair_id")
    longer = (held["chosen"].str.len_chars() > held["rejected"].str.len_chars()).to_numpy().astype(float)
    base = bootstrap(longer)
    print(f"train pairs {train.height} ({', '.join(SOURCES)}); held-out pairs {held.height} "
          f"({dict(held.group_by('source').len().iter_rows())}); pick-the-longer {base[0]:.3f} [{base[1]:.3f}, {base[2]:.3f}]; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)

    tok = AutoTokenizer.from_pretrained(a.model)
    batches = make_packed_pair_batches(tokenize_pair_frame(tok, train, 192, 64), a.batch, tok.pad_token_id, seed=0,
                                       share_prompt=True)
    messages = held["prompt_messages"].to_list() if "prompt_messages" in held.columns else None
    params = RewardParams()
    loss_fn = make_reward_loss_fn(params)
    for lr in a.lrs:
        torch.manual_seed(0)
        model = RewardModel(build_backbone({"name_or_path": a.model, "freeze_layers": a.freeze, "cache_frozen_layers": True,
                                            "attn_implementation": "sdpa"}, tok),
                            {"head": "scalar", "max_length": 192, "max_prompt_length": 64})
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
        start = time.perf_counter()
        for step in range(1, a.steps + 1):
            model.train()
            loss, _ = loss_fn(model, batches[(step - 1) % len(batches)])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % a.eval_every == 0 or step == a.steps:
                logits = pair_logits(model.eval(), tok, held["prompt"].to_list(), held["chosen"].to_list(),
                                     held["rejected"].to_list(), batch_size=16, prompt_messages=messages)
                acc = bootstrap((logits > 0).astype(float))
                diff = (logits > 0).astype(float) - longer
                d = bootstrap(diff)
                print(f"lr {lr:g} step {step:4d} pairs seen {step * a.batch:5d}: held-out accuracy {acc[0]:.3f} "
                      f"[{acc[1]:.3f}, {acc[2]:.3f}], minus pick-the-longer {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] "
                      f"({time.perf_counter() - start:.0f} s, cache {frozen_cache_of(model.backbone).stats()['segments']} segments)",
                      flush=True)


if __name__ == "__main__":
    main()
