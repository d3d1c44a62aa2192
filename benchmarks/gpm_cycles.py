"""Why the default GPM does not learn the synthetic cycles: the product's reward core on chosen data mixes.

    kedro run --pipelines feedback,validation          # once: validated_pairs + the cyclic triples
    nice python benchmarks/gpm_cycles.py '{"sources": ["synthetic_cyclic"]}'
    nice python benchmarks/gpm_cycles.py '{"source_weights": {"synthetic_cyclic": 4}}'

The argument is a JSON object deep-merged over `reward.defaults` + `reward.<objective>` of
conf/base/parameters_reward.yml, their `data` and `objective` keys lifted to the top as RewardParams
reads them (any RewardParams key, e.g. `source_weights`), plus `objective` (bt | mmpo | gpm, default gpm) and
`sources` (keep only these sources' pairs). Training is the product's `train_reward_model` (the
shared loop); scoring is `core/reward/pair_scorers.pair_logits`; the metric is evaluation's
`evaluate_triples`. It prints the train mix, token lengths of the triples, cyclic consistency on
train and held-out (test) triples, per-source test accuracy, and the GPM gate and embeddings of
A, B, C for a few test triples. Results and their reading: docs/reward.md, "GPM and the cycles".
Not collected by pytest.
"""

from __future__ import annotations

import glob
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from prefalign.core.evaluation import evaluate, pair_scorers  # noqa: E402
from prefalign.core.reward.scoring import pair_logits, response_embeddings  # noqa: E402
from prefalign.core.config_utils import deep_merge, lift_sub_blocks  # noqa: E402
from prefalign.core.reward.train_reward import (  # noqa: E402
    RewardParams, fit_tokenizer, select_pairs, train_reward_model, weight_sources,
)
from prefalign.core.training.batching import tokenize_sequences  # noqa: E402


def latest(dataset: str) -> pl.DataFrame:
    """The newest version of a versioned parquet dataset written by the feedback/validation pipelines."""
    files = sorted(glob.glob(str(ROOT / "data" / dataset / "*" / "*.parquet")))
    if not files:
        raise SystemExit(f"no data/{dataset}: run `kedro run --pipelines feedback,validation` first")
    return pl.read_parquet(files[-1])


def main(args: dict) -> None:
    objective = args.pop("objective", "gpm")
    sources = args.pop("sources", None)
    conf = yaml.safe_load((ROOT / "conf/base/parameters_reward.yml").read_text())["reward"]
    merged = deep_merge(lift_sub_blocks(deep_merge(conf["defaults"], conf[objective])), args)  # RewardParams is flat
    merged["training"] = {**merged["training"], "progress_bar": False, "checkpoint_every": 0}
    params = RewardParams.from_dict(merged)
    pairs = latest("05_model_input/validated_pairs.parquet")
    triples = latest("03_primary/synthetic_cyclic_triples.parquet")
    if sources:
        pairs = pairs.filter(pl.col("source").is_in(sources))
    train, _ = select_pairs(pairs, "train", params, params.max_train_pairs)
    val, _ = select_pairs(pairs, "val", params, params.max_val_pairs)
    mix = dict(weight_sources(train, params.source_weights).group_by("source").len().sort("source").iter_rows())
    print("train pairs per source (after source_weights):", mix)
    tokenizer = fit_tokenizer(train, params)
    test_triples = triples.filter(pl.col("split") == "test")
    for column in ("response_a", "response_b", "response_c"):
        lengths = [len(s) for s in tokenize_sequences(tokenizer, test_triples["prompt"].to_list(), test_triples[column].to_list(),
                                                      params.max_length, params.max_prompt_length)]
        print(f"tokens (prompt + {column}): mean {np.mean(lengths):.0f}, max {max(lengths)} (max_length {params.max_length})")
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = train_reward_model(train, val, tokenizer, params, tmp)
    print(f"trained {out.metrics['steps']} steps in {time.time() - start:.0f} s; val_accuracy {out.metrics.get('val_accuracy'):.3f}")
    print("val_accuracy curve:", [(row["step"], round(row["val_accuracy"], 3)) for row in out.curve if "val_accuracy" in row])
    model = out.bundle.model

    def scorer(prompts, first, second, prompt_messages=None):
        return pair_logits(model, tokenizer, list(prompts), list(first), list(second), prompt_messages=prompt_messages)

    for split in ("train", "test"):
        scored = pair_scorers.score_triples(triples.filter(pl.col("split") == split), scorer)
        means = [round(float(scored[c].mean()), 2) for c in ("logit_ab", "logit_bc", "logit_ca")]
        print(f"{split} triples: {evaluate.evaluate_triples(scored)}; mean logit A>B, B>C, C>A: {means}")
    test = pair_scorers.score_pairs(pairs.filter(pl.col("split") == "test"), scorer).with_columns(right=pl.col("logit") > 0)
    per_source = {s: round(a, 3) for s, a in test.group_by("source").agg(pl.col("right").mean()).sort("source").iter_rows()}
    print("test pair accuracy per source:", per_source)
    if model.is_gpm:
        for row in test_triples.head(3).iter_rows(named=True):
            v, gate = response_embeddings(model, tokenizer, [row["prompt"]] * 3, [row["response_a"], row["response_b"], row["response_c"]])
            print("gate", np.round(gate[0], 2).tolist(), "v(A), v(B), v(C)", np.round(v, 2).tolist())


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
