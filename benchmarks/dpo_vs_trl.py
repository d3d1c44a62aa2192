"""Our DPO vs TRL's DPOTrainer: same causal LM, same real pairs, same batch and steps.

    python benchmarks/dpo_vs_trl.py                        # SmolLM2-135M-Instruct if fetched, else 4 x 256; 160 real pairs
    python benchmarks/dpo_vs_trl.py --model none           # the 4 x 256 Llama (intermediate 688) from config, BPE of 2048
    python benchmarks/dpo_vs_trl.py --layers 2 --hidden 64 --intermediate 256 --steps 10

Each side in a fresh interpreter (its own peak RSS), single-threaded by default. Both start from
the same seeded LlamaForCausalLM and get the same pre-truncated texts (benchmarks/common.py).
Sigmoid DPO, beta 0.1, AdamW, constant learning rate. Both sides compute the reference
log-probs once before training; their time is reported apart ("reference pass s") and the ratio
lines are on the training steps alone, plus one line with the reference pass included.

Both sides train on the same token ids (common.pretruncate: tokenised and cut once by our rule,
with --model's tokenizer and chat template, or a BPE for the model from config); TRL gets them as
prompt_ids / chosen_ids / rejected_ids and its own tokenisation is skipped. --model DIR uses a
pretrained causal LM (default: the fetched SmolLM2-135M-Instruct when present), --lora R adapters
on both sides (TRL: peft_config; its reference is the base with adapters off).

TRL 1.16's DPOConfig: precompute_ref_log_probs is used (TRL's best on CPU: the reference forward
leaves the training step); its log-probs always go through its fused, chunked LM head
(``add_fused_lm_head``: no [tokens x vocabulary] logits), nothing to switch on. TRL runs it inside DPOTrainer's constructor, so it is timed there by
wrapping ``DPOTrainer._precompute_ref_logps``. padding_free exists but TRL 1.16 warns and falls
back to padding ("temporarily unavailable"), so it is not set; use_liger_kernel needs
liger-kernel (not installed, GPU only); train_sampling_strategy="group_by_length" cannot infer
DPO rows' lengths; instead both sides train on the same batches in the same order (ours,
length-grouped, handed to TRL through its own dataset and collator). gradient_checkpointing is off (TRL's
config defaults it on) unless --trl-gradient-checkpointing. The last line is
``ratio pairs_per_s=.. tokens_per_s=.. peak_rss=..`` (ours / TRL) for the first layout listed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RssSampler, StepClock, add_model_args, add_rates, add_run_args, feed_batches, load_line, model_dict, our_batches, pretruncate,
    measured_work, print_header, print_ratios, print_table, real_pairs, resolve_model_args, run_sides, trl_dpo_rows, trl_peft_config, trl_speed_args,
)

BETA, LR = 0.1, 1e-4


def base_model(tok, a, lora: bool = True):
    """Both sides' seeded starting policy; ours with its LoRA adapters when --lora (TRL puts on its own)."""
    from prefalign.core.models import build_causal_lm

    return build_causal_lm({**model_dict(a), **({} if lora else {"lora": None})}, tok)


def run_ours(layout: str, tok, tp, a, out: Path, rss: RssSampler) -> dict:
    from prefalign.core.policy.objectives import DPOConfig, dpo_objective, make_pairwise_loss_fn
    from prefalign.core.policy.reference import ReferenceLogprobs, compute_reference_logprobs
    from prefalign.core.training import TrainConfig, train
    from prefalign.core.training.packing import pair_batches

    cfg = TrainConfig.from_dict({
        "max_steps": a.steps, "learning_rate": LR, "lr_schedule": "constant", "eval_every": 0, "checkpoint_every": 0,
        "progress_bar": False, "max_grad_norm": 1.0, "cpu_threads": a.threads,
        "packing": layout == "packed", "share_prompt": layout == "shared", "mixed_precision": "bf16" if a.precision == "bf16" else "no",
        "cpu_malloc_mmap_threshold": a.mmap_threshold if a.mmap_threshold >= 0 else None, "cpu_malloc_trim": a.malloc_trim,
    })
    model = base_model(tok, a)
    ids = [str(i) for i in range(len(tp))]
    rss.phase("train")
    t0, c0 = time.perf_counter(), time.process_time()
    table = compute_reference_logprobs(model, pair_batches(tp, 2 * a.batch, tok.pad_token_id, None, cfg), ids)
    ref_seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    ref = ReferenceLogprobs.from_table(table, ids)
    batches = pair_batches(tp, a.batch, tok.pad_token_id, 0, cfg)
    ref_cpu_seconds = cpu_seconds
    clock = StepClock()
    clock.ours()
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(model, batches, [], make_pairwise_loss_fn(dpo_objective, DPOConfig(beta=BETA), ref), cfg, out)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return clock.apply({"seconds": seconds, "cpu_seconds": cpu_seconds, "reference_seconds": ref_seconds,
                        "reference_cpu_seconds": ref_cpu_seconds, "losses": [h["train_loss"] for h in result.history]}, a.warmup_steps)


