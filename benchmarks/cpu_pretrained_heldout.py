"""Reward models of the `cpu_pretrained` environment on SOURCES they were not trained on.

Run after `kedro run --env cpu_pretrained --pipelines reward` (which trains on the sources listed
in conf/cpu_pretrained/parameters_reward.yml, leaving out hh_rlhf and the pandalm sources):

    python benchmarks/cpu_pretrained_heldout.py [--sources hh_rlhf pandalm_human] [--splits heldout]

For every held-out pair (every split by default: none of these sources was seen in training; with
the shipped feedback.split.heldout_sources all their prompts are in split `heldout`; ties
p_chosen = 0.5 left out because they have no right answer) it prints pair accuracy (strict:
a tie in the model's logit counts as wrong, methods.md s5) with a 95% percentile bootstrap
interval over pairs, next to the pick-the-longer-answer baseline (characters) on the same pairs,
plus each model's training time and real tokens/s from its metrics JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from prefalign.core.models.checkpoint import load_bundle
from prefalign.core.reward.scoring import pair_logits
from prefalign.core.schema import ALL_SPLITS

MODELS = ("bt", "mmpo", "gpm")


def latest(pattern: str) -> Path:
    found = sorted(Path(".").glob(pattern))
    if not found:
        raise FileNotFoundError(f"nothing matches {pattern}; run the pipelines first (see this file's docstring)")
    return found[-1]


def bootstrap_accuracy(correct: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy and its 95% percentile-bootstrap interval (pairs resampled with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(correct), size=(n_boot, len(correct)))
    means = correct[draws].mean(axis=1)
    return float(correct.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="+", default=["hh_rlhf", "pandalm_human"])
    parser.add_argument("--splits", nargs="+", default=list(ALL_SPLITS), choices=ALL_SPLITS,
                        help="splits of validated_pairs to score (default: all; the held-out sources sit in `heldout`)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--max-pairs", type=int, default=None, help="cap (by pair_id) for a quick look")
    args = parser.parse_args()

    pairs = pl.read_parquet(latest("data/05_model_input/validated_pairs.parquet/*/validated_pairs.parquet"))
    held = (pairs.filter(pl.col("source").is_in(args.sources) & pl.col("split").is_in(args.splits) & (pl.col("p_chosen") > 0.5))
            .sort("pair_id"))
    if args.max_pairs:
        held = held.head(args.max_pairs)
    print(f"held-out pairs: {held.height} ({dict(held.group_by('source').len().iter_rows())}), splits {args.splits}")
    if held.height == 0:
        present = dict(pairs.filter(pl.col("source").is_in(args.sources)).group_by("split").len().iter_rows())
        raise SystemExit(f"no pair of sources {args.sources} in splits {args.splits} (their pairs by split: {present or 'none'}); "
                         "choose --sources / --splits accordingly")
    longer = (held["chosen"].str.len_chars() > held["rejected"].str.len_chars()).to_numpy().astype(float)
    acc, lo, hi = bootstrap_accuracy(longer)
    print(f"{'pick the longer answer':>24}: accuracy {acc:.3f} [{lo:.3f}, {hi:.3f}]")
    for name in args.models:
        model_dir = latest(f"data/06_models/reward_{name}/model/*/model")
        metrics = json.loads(latest(f"data/08_reporting/reward_{name}/metrics.json/*/metrics.json").read_text())
        bundle = load_bundle(model_dir)
        z = pair_logits(bundle.model, bundle.tokenizer, held["prompt"].to_list(), held["chosen"].to_list(), held["rejected"].to_list())
        correct = (z > 0).astype(float)
        acc, lo, hi = bootstrap_accuracy(correct)
        per_source = {s: round(float(correct[(held["source"] == s).to_numpy()].mean()), 3) for s in args.sources if (held["source"] == s).any()}
        print(f"{'reward_' + name:>24}: accuracy {acc:.3f} [{lo:.3f}, {hi:.3f}] per source {per_source}; "
              f"in-distribution val_accuracy {metrics.get('val_accuracy', float('nan')):.3f}; "
              f"train {metrics['train_seconds']:.0f} s, {metrics['steps']} steps, {metrics['tokens_per_second']:.0f} tokens/s")


if __name__ == "__main__":
    main()
