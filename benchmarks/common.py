"""Shared parts of the side-by-side benchmarks (reward_vs_trl.py, dpo_vs_trl.py).

- ``real_pairs``: train pairs from data/01_raw through the project's own feedback code
  (UltraFeedback single-turn + Anthropic HH multi-turn dialogues: the real length mix, long
  prompts included), or from a saved JSONL of {"prompt", "chosen", "rejected"} rows.
- ``pretruncate``: every pair tokenised and cut ONCE by our rule; both trainers get these token ids
  (TRL as pre-tokenised datasets), so neither truncates or renders prompts itself.
- ``run_sides``: each side in a fresh interpreter (its own peak RSS), results as JSON lines.
- ``RssSampler``: the process RSS over time by phase (where the peak happens).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SOURCES = ("ultrafeedback", "hh_rlhf")


SMOLLM2 = ROOT / "data/06_models/pretrained/SmolLM2-135M-Instruct"


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(SMOLLM2) if (SMOLLM2 / "config.json").exists() else "none",
                        help="a pretrained model directory (its tokenizer and weights on both sides; default: the fetched "
                             "SmolLM2-135M-Instruct when present); 'none': a random-init Llama of --layers/--hidden/... "
                             "with a BPE of --vocab trained on the pairs")
    parser.add_argument("--lora", type=int, default=0,
                        help="LoRA rank on both sides (alpha 2r, no dropout, every linear layer of the backbone); 0: full fine-tune")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=688)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048, help="BPE vocabulary trained on the pairs")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per sequence (default: 1024 with --model, prompts and responses up to 512 each as in the "
                             "shipped data; 512 for the model from config)")
    parser.add_argument("--max-prompt-length", type=int, default=None, help="default: half of --max-length")
    parser.add_argument("--n-pairs", type=int, default=320)
    parser.add_argument("--pairs", default=None, help="JSONL of prompt/chosen/rejected (default: data/01_raw via the feedback code)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16",
                        help="both sides: TRL's configs default to bf16 autocast (also on a CPU with bf16 units), "
                             "ours is training.mixed_precision; fp32 compares the two loops without it")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="TRL's configs default to gradient_checkpointing=True (a second forward per layer in the backward "
                             "pass: less memory, ~1/3 more compute); by default it is turned off here, TRL's fastest setting")
    parser.add_argument("--mmap-threshold", type=int, default=-1,
                        help="our side's training.cpu_malloc_mmap_threshold in bytes (-1: glibc's default; docs/performance.md)")
    parser.add_argument("--malloc-trim", action="store_true",
                        help="our side's training.cpu_malloc_trim: heap pages back to the OS after every step (lower RSS, slower)")


def trl_speed_args(a: argparse.Namespace) -> dict:
    """The TrainingArguments both TRL configs take from the shared options: precision and checkpointing."""
    return {"bf16": a.precision == "bf16", "gradient_checkpointing": a.trl_gradient_checkpointing}


def resolve_model_args(a: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --model: lengths, and the shape read from the directory's config."""
    a.model = None if a.model in (None, "", "none") else a.model
    if a.max_length is None:
        a.max_length = 1024 if a.model else 512
    if a.max_prompt_length is None:
        a.max_prompt_length = a.max_length // 2
    if a.model:
        config = json.loads((Path(a.model) / "config.json").read_text())
        a.layers, a.hidden, a.heads = config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]
        a.intermediate, a.vocab = config["intermediate_size"], config["vocab_size"]
    return a


def model_dict(a: argparse.Namespace) -> dict:
    """Our ModelConfig: the pretrained directory, or the random-init Llama of the shape options."""
    lora = {"lora": lora_settings(a)} if a.lora else {}
    if a.model:
        return {"name_or_path": a.model, "dtype": "float32", "seed": 0, "attn_implementation": "sdpa", **lora}
    return {"hidden_size": a.hidden, "num_layers": a.layers, "num_heads": a.heads, "intermediate_size": a.intermediate,
            "max_position_embeddings": max(512, a.max_length), "seed": 0, "attn_implementation": "sdpa", **lora}


def lora_settings(a: argparse.Namespace) -> dict:
    """Our model.lora keys for --lora r (core/models/lora.py), the same numbers as TRL's ``trl_peft_config``."""
    return {"r": a.lora, "alpha": 2 * a.lora, "dropout": 0.0, "target_modules": "all-linear"}


def trl_peft_config(a: argparse.Namespace, task_type: str):
    """peft LoraConfig for TRL's ``peft_config`` with --lora r (None for a full fine-tune)."""
    if not a.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=a.lora, lora_alpha=2 * a.lora, lora_dropout=0.0, target_modules="all-linear", task_type=task_type)


