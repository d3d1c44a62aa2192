"""Our reward training vs TRL's RewardTrainer: same tiny model, same real pairs, same batch and steps.

Each side runs in its own subprocess (clean peak-memory numbers), single-threaded (the machine's 2
cores are shared; see docs/reward.md). The same pre-truncated texts go to both (TRL would silently
DROP pairs over max_length; we truncate and count, so TRL gets our truncated texts with no limit).

Printed per side: pairs/s, real (non-padding) tokens/s, padding fraction, peak RSS, model FLOP
utilisation against the matmul peak measured in the same process, mean loss of the first and last
10 steps, and the ratio ours/TRL.

    python benchmarks/reward_vs_trl.py [--pairs PATH.parquet] [--steps 40] [--batch 16]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256, "max_position_embeddings": 512, "seed": 0}
MAX_LENGTH, MAX_PROMPT = 192, 64
LR, WARMUP = 1e-3, 3


def default_pairs() -> str:
    for pattern in ("data/05_model_input/validated_pairs.parquet/*/*.parquet", "data/03_primary/pairs.parquet/*/*.parquet"):
        found = sorted(glob.glob(str(ROOT / pattern)))
        if found:
            return found[-1]
    raise SystemExit("no pairs table found: run `kedro run --pipelines feedback` first or pass --pairs")


def measured_matmul_peak(n: int = 512, reps: int = 20) -> float:
    """FLOP/s of a float32 n x n matmul in this process (same thread count as training)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def training_flops(n_params_non_embedding: int, n_layers: int, hidden: int, tokens: float, mean_len: float) -> float:
    """6 N per token (forward + backward) + causal attention 6 L T d per token (Kaplan et al. 2020 style)."""
    return tokens * (6 * n_params_non_embedding + 6 * n_layers * mean_len * hidden)


def prepare(pairs_path: str, n_pairs: int):
    """Shared inputs: the first n_pairs non-tie train pairs, a BPE tokenizer, truncated texts."""
    import polars as pl

    from prefalign.core.models import build_tokenizer
    from prefalign.core.training.batching import tokenize_pairs

    frame = pl.read_parquet(pairs_path).filter((pl.col("split") == "train") & (pl.col("p_chosen") > 0.5)).sort("pair_id").head(n_pairs)
    x, w, l = frame["prompt"].to_list(), frame["chosen"].to_list(), frame["rejected"].to_list()
    tok = build_tokenizer({"vocab_size": 2048}, x + w + l)
    tp = tokenize_pairs(tok, x, w, l, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT)
    full = tokenize_pairs(tok, x, w, l, max_length=10**6, max_prompt_length=10**6 - 2)
    over = sum(max(len(a), len(b)) > MAX_LENGTH for a, b in zip(full.chosen, full.rejected))

    def text(seq):
        prompt = tok.decode(seq.input_ids[1 : seq.prompt_length])
        response = tok.decode(seq.input_ids[seq.prompt_length : -1] if seq.input_ids[-1] == tok.eos_token_id else seq.input_ids[seq.prompt_length :])
        return prompt, response

    rows = []
    for c, r in zip(tp.chosen, tp.rejected):
        prompt, chosen = text(c)
        _, rejected = text(r)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return tok, rows, over


def trl_model(tok):
    """TRL's model: LlamaForSequenceClassification (1 label) of the same config, seeded."""
    import torch
    from transformers import LlamaForSequenceClassification

    from prefalign.core.models.backbone import ModelConfig, small_architecture

    config = small_architecture(ModelConfig.from_dict(MODEL), tok)
    config.num_labels = 1
    torch.manual_seed(0)
    return LlamaForSequenceClassification(config)