def run_trl(tok, tp, a, out: Path, rss: RssSampler) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model = base_model(tok, a, lora=False)
    args = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=a.batch, max_steps=a.steps, learning_rate=LR,
        lr_scheduler_type="constant", beta=BETA, loss_type=["sigmoid"], max_length=None, report_to=[], logging_steps=1,
        save_strategy="no", use_cpu=True, precompute_ref_log_probs=True, precompute_ref_batch_size=2 * a.batch,
        max_grad_norm=1.0, disable_dropout=True, seed=0, dataloader_num_workers=0, **trl_speed_args(a),
    )
    timed = {}
    precompute = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *args_, **kwargs_):  # TRL's reference pass runs in the constructor: time it there
        t, c = time.perf_counter(), time.process_time()
        try:
            return precompute(self, *args_, **kwargs_)
        finally:
            timed["seconds"] = timed.get("seconds", 0.0) + time.perf_counter() - t
            timed["cpu_seconds"] = timed.get("cpu_seconds", 0.0) + time.process_time() - c

    DPOTrainer._precompute_ref_logps = timed_precompute
    # our token ids, already in TRL's tokenised format (common.trl_dpo_rows): TRL 1.16's DPOTrainer has no
    # "already tokenised" check, so its tokenisation (which would re-render prompts) is skipped here
    DPOTrainer._prepare_dataset = lambda self, dataset, *args_, **kwargs_: dataset
    rss.phase("reference")
    # an explicit reference copy: without one TRL re-loads the model by its (empty) hub name; with LoRA the
    # reference is the base model with its adapters switched off (TRL refuses both a ref_model and a peft_config)
    peft = trl_peft_config(a, "CAUSAL_LM")
    trainer = DPOTrainer(model=model, ref_model=None if peft else copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(trl_dpo_rows(tp)),
                         processing_class=tok, peft_config=peft)
    if len(trainer.train_dataset) != len(tp):
        raise SystemExit(f"TRL kept {len(trainer.train_dataset)} of {len(tp)} pairs: the batches cannot be matched")
    feed_batches(trainer, our_batches(tok, tp, a.batch, a.steps)[0])  # the same batches as ours, same order
    clock = StepClock()
    trainer.add_callback(clock.trl_callback())
    rss.phase("train")
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return clock.apply({"seconds": seconds, "cpu_seconds": cpu_seconds, "reference_seconds": timed["seconds"],
                        "reference_cpu_seconds": timed["cpu_seconds"], "kept_pairs": len(trainer.train_dataset),
                        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}, a.warmup_steps)


def child(side: str, a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    rss = RssSampler()
    rss.phase("data")
    tok, tp, over = pretruncate(real_pairs(a.n_pairs, a.pairs), a.vocab, a.max_length, a.max_prompt_length, a.model)
    rss.phase("setup")
    with tempfile.TemporaryDirectory() as tmp:
        res = run_trl(tok, tp, a, Path(tmp), rss) if side == "trl" else run_ours(side, tok, tp, a, Path(tmp), rss)
    pairs, real_tokens = measured_work(tok, tp, a)  # both sides train these batches
    add_rates(res, pairs, real_tokens, len(tp), over, rss)
    with_ref = res["seconds"] + res["reference_seconds"]
    res.update(pairs_per_s_with_reference=pairs / with_ref, tokens_per_s_with_reference=real_tokens / with_ref)
    print("RESULT " + json.dumps(res))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.set_defaults(n_pairs=160)
    add_run_args(parser, steps=20, batch=8)
    a = resolve_model_args(parser.parse_args(argv))
    if a.child:
        child(a.child, a)
        return
    layouts = [x.strip() for x in a.layouts.split(",") if x.strip()]
    print_header(a, "causal LM", "DPOTrainer, precompute_ref_log_probs=True (reference pass timed apart, as ours)")
    results = run_sides(__file__, layouts + ["trl"], list(argv if argv is not None else sys.argv[1:]), a.threads, a.rounds)
    print(f"TRL kept {results['trl']['kept_pairs']} of {results['trl']['pairs_available']} pairs; {load_line()}\n")
    print_table(results, [
        ("pairs/s", "pairs_per_s", "{:.2f}"), ("pairs/CPU-s", "pairs_per_cpu_s", "{:.2f}"), ("real tokens/s", "tokens_per_s", "{:.0f}"), ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
        ("pairs/s with reference", "pairs_per_s_with_reference", "{:.2f}"),
        ("train seconds", "seconds", "{:.1f}"), ("reference pass s", "reference_seconds", "{:.1f}"),
    ])
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    print("mean loss: " + "; ".join(f"{s} {mean(r['losses']):.4f}" for s, r in results.items()))
    print("RSS peak by phase (MB): " + "; ".join(f"{s} {r['rss_by_phase']}" for s, r in results.items()))
    print_ratios(results, layouts, extra=(("with_reference", "s_with_reference"),))


if __name__ == "__main__":
    main()