def real_pairs(n: int, path: str | None = None) -> list[dict]:
    """n train, non-tie pairs (sorted by pair_id: a fixed, source-mixed sample) as text dicts."""
    if path:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows[:n]]
    import polars as pl
    import yaml

    from prefalign.core.feedback.ingest import ingest_source
    from prefalign.core.feedback.pairs import build_pairs_table
    from prefalign.core.feedback.records import decode_records, infer_file_format

    params = yaml.safe_load((ROOT / "conf/base/parameters_feedback.yml").read_text())["feedback"]
    files = {"ultrafeedback": sorted((ROOT / "data/01_raw/ultrafeedback_sample").glob("*.jsonl")),
             "hh_rlhf": [ROOT / "data/01_raw/hh_rlhf/harmless_base_test.jsonl.gz"]}
    rows = []
    for source in SOURCES:
        records = [r for f in files[source] for r in decode_records(f.read_bytes(), str(f), infer_file_format(str(f)))]
        pair_rows, _, _ = ingest_source(source, {"records": records}, params["sources"][source])
        rows.append(pair_rows)
    pairs, _ = build_pairs_table(rows, params["split"])
    frame = pairs.filter((pl.col("split") == "train") & (pl.col("p_chosen") > 0.5)).sort("pair_id").head(n)
    return frame.select("prompt", "chosen", "rejected").to_dicts()


def pretruncate(pairs: list[dict], vocab: int, max_length: int, max_prompt_length: int, model: str | None = None):
    """(tokenizer, the pairs tokenised ONCE by our rule as ``TokenizedPairs``, sequences our rule cut).

    The tokenizer is ``model``'s when given (its chat template, if any, renders the prompts), else a
    BPE of ``vocab`` ids trained on the pairs. Both sides train on exactly these token ids: ours
    directly, TRL through datasets of ids (``trl_reward_rows``, ``trl_dpo_rows``), so neither
    truncates nor renders anything itself and a chat template cannot make the sides differ."""
    from prefalign.core.models import build_tokenizer
    from prefalign.core.training.batching import tokenize_pairs

    x, w, l = ([p[k] for p in pairs] for k in ("prompt", "chosen", "rejected"))
    tok = build_tokenizer({"name_or_path": model} if model else {"vocab_size": vocab}, x + w + l)
    cut = tokenize_pairs(tok, x, w, l, max_length=max_length, max_prompt_length=max_prompt_length)
    return tok, cut, cut.truncation.truncated_prompts + cut.truncation.truncated_responses


def trl_reward_rows(tp) -> list[dict]:
    """TRL RewardTrainer's pre-tokenised format (it then skips its own tokenisation): our full sequences."""
    return [{"chosen_ids": c.input_ids, "rejected_ids": r.input_ids} for c, r in zip(tp.chosen, tp.rejected)]


def trl_dpo_rows(tp) -> list[dict]:
    """TRL DPOTrainer's tokenised format (prompt_ids, chosen_ids, rejected_ids) of our sequences: the
    prompt is the pair's common prompt (pair-consistent truncation gives both sides the same one)."""
    rows = []
    for c, r in zip(tp.chosen, tp.rejected):
        p = 0
        while p < min(c.prompt_length, r.prompt_length) and c.input_ids[p] == r.input_ids[p]:
            p += 1
        rows.append({"prompt_ids": c.input_ids[:p], "chosen_ids": c.input_ids[p:], "rejected_ids": r.input_ids[p:]})
    return rows


