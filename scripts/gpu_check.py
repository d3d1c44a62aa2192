"""GPU check: reward and DPO training at real shapes, padded vs packed vs prompt-shared, TRL beside.

Three steps (scripts/gpu_check.sh runs them):

    python scripts/gpu_check.py export            # on the CPU side (needs polars): real pairs -> JSONL of token ids
    python scripts/gpu_check.py run               # on the GPU: the table (torch + transformers + accelerate only)
    python scripts/gpu_check.py run --dry-run     # on a CPU, tiny sizes, a few steps (the tests run this)

The model (``--model``, default ``auto``): the real SmolLM2-135M-Instruct weights when its
directory (data/06_models/pretrained/SmolLM2-135M-Instruct, 540 MB) is on the machine, else a
Qwen2.5-0.5B-shaped model from config (896 hidden, 24 layers, 14 heads, 2 KV heads, intermediate
4864, vocabulary 151,936, tied embeddings; random init). ``--model smollm2`` without the weights
builds SmolLM2's shape from the config.json that ``export`` copies (random init: the same speed).
``export`` writes the pairs twice: BPE ids for the Qwen shape (``pairs.jsonl``) and, when the
SmolLM2 tokenizer is here, its ids by its chat template (``pairs_smollm2.jsonl``).

``run`` imports only torch, transformers, accelerate, numpy and prefalign.core.training (no polars,
kedro; TRL is run side by side only when importable: carry its wheel). It prints: the measured bf16
matmul peak; per (task, layout): real tokens/s, pairs/s, MFU against that peak, peak GPU memory,
padding fraction; TRL's RewardTrainer / DPOTrainer on the same batches (layout ``trl``); the
packed-vs-padded equality on the device; an FSDP run (accelerate, 1 process) that checkpoints
at step 3, reloads it in a new run and checks that steps 4-6 repeat; and, with 2+ GPUs, the same
run in 2 processes with FSDP2 (the loop's fully_shard path, sharded checkpoint; docs/distributed.md),
compared step by step with the 1-process run (skipped with a message on fewer GPUs).
"""

from __future__ import annotations

from types import SimpleNamespace

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = ROOT / "scripts" / "gpu_data" / "pairs.jsonl"
SMOLLM2_DIR = ROOT / "data" / "06_models" / "pretrained" / "SmolLM2-135M-Instruct"
SMOLLM2_DATA = DATA.with_name("pairs_smollm2.jsonl")  # ids of SmolLM2's tokenizer and chat template
SMOLLM2_CONFIG = DATA.with_name("smollm2_config.json")  # its config.json: the shape without the weights

# Qwen/Qwen2.5-0.5B config.json (architecture only; random init, nothing downloaded)
QWEN25_05B = {
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu", "attention_dropout": 0.0,
}
TINY = {**QWEN25_05B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048, "vocab_size": 8192}  # >= the export's BPE ids


