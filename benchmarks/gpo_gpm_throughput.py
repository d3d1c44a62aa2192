"""GPO sampling throughput and GPM scoring scaling (K responses: K forwards vs a pairwise model's K(K-1)).

    python benchmarks/gpo_gpm_throughput.py [--pairs 64]

Split out of the former dpo_vs_trl.py (which is now the DPO side-by-side only). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prefalign.core.models import build_causal_lm, build_tokenizer  # noqa: E402
from prefalign.core.policy.generation import SamplingConfig, sample_responses  # noqa: E402

MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "max_position_embeddings": 512}
MAX_LENGTH, MAX_PROMPT = 192, 64


def load_pairs(n: int) -> pl.DataFrame:
    """Real pairs: UltraFeedback sample from the shared data (prompt / chosen / rejected as text)."""
    path = Path(__file__).resolve().parents[1] / "data/01_raw/ultrafeedback_sample/train_clean.jsonl"
    frame = pl.read_ndjson(path, infer_schema_length=None)

    def text(v):
        return v if isinstance(v, str) else (v[-1]["content"] if isinstance(v, list) else str(v))

    rows = [{"prompt": text(r["prompt"]), "chosen": text(r["chosen"]), "rejected": text(r["rejected"])} for r in frame.head(n).iter_rows(named=True)]
    return pl.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64)
    a = ap.parse_args()
    pairs = load_pairs(a.pairs)
    tokenizer = build_tokenizer({"vocab_size": 1024}, pairs["prompt"].to_list() + pairs["chosen"].to_list() + pairs["rejected"].to_list())
    base = build_causal_lm(MODEL, tokenizer)
    model = copy.deepcopy(base)
    prompts = [[tokenizer.bos_token_id] + tokenizer.encode(x)[-MAX_PROMPT:] for x in pairs["prompt"].to_list()[:16]]
    cfg = SamplingConfig(samples_per_prompt=5, max_new_tokens=48, batch_size=40, top_p=0.95)
    t0 = time.perf_counter()
    gens = sample_responses(model, tokenizer, prompts, cfg)
    s = time.perf_counter() - t0
    print(f"GPO sampling: {gens.height} responses in {s:.2f}s = {gens.height / s:.1f} responses/s, {gens['n_tokens'].sum() / s:.0f} new tokens/s")
    gpm_scaling(pairs)


def gpm_scaling(pairs: pl.DataFrame, n_prompts: int = 8) -> None:
    """GPM table (K forwards per prompt) vs a pairwise model's K(K-1) forwards of "A then B" texts."""
    from prefalign.core.models import build_backbone
    from prefalign.core.models.checkpoint import ModelBundle
    from prefalign.core.policy.preference import preference_table_fn
    from prefalign.core.reward.model import HeadConfig, RewardModel
    from prefalign.core.reward.scoring import response_rewards

    texts = pairs["chosen"].to_list() + pairs["rejected"].to_list()
    tokenizer = build_tokenizer({"vocab_size": 1024}, texts)
    head = {"max_length": MAX_LENGTH, "max_prompt_length": MAX_PROMPT}
    gpm = RewardModel(build_backbone(MODEL, tokenizer), HeadConfig.from_dict({"head": "gpm", **head})).eval()
    pairwise = RewardModel(build_backbone(MODEL, tokenizer), HeadConfig.from_dict({"head": "scalar", "max_length": 2 * MAX_LENGTH, "max_prompt_length": MAX_PROMPT})).eval()
    table = preference_table_fn(ModelBundle(gpm, tokenizer), batch_size=32)
    prompts = pairs["prompt"].to_list()[:n_prompts]
    print(f"\nScoring {n_prompts} prompts x K responses (responses cut to 400 chars)")
    print(f"{'K':>3} {'GPM s':>8} {'GPM fwd':>8} {'pairwise s':>11} {'pair fwd':>9} {'ratio':>6}")
    for k in (2, 4, 8, 16):
        groups = [[texts[(p * 16 + i) % len(texts)][:400] for i in range(k)] for p in range(n_prompts)]
        t0 = time.perf_counter()
        table(prompts, groups)
        gpm_s = time.perf_counter() - t0
        pair_prompts = [x for x, g in zip(prompts, groups) for i in range(k) for j in range(k) if i != j]
        pair_texts = [g[i] + "\n[vs]\n" + g[j] for g in groups for i in range(k) for j in range(k) if i != j]
        t0 = time.perf_counter()
        response_rewards(pairwise, tokenizer, pair_prompts, pair_texts, batch_size=32)
        pair_s = time.perf_counter() - t0
        print(f"{k:>3} {gpm_s:8.2f} {n_prompts * k:>8} {pair_s:11.2f} {len(pair_texts):>9} {pair_s / gpm_s:6.1f}")


if __name__ == "__main__":
    main()