def run_ours(tok, rows, steps: int, batch: int, out: Path) -> dict:
    import torch

    from prefalign.core.models import build_backbone
    from prefalign.core.reward.model import RewardModel
    from prefalign.core.reward.objective import make_reward_loss_fn
    from prefalign.core.reward.training import RewardParams
    from prefalign.core.training import make_pair_batches, padding_fraction, tokenize_pairs, train
    from prefalign.core.training.loop import epoch_order

    tp = tokenize_pairs(tok, [r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows], max_length=10**6, max_prompt_length=10**6 - 2)
    batches = make_pair_batches(tp, batch, tok.pad_token_id, seed=0)
    model = RewardModel(build_backbone(MODEL, tok), {"head": "scalar"})
    twin = trl_model(tok)  # start from TRL's exact initial weights, so only the batching differs
    model.backbone.load_state_dict(twin.model.state_dict())
    with torch.no_grad():
        model.head.score.weight.copy_(twin.score.weight)
        model.head.score.bias.zero_()
    cfg = {"max_steps": steps, "learning_rate": LR, "warmup_steps": WARMUP, "lr_schedule": "cosine", "weight_decay": 0.0,
           "max_grad_norm": 1.0, "eval_every": 0, "checkpoint_every": 0, "progress_bar": False, "cpu_threads": 1}
    t0 = time.perf_counter()
    result = train(model, batches, [], make_reward_loss_fn(RewardParams()), cfg, out)
    seconds = time.perf_counter() - t0
    # exactly the batches the loop trained on (its order is a function of the step)
    used = [batches[epoch_order(len(batches), 0, k // len(batches))[k % len(batches)]] for k in range(steps)]
    return {
        "seconds": seconds,
        "pairs": steps * batch,
        "real_tokens": sum(b.num_tokens for b in used),
        "padding_fraction": padding_fraction(used),
        "losses": [row["train_loss"] for row in result.history],
        "backbone": result.model.backbone,
    }


def run_trl(tok, rows, steps: int, batch: int, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model = trl_model(tok)
    args = RewardConfig(
        output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps, learning_rate=LR, warmup_steps=WARMUP,
        lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no",
        eval_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, max_length=None, seed=0,
        disable_dropout=True,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    real = total = seen = 0
    while seen < steps:  # the batches TRL trains on: its collator pads each random batch to its longest
        for b in trainer.get_train_dataloader():
            if seen == steps:
                break
            mask = b["attention_mask"]
            real, total, seen = real + int(mask.sum()), total + mask.numel(), seen + 1
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"seconds": seconds, "pairs": steps * batch, "real_tokens": real,
            "padding_fraction": 1 - real / max(1, total), "losses": losses, "backbone": model.model}


def child(which: str, pairs_path: str, steps: int, batch: int, n_pairs: int) -> None:
    import torch

    torch.set_num_threads(1)
    tok, rows, over = prepare(pairs_path, n_pairs)
    peak = measured_matmul_peak()
    with tempfile.TemporaryDirectory() as tmp:
        res = (run_ours if which == "ours" else run_trl)(tok, rows, steps, batch, Path(tmp))
    backbone = res.pop("backbone")
    emb = backbone.get_input_embeddings().weight.numel()
    n_non_emb = sum(p.numel() for p in backbone.parameters()) - emb
    mean_len = res["real_tokens"] / (2 * res["pairs"])
    flops = training_flops(n_non_emb, MODEL["num_layers"], MODEL["hidden_size"], res["real_tokens"], mean_len)
    res.update(
        pairs_per_s=res["pairs"] / res["seconds"],
        tokens_per_s=res["real_tokens"] / res["seconds"],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        mfu=flops / res["seconds"] / peak,
        matmul_peak_gflops=peak / 1e9,
        pairs_over_max_length=over,
    )
    print("RESULT " + json.dumps(res))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", default=None)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n-pairs", type=int, default=320)
    parser.add_argument("--child", choices=["ours", "trl"])
    a = parser.parse_args()
    pairs = a.pairs or default_pairs()
    if a.child:
        child(a.child, pairs, a.steps, a.batch, a.n_pairs)
        return
    results = {}
    for which in ("ours", "trl"):
        proc = subprocess.run([sys.executable, __file__, "--child", which, "--pairs", pairs, "--steps", str(a.steps), "--batch", str(a.batch), "--n-pairs", str(a.n_pairs)],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            raise SystemExit(f"{which} failed:\n{proc.stderr[-3000:]}")
        results[which] = json.loads(line[0][7:])
    o, t = results["ours"], results["trl"]
    print(f"pairs: {pairs}  ({a.n_pairs} train pairs, {o['pairs_over_max_length']} longer than {MAX_LENGTH} tokens: "
          f"we truncate and count them, TRL with max_length={MAX_LENGTH} would drop them)")
    print(f"model: Llama-style {MODEL}, batch {a.batch} pairs, {a.steps} steps, 1 thread each\n")
    rows = [
        ("pairs/s", "pairs_per_s", "{:.1f}"),
        ("real tokens/s", "tokens_per_s", "{:.0f}"),
        ("padding fraction", "padding_fraction", "{:.3f}"),
        ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
        ("MFU vs matmul peak", "mfu", "{:.3%}"),
        ("matmul peak GFLOP/s", "matmul_peak_gflops", "{:.1f}"),
        ("wall seconds", "seconds", "{:.1f}"),
    ]
    print(f"{'metric':<22}{'ours':>12}{'TRL':>12}{'ours/TRL':>10}")
    for label, key, fmt in rows:
        print(f"{label:<22}{fmt.format(o[key]):>12}{fmt.format(t[key]):>12}{o[key] / t[key] if t[key] else float('nan'):>10.2f}")
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    print(f"{'loss first 10 steps':<22}{mean(o['losses'][:10]):>12.4f}{mean(t['losses'][:10]):>12.4f}")
    print(f"{'loss last 10 steps':<22}{mean(o['losses'][-10:]):>12.4f}{mean(t['losses'][-10:]):>12.4f}")


if __name__ == "__main__":
    main()