def export(n: int, vocab: int, max_length: int, max_prompt_length: int, out: Path, model_dir: Path | None = None) -> None:
    """Real pairs from data/01_raw (benchmarks/common.py), tokenised by our rule with a BPE of ``vocab``
    ids; with ``model_dir``, by that model's tokenizer (and chat template) instead."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import real_pairs

    from prefalign.core.models import build_tokenizer
    from prefalign.core.training.batching import tokenize_pairs

    pairs = real_pairs(n)
    x, w, l = ([p[k] for p in pairs] for k in ("prompt", "chosen", "rejected"))
    tok = build_tokenizer({"name_or_path": str(model_dir)} if model_dir else {"vocab_size": vocab}, x + w + l)
    tp = tokenize_pairs(tok, x, w, l, max_length=max_length, max_prompt_length=max_prompt_length)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for c, r in zip(tp.chosen, tp.rejected):
            f.write(json.dumps({"chosen": c.input_ids, "chosen_prompt": c.prompt_length, "rejected": r.input_ids,
                                "rejected_prompt": r.prompt_length}) + "\n")
    print(f"wrote {len(tp)} pairs ({sum(len(c) + len(r) for c, r in zip(tp.chosen, tp.rejected))} tokens, "
          f"max id {max(max(c.input_ids) for c in tp.chosen + tp.rejected)}, pad {tok.pad_token_id}) to {out}")


def load_pairs(path: Path):
    import numpy as np

    from prefalign.core.training.batching import TokenizedPairs, TokenizedSequence

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return TokenizedPairs([TokenizedSequence(r["chosen"], r["chosen_prompt"]) for r in rows],
                          [TokenizedSequence(r["rejected"], r["rejected_prompt"]) for r in rows],
                          np.ones(len(rows)), np.full(len(rows), np.nan))


def matmul_peak(device, dtype, n: int, reps: int) -> float:
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def qwen_config(shape: dict, attn: str):
    from transformers import Qwen2Config

    config = Qwen2Config(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config._attn_implementation = attn
    return config


def model_config(shape: dict, attn: str):
    """A transformers config of ``shape``: a config.json's dict (with ``model_type``), or the Qwen2 keys."""
    from transformers import AutoConfig

    if "model_type" not in shape:
        return qwen_config(shape, attn)
    config = AutoConfig.for_model(**{k: v for k, v in shape.items() if k not in ("architectures", "transformers_version")})
    config._attn_implementation = attn
    return config


