"""2 CPU processes (gloo, started by the node's launcher under `accelerate launch`) vs 1 process.

Same params, same pairs, same GLOBAL batch (8 pairs; each process takes 4). Prints the per-step
train losses, val loss, the largest weight difference and the largest pair-logit difference.

Stated tolerance: losses within 1e-5, pair logits within 1e-4, weights within 1e-4 -- except the
scalar head's bias, which pairwise losses cannot see (r_w - r_l cancels it): its gradient is
float noise around 0, and Adam rescales that noise to a full-size step, so it drifts in both runs
without changing any prediction. Not a pytest test: starting two torch processes takes ~1 min on
this 2-core machine, over the suite's time budget.

    python benchmarks/reward_multiprocess.py
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from prefalign.core.objectives.train_objective import launch  # noqa: E402
from prefalign.core.reward.scoring import pair_logits  # noqa: E402
from prefalign.core.config_utils import deep_merge  # noqa: E402
from prefalign.core.reward.train_reward import RewardParams, fit_tokenizer, select_pairs, train_reward_model  # noqa: E402
from tests.reward.helpers import TINY_MODEL, toy_pairs_frame  # noqa: E402

PARAMS = {
    "soft_targets": True, "max_length": 48, "max_prompt_length": 24, "batch_size": 8, "eval_batch_size": 16,
    "tokenizer": {"vocab_size": 300}, "model": TINY_MODEL,
    "training": {"max_steps": 6, "learning_rate": 3e-3, "warmup_steps": 1, "eval_every": 3, "checkpoint_every": 0, "progress_bar": False},
}


def main() -> int:
    pairs = toy_pairs_frame(64, 16)
    single = RewardParams.from_dict(PARAMS)
    double = RewardParams.from_dict(deep_merge(PARAMS, {"num_processes": 2}))
    train, _ = select_pairs(pairs, "train", single, None, False)
    val, _ = select_pairs(pairs, "val", single, None, False)
    tokenizer = fit_tokenizer(train, single)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        one = train_reward_model(train, val, tokenizer, single, Path(tmp) / "one", "mmpo")
        t1 = time.perf_counter()
        two = launch("reward_mmpo", {"params": asdict(double), "output_dir": str(Path(tmp) / "two")}, {"train": train, "val": val},
                     tokenizers={"tokenizer": tokenizer}, num_processes=2, work_dir=Path(tmp) / "launch")
        t2 = time.perf_counter()
    args = (val["prompt"].to_list(), val["chosen"].to_list(), val["rejected"].to_list())
    logits_one = pair_logits(one.bundle.model, one.bundle.tokenizer, *args)
    logits_two = pair_logits(two.bundle.model, two.bundle.tokenizer, *args)
    weight_diff = {
        name: float((a - b).abs().max())
        for (name, a), (_, b) in zip(one.bundle.model.state_dict().items(), two.bundle.model.state_dict().items())
    }
    seen = {k: v for k, v in weight_diff.items() if k != "head.score.bias"}
    print(f"{'step':>4} {'loss 1 proc':>12} {'loss 2 proc':>12} {'|diff|':>9}")
    curve_one, curve_two = one.training_curve.to_dicts(), two.training_curve.to_dicts()
    for a, b in zip(curve_one, curve_two):
        print(f"{a['step']:>4} {a['train_loss']:>12.6f} {b['train_loss']:>12.6f} {abs(a['train_loss'] - b['train_loss']):>9.2e}")
    loss_diff = max(abs(a["train_loss"] - b["train_loss"]) for a, b in zip(curve_one, curve_two))
    print(f"processes: {one.metrics['num_processes']} vs {two.metrics['num_processes']}")
    print(f"val_loss: {one.metrics['val_loss']:.6f} vs {two.metrics['val_loss']:.6f}")
    print(f"max |train loss diff| = {loss_diff:.2e} (tol 1e-5)")
    print(f"max |pair logit diff| on val = {np.abs(logits_one - logits_two).max():.2e} (tol 1e-4)")
    print(f"max |weight diff| (all but head bias) = {max(seen.values()):.2e} (tol 1e-4); head bias diff = {weight_diff.get('head.score.bias', 0):.2e}")
    print(f"wall: 1 process {t1 - t0:.1f}s, 2 processes (incl. launch) {t2 - t1:.1f}s")
    ok = loss_diff < 1e-5 and np.abs(logits_one - logits_two).max() < 1e-4 and max(seen.values()) < 1e-4
    print("MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
