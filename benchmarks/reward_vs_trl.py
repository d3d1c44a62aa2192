"""Our reward training vs TRL's RewardTrainer: same model, same real pairs, same batch and steps.

    python benchmarks/reward_vs_trl.py                       # SmolLM2-135M-Instruct if fetched, else 4 x 256; 320 real pairs
    python benchmarks/reward_vs_trl.py --model none          # the 4 x 256 Llama (intermediate 688) from config, BPE of 2048
    python benchmarks/reward_vs_trl.py --layers 2 --hidden 64 --intermediate 256 --steps 10

Each side runs in a fresh interpreter (its own peak RSS), single-threaded by default (the CPU is
shared). Both start from the same initial weights (TRL's sequence classifier: --model's weights or
a seeded Llama from config, its score head seeded; ours copies them) and train on the same token
ids (benchmarks/common.py pretruncate; TRL gets chosen_ids / rejected_ids and skips its own
tokenisation), so only the batching, layout and loop differ. --lora R puts adapters on both
sides (TRL: peft_config, task SEQ_CLS). Ours runs in each layout of ``--layouts`` (padded = length-grouped
rows with padding; packed = training.packing; shared = training.share_prompt); the LAST line is
``ratio pairs_per_s=.. tokens_per_s=.. peak_rss=..`` (ours / TRL) for the first layout listed.

Both sides train on the same batches in the same order (ours: length-grouped; TRL is handed
them through its own dataset and collator), so pairs/s compare the same work and the loss
curves agree. TRL 1.16's RewardConfig has no padding_free and no precompute option;
use_liger_kernel needs the liger-kernel package (not installed, GPU only); gradient_checkpointing
(its config's default) is turned off unless --trl-gradient-checkpointing, TRL's fastest setting.
"""

from __future__ import annotations

from types import SimpleNamespace

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RssSampler, StepClock, add_model_args, add_rates, add_run_args, feed_batches, load_line, measured_matmul_peak, measured_work, model_dict, our_batches,
    pretruncate, print_header, print_ratios, print_table, real_pairs, resolve_model_args, run_sides, trl_peft_config, trl_reward_rows, trl_speed_args,
)

LR, WARMUP = 1e-3, 3


def trl_model(tok, model: dict):
    """A sequence classifier (1 label) of the same backbone, its score head seeded: both sides' initial weights.
    ``model`` is our ModelConfig dict: a pretrained directory (``name_or_path``) or the small Llama's shape."""
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

    from prefalign.core.models.backbone import ModelConfig, small_architecture

    torch.manual_seed(0)
    if model.get("name_or_path"):
        classifier = AutoModelForSequenceClassification.from_pretrained(
            model["name_or_path"], num_labels=1, dtype=torch.float32, attn_implementation="sdpa")
        classifier.config.pad_token_id = tok.pad_token_id
        return classifier
    config = small_architecture(ModelConfig.from_dict(model), tok)
    config.num_labels = 1
    config._attn_implementation = "sdpa"
    return LlamaForSequenceClassification(config)