def build(task: str, shape: dict, attn: str, dtype, weights: str | None = None, classifier: bool = False):
    """The model of ``task`` (reward: RewardModel, or with ``classifier`` a transformers sequence
    classifier for TRL; dpo: a causal LM) of ``shape``, random init (seed 0), or ``weights``' directory."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    from prefalign.core.reward.model import RewardModel

    torch.manual_seed(0)
    config = model_config(shape, attn)
    auto = AutoModelForCausalLM if task == "dpo" else AutoModelForSequenceClassification if classifier else AutoModel
    extra = {"num_labels": 1} if classifier else {}
    if weights:
        model = auto.from_pretrained(weights, dtype=dtype, attn_implementation=attn, **extra)
    else:
        if classifier:
            config.num_labels = 1
        model = auto.from_config(config, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = 0
    if task == "dpo" or classifier:
        return model
    return RewardModel(model, {"head": "scalar"}).to(dtype)


def train_flops(shape: dict, tokens: float, mean_len: float) -> float:
    """6 N per token (non-embedding parameters, forward + backward) + causal attention 6 L T d (Kaplan et al. 2020)."""
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    n = layers * (2 * h * h + 2 * h * kv + 3 * h * i)
    return tokens * (6 * n + 6 * layers * mean_len * h)


def one_run(task: str, layout: str, tp, shape: dict, a, device, dtype, out: Path) -> dict:
    """Our loop (core/training/loop.py) for a.steps steps; DPO includes its reference pass."""
    import torch

    from prefalign.core.policy.objectives import DPOConfig, dpo_objective, make_pairwise_loss_fn
    from prefalign.core.policy.reference import ReferenceLogprobs, score_pair_batches
    from prefalign.core.reward.objectives import make_reward_loss_fn
    from prefalign.core.training.loop import TrainConfig, epoch_order, train
    from prefalign.core.training.packing import any_padding_fraction, pair_batches

    attn = "sdpa"
    cfg = TrainConfig(max_steps=a.steps, learning_rate=1e-5, lr_schedule="constant", eval_every=0, checkpoint_every=0,
                      progress_bar=False, mixed_precision="bf16" if device.type == "cuda" else "no",
                      packing=layout == "packed", share_prompt=layout == "shared")
    model = build(task, shape, attn, dtype, a.weights).to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    batches = pair_batches(tp, a.batch, 0, 0, cfg)
    t0 = time.perf_counter()
    if task == "dpo":
        index, chosen, rejected = score_pair_batches(model, pair_batches(tp, 2 * a.batch, 0, None, cfg))
        order = torch.argsort(index)
        ref = ReferenceLogprobs(chosen[order], rejected[order])
        loss_fn = make_pairwise_loss_fn(dpo_objective, DPOConfig(beta=0.1), ref)
    else:
        loss_fn = make_reward_loss_fn(SimpleNamespace(soft_targets=False, margin_offset=False, centering=0.0))
    result = train(model, batches, [], loss_fn, cfg, out)
    sync(device)
    seconds = time.perf_counter() - t0
    used = [batches[epoch_order(len(batches), 0, k // len(batches))[k % len(batches)]] for k in range(a.steps)]
    tokens = sum(b.num_tokens for b in used)
    pairs = sum(len(b) for b in used)
    return {"task": task, "layout": layout, "seconds": seconds, "tokens": tokens, "pairs": pairs,
            "tokens_per_s": tokens / seconds, "pairs_per_s": pairs / seconds, "padding": any_padding_fraction(used),
            "flops": train_flops(shape, tokens, tokens / (2 * pairs)) * (4 / 3 if task == "dpo" else 1),  # + reference forward
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
            "last_loss": result.history[-1]["train_loss"]}


def equality_on_device(tp, shape: dict, device, dtype) -> str:
    """Packed and shared log-probs vs padded on the device, in fp32 (the CPU tests' check, here)."""
    import torch

    from prefalign.core.policy.reference import score_pair_batches
    from prefalign.core.training.loop import TrainConfig
    from prefalign.core.training.packing import pair_batches

    small = {**shape, "num_hidden_layers": 2}
    model = build("dpo", small, "sdpa", torch.float32).to(device)
    sub = type(tp)(tp.chosen[:16], tp.rejected[:16], tp.p_chosen[:16], tp.margin[:16])
    padded = score_pair_batches(model, pair_batches(sub, 8, 0, None, None))
    worst = []
    for layout in ("packed", "shared"):
        cfg = TrainConfig(packing=layout == "packed", share_prompt=layout == "shared")
        other = score_pair_batches(model, pair_batches(sub, 8, 0, None, cfg))
        diff = torch.cat([(other[1] - padded[1]).abs(), (other[2] - padded[2]).abs()])
        scale = torch.cat([padded[1].abs(), padded[2].abs()])
        worst.append(f"{layout} max |diff| {float(diff.max()):.2e} (relative {float((diff / scale).max()):.1e})")
    return "sequence log-prob equality vs padded (fp32, 2 layers; sums over whole responses): " + ", ".join(worst)


def trl_run(task: str, tp, shape: dict, a, device, out: Path) -> dict | None:
    """TRL's RewardTrainer / DPOTrainer on the same batches as ours (None when trl is not importable).

    The same pre-tokenised ids (TRL skips its tokenisation), the same length-grouped batches in the
    same order (benchmarks/common.feed_batches), bf16 on CUDA, no gradient checkpointing; DPO with
    ``precompute_ref_log_probs`` (its reference pass is timed with the training, as ours is) and
    TRL's default fused LM-head log-probs."""
    try:
        import trl
    except ImportError:
        return None
    import copy

    import torch
    from datasets import Dataset

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import feed_batches, our_batches, trl_dpo_rows, trl_reward_rows

    tok = pad_tokenizer(int(shape["vocab_size"]))
    common = dict(output_dir=str(out), per_device_train_batch_size=a.batch, max_steps=a.steps, learning_rate=1e-5,
                  lr_scheduler_type="constant", max_length=None, report_to=[], logging_steps=1, save_strategy="no",
                  use_cpu=device.type != "cuda", bf16=device.type == "cuda", gradient_checkpointing=False, disable_dropout=True,
                  seed=0, dataloader_num_workers=0, max_grad_norm=1.0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # timed from the built model, as ours: the trainer's construction is in (for DPO it holds the reference pass)
    model = build("dpo" if task == "dpo" else "reward", shape, "sdpa", torch.float32, a.weights, classifier=task != "dpo").to(device)
    sync(device)
    t0 = time.perf_counter()
    if task == "dpo":
        args = trl.DPOConfig(beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=True, precompute_ref_batch_size=2 * a.batch, **common)
        trl.DPOTrainer._prepare_dataset = lambda self, dataset, *args_, **kwargs_: dataset  # already our ids (benchmarks/dpo_vs_trl.py)
        trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(trl_dpo_rows(tp)),
                                 processing_class=tok)
    else:
        args = trl.RewardConfig(**common)
        trainer = trl.RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(trl_reward_rows(tp)), processing_class=tok)
    order, _ = our_batches(tok, tp, a.batch, a.steps)
    feed_batches(trainer, order)
    trainer.train()
    sync(device)
    seconds = time.perf_counter() - t0
    tokens = sum(len(tp.chosen[i]) + len(tp.rejected[i]) for b in order for i in b)
    pairs = sum(len(b) for b in order)
    return {"task": task, "layout": "trl", "seconds": seconds, "tokens": tokens, "pairs": pairs, "tokens_per_s": tokens / seconds,
            "pairs_per_s": pairs / seconds, "padding": float("nan"),
            "flops": train_flops(shape, tokens, tokens / (2 * pairs)) * (4 / 3 if task == "dpo" else 1),
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
            "trl_version": trl.__version__}


