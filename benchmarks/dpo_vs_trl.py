"""Our DPO step vs TRL's DPOTrainer: same tiny model, same real pairs, same batch, same steps, this CPU.

    python benchmarks/dpo_vs_trl.py [--pairs 128] [--batch 8] [--steps 20] [--threads 1]

Both start from the same random-init Llama-style model and tokenizer; both use sigmoid DPO with
beta 0.1, AdamW at the same learning rate, no gradient clipping difference that matters for
speed. Ours precomputes the reference log-probs once (that pass is timed and reported
separately and included in the total); TRL is measured with its default on-the-fly reference
forward AND with precompute_ref_log_probs=True. Reported: pairs/s, non-padding tokens/s (ours:
counted from our batches; TRL: the same pairs' token count, tokenised by our rule), peak RSS,
and the ratio. Also GPO sampling throughput (responses/s, tokens/s), and GPM scoring time for
K = 2..16 responses per prompt against a pairwise model's K(K-1) forward passes. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import time
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prefalign.core.models import build_causal_lm, build_tokenizer  # noqa: E402
from prefalign.core.policy.generation import SamplingConfig, sample_responses  # noqa: E402
from prefalign.core.policy.objectives import DPOConfig, dpo_objective, make_pairwise_loss_fn  # noqa: E402
from prefalign.core.policy.reference import ReferenceLogprobs, compute_reference_logprobs  # noqa: E402
from prefalign.core.training.batching import make_pair_batches, tokenize_pairs  # noqa: E402
from prefalign.core.training.loop import TrainConfig, train  # noqa: E402

MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "max_position_embeddings": 512}
MAX_LENGTH, MAX_PROMPT = 192, 64


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_pairs(n: int) -> pl.DataFrame:
    """Real pairs: the UltraFeedback file (prompt / chosen / rejected as text), full when
    scripts/download_raw_data.py put it in data/raw_full, else the shipped sample."""
    root = Path(__file__).resolve().parents[1]
    path = root / "data/raw_full/ultrafeedback_sample/train_clean.jsonl"
    if not path.exists():
        path = root / "data/01_raw/ultrafeedback_sample/train_clean.jsonl"
    frame = pl.read_ndjson(path, infer_schema_length=None)

    def text(v):
        return v if isinstance(v, str) else (v[-1]["content"] if isinstance(v, list) else str(v))

    rows = [{"prompt": text(r["prompt"]), "chosen": text(r["chosen"]), "rejected": text(r["rejected"])} for r in frame.head(n).iter_rows(named=True)]
    return pl.DataFrame(rows)


def ours(pairs: pl.DataFrame, tokenizer, model, batch: int, steps: int, lr: float) -> dict:
    tok = tokenize_pairs(tokenizer, pairs["prompt"].to_list(), pairs["chosen"].to_list(), pairs["rejected"].to_list(),
                         max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT)
    batches = make_pair_batches(tok, batch, tokenizer.pad_token_id, seed=0)
    t0 = time.perf_counter()
    table = compute_reference_logprobs(model, make_pair_batches(tok, 32, tokenizer.pad_token_id, seed=None), [str(i) for i in range(len(tok))])
    ref_seconds = time.perf_counter() - t0
    ref = ReferenceLogprobs.from_table(table, [str(i) for i in range(len(tok))])
    cfg = TrainConfig(max_steps=steps, learning_rate=lr, lr_schedule="constant", eval_every=0, checkpoint_every=0, progress_bar=False, max_grad_norm=None)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(model, batches, [], make_pairwise_loss_fn(dpo_objective, DPOConfig(beta=0.1), ref), cfg, tmp)
        seconds = time.perf_counter() - t0
    tokens = sum(batches[i % len(batches)].num_tokens for i in range(steps))  # approx: loop order differs, same multiset per epoch
    return {"train_s": seconds, "ref_s": ref_seconds, "pairs": steps * batch, "tokens": tokens, "final_loss": sum(r["train_loss"] for r in result.history) / len(result.history)}


def trl_run(pairs: pl.DataFrame, tokenizer, model, batch: int, steps: int, lr: float, precompute: bool) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir="/tmp/prefalign_bench_trl", per_device_train_batch_size=batch, max_steps=steps, learning_rate=lr,
        lr_scheduler_type="constant", beta=0.1, loss_type=["sigmoid"], max_length=MAX_LENGTH, report_to=[], logging_steps=steps,
        save_strategy="no", use_cpu=True, precompute_ref_log_probs=precompute, dataset_num_proc=None, max_grad_norm=1e9,
        disable_dropout=True, seed=0,
    )
    # an explicit reference copy: without one TRL tries to re-load the model by its (empty) hub name
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args,
                         train_dataset=Dataset.from_polars(pairs), processing_class=tokenizer)
    t0 = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t0
    logged = [r for r in trainer.state.log_history if "num_tokens" in r]
    tokens = float(logged[-1]["num_tokens"]) if logged else float("nan")  # TRL's own non-padding count
    return {"train_s": seconds, "pairs": steps * batch, "final_loss": out.training_loss, "tokens": tokens,
            "train_pairs_kept": len(trainer.train_dataset)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pairs = load_pairs(1000)
    tokenizer = build_tokenizer({"vocab_size": 1024}, pairs["prompt"].to_list() + pairs["chosen"].to_list() + pairs["rejected"].to_list())
    # Only pairs that fit max_length untruncated, so both trainers see the same tokens (TRL's
    # truncation rule differs from ours and drops "fully truncated" pairs).
    def fits(x: str, y: str) -> bool:
        return len(tokenizer(x)["input_ids"]) + len(tokenizer(y)["input_ids"]) + 2 <= MAX_LENGTH
    pairs = pairs.filter([fits(x, c) and fits(x, r) for x, c, r in pairs.select("prompt", "chosen", "rejected").iter_rows()]).head(a.pairs)
    base = build_causal_lm(MODEL, tokenizer)
    rows = []
    o = ours(pairs, tokenizer, copy.deepcopy(base), a.batch, a.steps, 1e-3)
    tok_per_pair = o["tokens"] / o["pairs"]  # fallback for TRL's token count
    total = o["train_s"] + o["ref_s"]
    rows.append(("prefalign (ref precomputed, timed in)", o["pairs"] / total, o["tokens"] / total, o["final_loss"]))
    for precompute in (False, True):
        try:
            t = trl_run(pairs, tokenizer, copy.deepcopy(base), a.batch, a.steps, 1e-3, precompute)
            tps = t["tokens"] / t["train_s"] if t["tokens"] == t["tokens"] else tok_per_pair * t["pairs"] / t["train_s"]
            rows.append((f"TRL DPOTrainer (precompute_ref={precompute})", t["pairs"] / t["train_s"], tps, t["final_loss"]))
            print(f"TRL kept {t['train_pairs_kept']} of {len(pairs)} pairs after its own truncation/filtering")
        except Exception as exc:  # report, do not hide: the table says TRL did not run
            rows.append((f"TRL DPOTrainer (precompute_ref={precompute}) FAILED: {type(exc).__name__}: {str(exc)[:80]}", float("nan"), float("nan"), float("nan")))
    print(f"{pairs.height} UltraFeedback pairs (untruncated at {MAX_LENGTH} tokens), batch {a.batch}, {a.steps} steps, {a.threads} thread(s), model {MODEL}")
    print(f"{'run':<48} {'pairs/s':>9} {'tokens/s':>10} {'loss*':>8} {'ratio':>7}")
    for name, pps, tps, loss in rows:
        print(f"{name:<48} {pps:9.2f} {tps:10.0f} {loss:8.4f} {rows[0][1] / pps if pps == pps else float('nan'):7.2f}")
    print("loss* = mean training loss over all steps (TRL's train_loss); ratio = our pairs/s over the row's")
    print(f"ours: reference pass {o['ref_s']:.2f}s, training {o['train_s']:.2f}s; peak RSS of this process {peak_rss_mb():.0f} MB")

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