def run_ours(layout: str, tok, tp, a, out: Path, rss: RssSampler) -> dict:
    import torch

    from prefalign.core.models import build_backbone
    from prefalign.core.reward.model import RewardModel
    from prefalign.core.reward.objectives import make_reward_loss_fn
    from prefalign.core.training import TrainConfig, train
    from prefalign.core.training.loop import epoch_order
    from prefalign.core.training.packing import any_padding_fraction, pair_batches

    cfg = TrainConfig.from_dict({
        "max_steps": a.steps, "learning_rate": LR, "warmup_steps": min(WARMUP, a.steps - 1), "lr_schedule": "cosine", "weight_decay": 0.0,
        "max_grad_norm": 1.0, "eval_every": 0, "checkpoint_every": 0, "progress_bar": False, "cpu_threads": a.threads,
        "packing": layout == "packed", "share_prompt": layout == "shared",
        "mixed_precision": "bf16" if a.precision == "bf16" else "no",
        "cpu_malloc_mmap_threshold": a.mmap_threshold if a.mmap_threshold >= 0 else None, "cpu_malloc_trim": a.malloc_trim,
    })
    batches = pair_batches(tp, a.batch, tok.pad_token_id, 0, cfg)
    model = RewardModel(build_backbone({**model_dict(a), "lora": None}, tok), {"head": "scalar"})
    twin = trl_model(tok, model_dict(a))  # TRL's exact initial weights, so only batching and loop differ
    model.backbone.load_state_dict(twin.model.state_dict())
    if a.lora:  # adapters after the copy, seeded as ours always are (TRL's peft draws its own A matrices)
        from prefalign.core.models.lora import adapt_for_training

        model.backbone = adapt_for_training(model.backbone, model_dict(a), causal_lm=False, seed=0)
    with torch.no_grad():
        model.head.score.weight.copy_(twin.score.weight)
        if model.head.score.bias is not None:  # the head is bias-free now (exports as transformers score layer)
            model.head.score.bias.zero_()
    del twin
    used = [epoch_order(len(batches), 0, k // len(batches))[k % len(batches)] for k in range(a.steps)]
    rss.phase("train")
    clock = StepClock()
    clock.ours()
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(model, batches, [], make_reward_loss_fn(SimpleNamespace(soft_targets=False, margin_offset=False, centering=0.0)), cfg, out)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return clock.apply({"seconds": seconds, "cpu_seconds": cpu_seconds, "padding_fraction": any_padding_fraction([batches[k] for k in used]),
                        "losses": [h["train_loss"] for h in result.history], "backbone": result.model.backbone}, a.warmup_steps)


def run_trl(tok, tp, a, out: Path, rss: RssSampler) -> dict:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model = trl_model(tok, model_dict(a))
    args = RewardConfig(
        output_dir=str(out), per_device_train_batch_size=a.batch, max_steps=a.steps, learning_rate=LR, warmup_steps=min(WARMUP, a.steps - 1),
        lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no",
        eval_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, max_length=None, seed=0,
        disable_dropout=True, **trl_speed_args(a),
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(trl_reward_rows(tp)), processing_class=tok,
                            peft_config=trl_peft_config(a, "SEQ_CLS"))
    # the same length-grouped batches as ours, in the same order, through TRL's own dataset and collator
    loader = feed_batches(trainer, our_batches(tok, tp, a.batch, a.steps)[0])
    real = total = 0
    for b in loader:  # what TRL computes: its collator pads each batch to its longest
        mask = b["attention_mask"]
        real, total = real + int(mask.sum()), total + mask.numel()
    clock = StepClock()
    trainer.add_callback(clock.trl_callback())
    rss.phase("train")
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return clock.apply({"seconds": seconds, "cpu_seconds": cpu_seconds, "padding_fraction": 1 - real / max(1, total),
                        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
                        "backbone": model.model if hasattr(model, "model") else model}, a.warmup_steps)


def child(side: str, a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    rss = RssSampler()
    rss.phase("data")
    tok, tp, over = pretruncate(real_pairs(a.n_pairs, a.pairs), a.vocab, a.max_length, a.max_prompt_length, a.model)
    rss.phase("matmul_peak")
    peak = measured_matmul_peak()
    rss.phase("setup")
    with tempfile.TemporaryDirectory() as tmp:
        res = run_trl(tok, tp, a, Path(tmp), rss) if side == "trl" else run_ours(side, tok, tp, a, Path(tmp), rss)
    backbone = res.pop("backbone")
    pairs, real_tokens = measured_work(tok, tp, a)  # both sides train these batches
    add_rates(res, pairs, real_tokens, len(tp), over, rss)
    n_non_emb = sum(p.numel() for p in backbone.parameters()) - backbone.get_input_embeddings().weight.numel()
    per_param = 4 if a.lora else 6  # frozen weights (LoRA): forward and input gradients, no weight gradients
    flops = real_tokens * (per_param * n_non_emb + 6 * a.layers * real_tokens / (2 * pairs) * a.hidden)  # Kaplan et al. 2020 style
    res.update(mfu=flops / res["seconds"] / peak, matmul_peak_gflops=peak / 1e9)
    print("RESULT " + json.dumps(res))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    add_run_args(parser, steps=30, batch=16)
    a = resolve_model_args(parser.parse_args(argv))
    if a.child:
        child(a.child, a)
        return
    forward = [x for x in (argv if argv is not None else sys.argv[1:])]
    layouts = [x.strip() for x in a.layouts.split(",") if x.strip()]
    print_header(a, "reward model", "RewardTrainer fed our batches")
    results = run_sides(__file__, layouts + ["trl"], forward, a.threads, a.rounds)
    print(f"pairs: {results['trl']['pairs_available']}; sequences truncated by our rule before both sides saw them: "
          f"{results['trl']['sequences_truncated']}; {load_line()}\n")
    print_table(results, [
        ("pairs/s", "pairs_per_s", "{:.2f}"), ("pairs/CPU-s", "pairs_per_cpu_s", "{:.2f}"), ("real tokens/s", "tokens_per_s", "{:.0f}"),
        ("padding fraction", "padding_fraction", "{:.3f}"), ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
        ("MFU vs matmul peak", "mfu", "{:.2%}"), ("matmul GFLOP/s", "matmul_peak_gflops", "{:.1f}"),
        ("train seconds", "seconds", "{:.1f}"),
    ])
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    print("loss first/last 5 steps: " + "; ".join(f"{s} {mean(r['losses'][:5]):.4f}/{mean(r['losses'][-5:]):.4f}" for s, r in results.items()))
    print("RSS peak by phase (MB): " + "; ".join(f"{s} {r['rss_by_phase']}" for s, r in results.items()))
    print_ratios(results, layouts)


if __name__ == "__main__":
    main()