def pad_tokenizer(vocab: int):
    """A stand-in tokenizer for TRL's collators (pad id 0, as our batches): the ids are already made."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>")),
                                  pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.model_max_length = 10**6
    return tok


FSDP_STEPS = 6


def fsdp_child(a) -> None:
    """Under `accelerate launch` (FSDP): reward training with a checkpoint at step 3, then a second run resuming from it."""
    import torch

    from prefalign.core.reward.objectives import make_reward_loss_fn
    from prefalign.core.training.loop import TrainConfig, latest_checkpoint, make_accelerator, train
    from prefalign.core.training.packing import pair_batches

    shape = TINY if a.dry_run else {**QWEN25_05B, "num_hidden_layers": 4}
    tp = load_pairs(Path(a.data))
    cfg = TrainConfig(max_steps=FSDP_STEPS, learning_rate=1e-4, lr_schedule="constant", eval_every=0, checkpoint_every=3,
                      progress_bar=False, packing=True, share_prompt=True, keep_checkpoints=1)
    batches = pair_batches(tp, 8, 0, 0, cfg)
    work = Path(a.fsdp_dir) / "run"
    losses, resumed_from = {}, None
    for name in ("first", "resumed"):  # the same directory: the second run finds the step-3 checkpoint
        acc = make_accelerator("bf16" if torch.cuda.is_available() else "no")
        model = build("reward", shape, "sdpa", torch.float32)
        result = train(model, batches, [], make_reward_loss_fn(SimpleNamespace(soft_targets=False, margin_offset=False, centering=0.0)), cfg, work, acc)
        losses[name] = [h["train_loss"] for h in result.history]
        if name == "first":
            ckpt = latest_checkpoint(work)
        else:
            resumed_from = result.resumed_from_step
    if acc.is_main_process:
        from prefalign.core.training.sharding import use_fsdp2

        diff = max(abs(x - y) for x, y in zip(losses["first"][3:], losses["resumed"][3:]))
        print("FSDP " + json.dumps({"distributed_type": str(acc.distributed_type), "processes": acc.num_processes,
                                    "fsdp2_fully_shard": use_fsdp2(acc.num_processes), "checkpoint": ckpt.name if ckpt else None,
                                    "resumed_from_step": resumed_from, "max_loss_diff_steps_4_6": diff,
                                    "losses": losses["first"]}))


def fsdp_run(a, num_processes: int = 1) -> str:
    """Launch ``fsdp_child`` with conf/accelerate/fsdp.yaml in ``num_processes`` processes (on GPUs)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "conf/accelerate/fsdp.yaml"),
               "--num_processes", str(num_processes), "--main_process_port", str(free_port()),
               __file__, "fsdp-child", "--data", a.data, "--fsdp-dir", tmp, *(["--dry-run"] if a.dry_run else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("FSDP ")]
    return line[-1] if line else f"FSDP run failed (exit {proc.returncode}): {proc.stderr[-1500:]}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp2_two_gpu_check(a, one_process_line: str, gpus: int) -> str:
    """The FSDP run in 2 processes (the loop's FSDP2 path) against the 1-process line; skipped below 2 GPUs."""
    if gpus < 2:
        return f"FSDP2 2-GPU: skipped ({gpus} GPU{'s' if gpus != 1 else ''} here; needs 2)"
    line = fsdp_run(a, 2)
    if not line.startswith("FSDP {") or not one_process_line.startswith("FSDP {"):
        return f"FSDP2 2-GPU: failed: {line}"
    two, one = json.loads(line[5:]), json.loads(one_process_line[5:])
    diff = max(abs(x - y) for x, y in zip(one["losses"], two["losses"]))
    return "FSDP2 2-GPU " + json.dumps({**{k: two[k] for k in ("processes", "fsdp2_fully_shard", "checkpoint",
                                                             "resumed_from_step", "max_loss_diff_steps_4_6")},
                                        "max_loss_diff_vs_1_gpu_bf16": diff})