def our_batches(tok, tp, batch: int, steps: int) -> tuple[list[list[int]], int]:
    """(the pair indices of each of our first ``steps`` batches, the real tokens in them).

    Batches are length-grouped (seed 0) in the training loop's epoch order; TRL is fed the same
    ones (``feed_batches``). Real tokens count each pair as its two full sequences (prompt and
    response, both sides): the common unit for both trainers, whatever layout computes them.
    """
    from prefalign.core.training.batching import make_pair_batches
    from prefalign.core.training.loop import epoch_order

    batches = make_pair_batches(tp, batch, tok.pad_token_id, seed=0)
    order = [[int(i) for i in batches[epoch_order(len(batches), 0, k // len(batches))[k % len(batches)]].pair_index] for k in range(steps)]
    return order, sum(len(tp.chosen[i]) + len(tp.rejected[i]) for b in order for i in b)


def feed_batches(trainer, batches: list[list[int]]):
    """Make a transformers Trainer train on exactly ``batches`` (lists of dataset row indices), through
    its own dataset and collator; returns the DataLoader."""
    from torch.utils.data import DataLoader

    base = trainer.get_train_dataloader()
    loader = DataLoader(base.dataset, batch_sampler=batches, collate_fn=base.collate_fn)
    trainer.get_train_dataloader = lambda: loader
    return loader


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """RSS every 20 ms in a thread; ``phase(name)`` starts a phase; ``report()`` = peak MB per phase."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.current = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mb()
            self.peaks[self.current] = max(self.peaks.get(self.current, 0.0), value)
            time.sleep(0.02)

    def phase(self, name: str) -> None:
        value = rss_mb()
        self.peaks[self.current] = max(self.peaks.get(self.current, 0.0), value)
        self.current = name

    def report(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {k: round(v, 1) for k, v in self.peaks.items()}


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


def run_sides(script: str, sides: list[str], argv: list[str], threads: int, rounds: int = 1) -> dict[str, dict]:
    """Each side in a fresh interpreter (``--child SIDE``); its RESULT line parsed.

    With ``rounds`` > 1 the sides alternate (a, b, a, b, ...) and each side's runs are merged by
    ``merge_rounds`` (median step times); the load average is recorded before and after every run."""
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for k in range(rounds):
        for side in sides:
            before = os.getloadavg()
            proc = subprocess.run([sys.executable, script, *argv, "--child", side], capture_output=True, text=True, env=env)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                raise SystemExit(f"side {side} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            res = json.loads(line[-1][len("RESULT "):])
            res["load_before_after"] = [round(before[0], 2), round(os.getloadavg()[0], 2)]
            runs[side].append(res)
            steps = " ".join(f"{t:.1f}" for t in res.get("step_seconds", []))
            print(f"  round {k + 1} {side}: {res['pairs_per_s']:.3f} pairs/s, peak RSS {res['peak_rss_mb']:.0f} MB, "
                  f"step s [{steps}], 1-min load {res['load_before_after'][0]:.2f} -> {res['load_before_after'][1]:.2f}", flush=True)
    return {side: merge_rounds(r) for side, r in runs.items()}


def merge_rounds(runs: list[dict]) -> dict:
    """One side's runs as one result: each step's median time over the runs, the rates recomputed
    from their sum (the same measured steps, so the same pairs and tokens), the largest peak RSS."""
    import statistics

    if len(runs) == 1:
        return runs[0]
    res = dict(runs[0])
    steps = [statistics.median(ts) for ts in zip(*(r["step_seconds"] for r in runs))]
    seconds = sum(steps)
    res.update(step_seconds=steps, seconds=seconds, pairs_per_s=res["pairs"] / seconds, tokens_per_s=res["real_tokens"] / seconds,
               peak_rss_mb=max(r["peak_rss_mb"] for r in runs), load_before_after=[r["load_before_after"] for r in runs],
               rounds=len(runs))
    for per in ("pairs_per_cpu_s", "tokens_per_cpu_s"):
        res[per] = statistics.median(r[per] for r in runs)
    return res


class StepClock:
    """Wall-clock time of each training step, for either loop: ``ours()`` patches our loop's
    progress bar (one ``update`` per optimizer step), ``trl_callback()`` is a transformers
    TrainerCallback (step begin to step end). ``measured(warmup)`` = the times after the first
    ``warmup`` steps."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []

    def ours(self) -> None:
        import prefalign.core.training.loop as loop

        clock, base = self, loop.Progress

        class TimedProgress(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                self._tick = (time.perf_counter(), time.process_time())

            def update(self, steps: int = 1, **values: float) -> None:
                now = (time.perf_counter(), time.process_time())
                clock.seconds.append(now[0] - self._tick[0])
                clock.cpu_seconds.append(now[1] - self._tick[1])
                self._tick = now
                super().update(steps, **values)

        loop.Progress = TimedProgress

    def trl_callback(self):
        from transformers import TrainerCallback

        clock = self

        class Timed(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                self._tick = (time.perf_counter(), time.process_time())

            def on_step_end(self, args, state, control, **kwargs):
                clock.seconds.append(time.perf_counter() - self._tick[0])
                clock.cpu_seconds.append(time.process_time() - self._tick[1])

        return Timed()

    def apply(self, res: dict, warmup: int) -> dict:
        """With ``warmup`` > 0: ``res``'s seconds and cpu_seconds become the sums over the steps
        after the first ``warmup`` (the whole run's are kept as run_seconds, run_cpu_seconds)."""
        res["step_seconds"] = self.seconds[warmup:]
        if warmup <= 0:
            return res
        if warmup >= len(self.seconds):
            raise SystemExit(f"--warmup-steps {warmup} leaves none of the {len(self.seconds)} steps measured: lower it or raise --steps")
        res.update(run_seconds=res["seconds"], run_cpu_seconds=res["cpu_seconds"],
                   seconds=sum(self.seconds[warmup:]), cpu_seconds=sum(self.cpu_seconds[warmup:]))
        return res


def add_run_args(parser: argparse.ArgumentParser, steps: int, batch: int) -> None:
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per side, alternated (ours, TRL, ours, TRL, ...): on a loaded machine both sides see "
                             "the same load; each step's time is the median over the rounds")
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="first steps of each run left out of the rates (allocator and autograd warm-up); "
                             "0: the whole run's wall time, as before")
    parser.add_argument("--layouts", default="shared,padded", help="our layouts, comma-separated: shared, packed, padded")
    parser.add_argument("--child", default=None)


def measured_work(tok, tp, a: argparse.Namespace) -> tuple[int, int]:
    """(pairs, real tokens) of the steps the rates count: all ``--steps`` batches, or those after
    ``--warmup-steps`` (both sides train the same batches in the same order)."""
    order, _ = our_batches(tok, tp, a.batch, a.steps)
    kept = order[a.warmup_steps:]
    return sum(len(b) for b in kept), sum(len(tp.chosen[i]) + len(tp.rejected[i]) for b in kept for i in b)


def add_rates(res: dict, pairs: int, real_tokens: float, rows: int, truncated: int, rss: "RssSampler") -> dict:
    """The per-second and per-CPU-second rates and the run facts every side's RESULT line carries."""
    res.update(pairs=pairs, real_tokens=real_tokens, pairs_per_s=pairs / res["seconds"], tokens_per_s=real_tokens / res["seconds"],
               pairs_per_cpu_s=pairs / res["cpu_seconds"], tokens_per_cpu_s=real_tokens / res["cpu_seconds"],
               peak_rss_mb=peak_rss_mb(), sequences_truncated=truncated, pairs_available=rows, rss_by_phase=rss.report())
    return res


def print_ratios(results: dict[str, dict], layouts: list[str], extra: tuple[tuple[str, str], ...] = ()) -> None:
    """One ratio line per further layout, then ``extra`` (label, per) lines for the first layout,
    its CPU-time line, and last the plain ratio line of the first layout."""
    for layout in layouts[1:]:
        print(ratio_line(results[layout], results["trl"], layout))
    for label, per in (*extra, ("cpu_time", "cpu_s")):
        print(ratio_line(results[layouts[0]], results["trl"], label, per=per))
    print(ratio_line(results[layouts[0]], results["trl"]))


def print_table(results: dict[str, dict], rows: list[tuple[str, str, str]]) -> None:
    sides = list(results)
    print(f"{'metric':<24}" + "".join(f"{s:>14}" for s in sides))
    for label, key, fmt in rows:
        print(f"{label:<24}" + "".join(f"{fmt.format(results[s][key]) if key in results[s] else '-':>14}" for s in sides))


def ratio_line(ours: dict, trl: dict, label: str = "", per: str = "s") -> str:
    """ours / TRL; ``per="cpu_s"`` divides by the process's CPU seconds instead of wall seconds (a
    load-robust comparison on a shared CPU: each side runs one compute thread)."""
    r = lambda k: ours[k] / trl[k] if trl.get(k) else float("nan")  # noqa: E731
    tag = f"[{label}]" if label else ""
    return (f"ratio{tag} pairs_per_s={r(f'pairs_per_{per}'):.2f} tokens_per_s={r(f'tokens_per_{per}'):.2f} "
            f"peak_rss={r('peak_rss_mb'):.2f}")


def print_header(a: argparse.Namespace, kind: str, trl: str) -> None:
    origin = f"{Path(a.model).name} ({a.model}), its weights and tokenizer" if a.model else "Llama-style, random init, BPE"
    tuning = f"LoRA r={a.lora} (alpha {2 * a.lora}, all linear layers)" if a.lora else "full fine-tune"
    print(f"model: {kind} {origin}: {a.layers} layers x {a.hidden} hidden, intermediate {a.intermediate}, {a.heads} heads, "
          f"vocab {a.vocab}; {tuning}; batch {a.batch} pairs, {a.steps} steps, {a.threads} thread(s) per side", flush=True)
    print(f"data: up to {a.n_pairs} real train, non-tie pairs ({a.pairs or 'data/01_raw: UltraFeedback + HH-RLHF via the feedback code'}), "
          f"pre-truncated to {a.max_length} tokens per sequence (prompt >= {a.max_prompt_length})")
    print(f"TRL: {trl}, bf16={a.precision == 'bf16'}, gradient_checkpointing={a.trl_gradient_checkpointing}; "
          f"ours: mixed_precision={'bf16' if a.precision == 'bf16' else 'no'}; {load_line()}", flush=True)


def load_line() -> str:
    return "load average (1, 5, 15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
