"""Peak memory of a reward run whose pairs come from the on-disk token cache, at 10k and 4M pairs.

    python benchmarks/token_cache_rss.py                      # 10,000 and 4,000,000 pairs, 20 steps
    python benchmarks/token_cache_rss.py --sizes 10000 200000 --steps 20
    python benchmarks/token_cache_rss.py --sizes 10000 4000000 --tokenise-max 10000 --identical-every 100

Per size, on a fresh work folder (deleted at the end unless --keep):
1. synthetic train pairs (prompt, chosen, rejected, p_chosen, margin) written to parquet in chunks
   of 100k rows (never all in memory; pyarrow writer);
2. the token cache built from ``pl.scan_parquet`` (``build_token_cache``: streaming read, tokenised
   in chunks of --chunk-rows) in its own process: wall time, peak RSS, size on disk;
3. a reward BT run (``train_reward_model``) on the same LazyFrame with ``token_cache_dir`` set, in
   its own process: --steps steps of --batch-size pairs (a slice of the first epoch), tiny Llama from
   config, tokenizer trained on the first 10k pairs (the same for every size). The run hashes the
   pairs table (finds the cache), opens it (ids and per-pair values are read when a batch needs
   them), groups ALL pairs by length and trains. Wall time and peak RSS.

Sizes above --tokenise-max get a cache of random ids with real lengths (``phase_synth``); with
--identical-every K, every K-th pair of it is flagged identical, so the run drops them and keeps a
row index (as a real table with identical pairs does).

Peak RSS is the process's maximum resident set (VmHWM), so each phase runs in a fresh interpreter.
Prints one table row per size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("the a of to and in is it you that he was for on are with as I his they be at one have this from or had by "
         "word but what some we can out other were all there when up use your how said an each she which do their "
         "time if will way about many then them write would like so these her long make thing see him two has look "
         "more day could go come did number sound no most people my over know water than call first who may down side "
         "been now find any new work part take get place made live where after back little only round man year came "
         "show every good me give our under name very through just form sentence great think say help low line differ "
         "turn cause much mean before move right boy old too same tell does set three want air well also play small end "
         "put home read hand port large spell add even land here must big high such follow act why ask men change went "
         "light kind off need house picture try us again animal point mother world near build self earth father").split()
MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256, "max_position_embeddings": 512, "seed": 0}


def _peak_mb() -> float:
    """This process's peak resident set (VmHWM, MiB). Not ``ru_maxrss``: Linux carries that over
    from the parent across fork + exec, so a child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_pairs(n: int, path: Path, seed: int = 0, chunk: int = 100_000) -> None:
    """``n`` pairs streamed to parquet ``chunk`` rows at a time: prompts 8-40 words, responses 5-50 words."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    schema = pa.schema([("pair_id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
                        ("p_chosen", pa.float64()), ("margin", pa.float64()), ("source", pa.string())])

    def texts(count: int, low: int, high: int) -> list[str]:
        lengths = rng.integers(low, high + 1, count)
        flat = words[rng.integers(0, len(words), int(lengths.sum()))]
        ends = np.cumsum(lengths)
        return [" ".join(flat[e - k:e]) for e, k in zip(ends, lengths)]

    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            margin = rng.uniform(0, 5, k)
            writer.write_table(pa.table({
                "pair_id": [f"p{start + i:09d}" for i in range(k)], "prompt": texts(k, 8, 40), "chosen": texts(k, 5, 50),
                "rejected": texts(k, 5, 50), "p_chosen": rng.choice([1.0, 0.9, 0.75], k),
                "margin": np.where(rng.random(k) < 0.3, np.nan, margin), "source": ["synthetic"] * k,
            }, schema=schema))


def _params(args, cache_dir: Path) -> dict:
    return {"max_length": args.max_length, "max_prompt_length": args.max_prompt_length, "batch_size": args.batch_size,
            "eval_batch_size": 64, "train_accuracy_pairs": 256, "token_cache_dir": str(cache_dir),
            "tokenizer": {"vocab_size": 2048}, "model": MODEL,
            "training": {"max_steps": args.steps, "learning_rate": 1e-3, "eval_every": 0, "checkpoint_every": 0,
                         "progress_bar": False, "seed": 0, "cpu_threads": 1}}


def phase_build(args) -> dict:
    import polars as pl
    from transformers import AutoTokenizer

    from prefalign.core.training.token_cache import build_token_cache, cache_size_bytes

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    started = time.perf_counter()
    folder = build_token_cache(tok, pl.scan_parquet(args.parquet), args.max_length, args.max_prompt_length,
                               args.cache_dir, args.chunk_rows)
    meta = json.loads((folder / "meta.json").read_text())
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": _peak_mb(), "cache_mb": cache_size_bytes(folder) / 2**20,
            "pairs": meta["pairs_count"], "tokens": meta["tokens_count"]}


def phase_synth(args) -> dict:
    """A cache folder for the parquet's key whose ids are random (lengths resampled from the 10k
    sample's real cache), written in chunks: what the training run reads at sizes where tokenising
    would take hours here. The texts' content hash, the tokenizer and the lengths give the key, as
    in ``build_token_cache``, so the run finds it by the ordinary path."""
    import numpy as np
    import polars as pl
    from transformers import AutoTokenizer

    from prefalign.core.training import token_cache as tc

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    started = time.perf_counter()
    lazy = pl.scan_parquet(args.parquet)
    key = tc.cache_key(tok, args.max_length, args.max_prompt_length, lazy)
    real = tc.open_token_cache(args.sample_cache)
    lc, lr = real.chosen.lengths(), real.rejected.lengths()
    pc = np.asarray(real.chosen.prompt_lengths[:])[0::2]  # chosen prompt lengths (sequences 0, 2, 4, ...)
    rng = np.random.default_rng(0)
    folder = Path(args.cache_dir) / f"pairs_{key['key']}"
    tmp = Path(args.cache_dir) / "synthetic_tmp"
    tmp.mkdir(parents=True)
    handles = {name: open(tc._file(tmp, name), "wb") for name in tc._FILES}
    handles["offsets"].write(np.zeros(1, dtype=np.int64).tobytes())
    n_pairs = n_tokens = identical_total = 0
    for chunk in lazy.select("p_chosen", "margin").collect_batches(chunk_size=200_000):
        k = chunk.height
        pick = rng.integers(0, len(lc), k)
        lengths = np.stack([lc[pick], lr[pick]], axis=1).reshape(-1)
        handles["tokens"].write(rng.integers(0, len(tok), int(lengths.sum()), dtype=np.int32).tobytes())
        handles["offsets"].write((n_tokens + np.cumsum(lengths)).astype(np.int64).tobytes())
        handles["prompt_lengths"].write(np.repeat(pc[pick], 2).astype(np.int32).tobytes())
        handles["p_chosen"].write(chunk["p_chosen"].to_numpy().astype(np.float64).tobytes())
        handles["margin"].write(chunk["margin"].fill_null(float("nan")).to_numpy().astype(np.float64).tobytes())
        identical = np.zeros(k, dtype=np.uint8)
        if args.identical_every:
            identical[(n_pairs + np.arange(k)) % args.identical_every == 0] = 1
        handles["identical"].write(identical.tobytes())
        counts = np.zeros((k, len(tc._STATS_FIELDS)), dtype=np.int32)
        counts[:, 0] = 2
        counts[:, tc._STATS_FIELDS.index("identical_after_truncation")] = identical
        handles["pair_truncation"].write(counts.tobytes())
        n_pairs += k
        n_tokens += int(lengths.sum())
        identical_total += int(identical.sum())
    for handle in handles.values():
        handle.close()
    meta = {"format": tc.CACHE_FORMAT, **key, "pairs_count": n_pairs, "tokens_count": n_tokens,
            "stats_fields": tc._STATS_FIELDS, "synthetic_ids": True,
            "truncation": {name: 2 * n_pairs if name == "sequences" else 0 for name in tc._STATS_FIELDS}}
    meta["truncation"]["identical_after_truncation"] = identical_total
    (tmp / tc.META).write_text(json.dumps(meta))
    os.rename(tmp, folder)
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": _peak_mb(), "cache_mb": tc.cache_size_bytes(folder) / 2**20,
            "pairs": n_pairs, "tokens": n_tokens}


def phase_train(args) -> dict:
    import polars as pl
    from transformers import AutoTokenizer

    from prefalign.core.reward.train_reward import RewardParams, train_reward_model

    before = _peak_mb()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    params = RewardParams.from_dict(_params(args, Path(args.cache_dir)))
    val = pl.read_parquet(args.val)
    started = time.perf_counter()
    run = train_reward_model(pl.scan_parquet(args.parquet), val, tok, params, Path(args.work) / "run", "bt")
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": _peak_mb(), "rss_after_imports_mb": before,
            "steps": run.metrics["steps"], "train_pairs": run.metrics["train_pairs"],
            "final_train_loss": run.training_curve["train_loss"][-1]}


def _run_phase(phase: str, args, extra: dict) -> dict:
    argv = [sys.executable, __file__, "--phase", phase, "--max-length", str(args.max_length), "--max-prompt-length",
            str(args.max_prompt_length), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--chunk-rows", str(args.chunk_rows), "--identical-every", str(args.identical_every)] + [x for k, v in extra.items() for x in (f"--{k}", str(v))]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"phase {phase} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 4_000_000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-prompt-length", type=int, default=48)
    parser.add_argument("--chunk-rows", type=int, default=5_000)
    parser.add_argument("--workdir", default="/tmp/prefalign_token_cache_bench")
    parser.add_argument("--keep", action="store_true", help="keep the parquet files and caches")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tokenise-max", type=int, default=100_000,
                        help="sizes above this get a cache of random ids (real lengths) instead of a tokenised one")
    parser.add_argument("--identical-every", type=int, default=0,
                        help="in a random-id cache, flag every K-th pair identical (0: none)")
    for hidden in ("parquet", "val", "tokenizer", "cache-dir", "work", "sample-cache"):
        parser.add_argument(f"--{hidden}", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps({"build": phase_build, "synth": phase_synth, "train": phase_train}[args.phase](args)))
        return

    import polars as pl

    from prefalign.core.models import build_tokenizer

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        # one tokenizer for every size: a BPE trained on the first 10k pairs (seed 0), and 256 val pairs
        sample = work / "sample.parquet"
        make_pairs(10_256, sample, seed=0)
        frame = pl.read_parquet(sample)
        train_sample, val = frame.head(10_000), frame.tail(256)
        val.write_parquet(work / "val.parquet")
        texts = train_sample["prompt"].to_list() + train_sample["chosen"].to_list() + train_sample["rejected"].to_list()
        build_tokenizer({"vocab_size": 2048}, texts).save_pretrained(work / "tokenizer")
        # the lengths the synthetic caches draw from: the 10k sample tokenised for real
        from transformers import AutoTokenizer

        from prefalign.core.training.token_cache import build_token_cache

        sample_cache = build_token_cache(AutoTokenizer.from_pretrained(work / "tokenizer"), train_sample, args.max_length,
                                         args.max_prompt_length, work / "sample_cache")
        del frame, train_sample, texts
        rows = []
        for n in args.sizes:
            folder = work / f"n{n}"
            folder.mkdir()
            started = time.perf_counter()
            make_pairs(n, folder / "pairs.parquet", seed=1)
            gen_s = time.perf_counter() - started
            paths = {"parquet": folder / "pairs.parquet", "val": work / "val.parquet", "tokenizer": work / "tokenizer",
                     "cache-dir": folder / "cache", "work": folder, "sample-cache": sample_cache}
            build = _run_phase("build" if n <= args.tokenise_max else "synth", args, paths)
            build["cache"] = "tokenised" if n <= args.tokenise_max else "random ids, real lengths"
            train = _run_phase("train", args, paths)
            rows.append({"pairs": n, "parquet_mb": (folder / "pairs.parquet").stat().st_size / 2**20, "generate_s": gen_s,
                         "build": build, "train": train})
            print(json.dumps(rows[-1]), flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        print(f"\n{'pairs':>10} | {'cache':>24} | {'cache s':>8} | {'cache peak RSS MB':>17} | {'cache MB':>9} | "
              f"{'train s':>8} | {'train peak RSS MB':>17} | steps")
        for r in rows:
            b, t = r["build"], r["train"]
            print(f"{r['pairs']:>10,} | {b['cache']:>24} | {b['seconds']:>8.1f} | {b['peak_rss_mb']:>17.0f} | {b['cache_mb']:>9.1f} | "
                  f"{t['seconds']:>8.1f} | {t['peak_rss_mb']:>17.0f} | {t['steps']}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