def choose_model(a) -> tuple[dict, str]:
    """(shape dict, its description) for ``--model`` and set ``a.weights`` / ``a.data`` to match.

    auto: SmolLM2's weights when their directory is here, else the Qwen2.5-0.5B shape; smollm2: the
    weights if here, else its shape from the exported config.json; qwen: the Qwen shape; a directory:
    its weights (its ids must be what ``--data`` holds)."""
    a.weights = None
    if a.dry_run:
        return TINY, "tiny (dry run)"
    choice = a.model
    if choice == "auto":
        choice = "smollm2" if (SMOLLM2_DIR / "model.safetensors").exists() else "qwen"
    if choice == "qwen":
        return QWEN25_05B, "Qwen2.5-0.5B shape (random init)"
    if choice == "smollm2":
        if a.data == str(DATA):
            a.data = str(SMOLLM2_DATA)
        if (SMOLLM2_DIR / "model.safetensors").exists():
            a.weights = str(SMOLLM2_DIR)
            return json.loads((SMOLLM2_DIR / "config.json").read_text()), "SmolLM2-135M-Instruct (real weights)"
        if not SMOLLM2_CONFIG.exists():
            raise SystemExit(f"--model smollm2: neither the weights ({SMOLLM2_DIR}) nor {SMOLLM2_CONFIG} (written by export) are here")
        return json.loads(SMOLLM2_CONFIG.read_text()), "SmolLM2-135M-Instruct shape from its config.json (random init)"
    a.weights = choice
    return json.loads((Path(choice) / "config.json").read_text()), f"{Path(choice).name} (weights from {choice})"


def run(a) -> None:
    import torch
    import transformers

    device = torch.device("cuda" if torch.cuda.is_available() and not a.dry_run else "cpu")
    dtype = torch.float32  # master weights fp32; the loop autocasts to bf16 on CUDA
    shape, name = choose_model(a)
    tp = load_pairs(Path(a.data))
    if a.n_pairs:
        tp = type(tp)(tp.chosen[: a.n_pairs], tp.rejected[: a.n_pairs], tp.p_chosen[: a.n_pairs], tp.margin[: a.n_pairs])
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {len(tp)} pairs ({a.data}); model {name} "
          f"{shape['num_hidden_layers']}x{shape['hidden_size']}, batch {a.batch} pairs, {a.steps} steps", flush=True)
    peak = matmul_peak(device, torch.bfloat16 if device.type == "cuda" else torch.float32, 512 if a.dry_run else 8192, 5 if a.dry_run else 10)
    print(f"measured matmul peak ({'bf16' if device.type == 'cuda' else 'fp32'}): {peak / 1e12:.4f} TFLOP/s"
          + (" (dry run: a tiny model's MFU is not meaningful)" if a.dry_run else ""), flush=True)
    print(equality_on_device(tp, shape, device, dtype), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in ("reward", "dpo"):
            for layout in ("padded", "packed", "shared"):
                r = one_run(task, layout, tp, shape, a, device, dtype, Path(tmp) / f"{task}_{layout}")
                r["mfu"] = r["flops"] / r["seconds"] / peak
                rows.append(r)
                print(f"  {task} {layout}: {r['tokens_per_s']:.0f} tokens/s", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if not a.no_trl:
                r = trl_run(task, tp, shape, a, device, Path(tmp) / f"{task}_trl")
                if r is None:
                    print("  TRL: not importable here (carry its wheel for the side-by-side): no TRL rows", flush=True)
                else:
                    r["mfu"] = r["flops"] / r["seconds"] / peak
                    rows.append(r)
                    print(f"  {task} trl ({r['trl_version']}): {r['tokens_per_s']:.0f} tokens/s", flush=True)
    print(f"\n{'task':<8}{'layout':<8}{'tokens/s':>11}{'pairs/s':>9}{'MFU':>8}{'peak GB':>9}{'padding':>9}{'vs padded':>10}")
    for r in rows:
        base = next(x for x in rows if x["task"] == r["task"] and x["layout"] == "padded")
        print(f"{r['task']:<8}{r['layout']:<8}{r['tokens_per_s']:>11.0f}{r['pairs_per_s']:>9.2f}{r['mfu']:>8.1%}"
              f"{r['peak_mem_gb']:>9.2f}{r['padding']:>9.3f}{r['tokens_per_s'] / base['tokens_per_s']:>9.2f}x")
    for task in ("reward", "dpo"):
        ours, trl = ([r for r in rows if r["task"] == task and r["layout"] == x] for x in ("shared", "trl"))
        if ours and trl:
            print(f"ratio[{task}, shared / TRL] pairs_per_s={ours[0]['pairs_per_s'] / trl[0]['pairs_per_s']:.2f} "
                  f"peak_mem={ours[0]['peak_mem_gb'] / trl[0]['peak_mem_gb']:.2f}")
    if device.type == "cuda":
        one = fsdp_run(a)
        print(one, flush=True)
        print(fsdp2_two_gpu_check(a, one, torch.cuda.device_count()))
    else:  # the same checkpoint/resume logic in this process, without FSDP (which needs the GPU run's launcher)
        print("FSDP: skipped on CPU (the GPU run launches it with conf/accelerate/fsdp.yaml, 1 process); without FSDP:")
        with tempfile.TemporaryDirectory() as tmp:
            a.fsdp_dir = tmp
            fsdp_child(a)
        print(fsdp2_two_gpu_check(a, "", 0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["export", "run", "fsdp-child"])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 2 steps")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n-pairs", type=int, default=None)
    parser.add_argument("--fsdp-dir", default=None)
    parser.add_argument("--model", default="auto",
                        help="auto (SmolLM2's weights when here, else the Qwen2.5-0.5B shape), smollm2, qwen, or a model directory")
    parser.add_argument("--no-trl", action="store_true", help="leave out TRL's side-by-side rows")
    parser.add_argument("--no-smollm2-export", action="store_true", help="export: only the BPE pairs")
    parser.add_argument("--export-pairs", type=int, default=512)
    parser.add_argument("--export-vocab", type=int, default=8000)
    parser.add_argument("--export-max-length", type=int, default=1024)
    parser.add_argument("--export-max-prompt-length", type=int, default=512)
    a = parser.parse_args(argv)
    if a.command == "export":
        export(a.export_pairs, a.export_vocab, a.export_max_length, a.export_max_prompt_length, Path(a.data))
        if (SMOLLM2_DIR / "tokenizer.json").exists() and not a.no_smollm2_export:  # its ids and shape, for --model smollm2
            smollm2 = Path(a.data).with_name(SMOLLM2_DATA.name)
            export(a.export_pairs, a.export_vocab, a.export_max_length, a.export_max_prompt_length, smollm2, SMOLLM2_DIR)
            smollm2.with_name(SMOLLM2_CONFIG.name).write_text((SMOLLM2_DIR / "config.json").read_text())
    elif a.command == "fsdp-child":
        fsdp_child(a)
    else:
        if a.dry_run:
            a.steps, a.batch, a.n_pairs = min(a.steps, 2), min(a.batch, 4), a.n_pairs or 16
        run(a)


if __name__ == "__main__":
    main()
