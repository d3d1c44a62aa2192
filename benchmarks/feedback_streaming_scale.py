"""The streaming feedback and validation path at 1M to 26M pairs: wall time and peak RSS per size.

    python benchmarks/feedback_streaming_scale.py --sizes 1000000 4000000 13000000 26000000 --work /tmp/prefalign_scale

Synthetic raw feedback in UltraFeedback's pairwise format (``ultrafeedback_pairs``: prompt, chosen,
rejected, metadata.score_chosen/score_rejected on 1-10), with the shipped sample's text lengths:
prompts log-normal with median 360 and mean ~670 characters, responses median ~900 and mean ~1,200
(data/01_raw/ultrafeedback_sample: prompt 669 / 364, chosen 1,269 / 911, rejected 1,107 mean /
median). Each prompt has 4 scored responses and all 6 pairs of them are written, adjacent, as
UltraFeedback's and SynPref's all-pairs expansions do; texts are random words, unique per prompt.
Defects, as in real dumps: 0.1% of lines are repeated (duplicates), 0.05% have their scores
swapped (a contradicting judgment: a conflict), 0.05% lack a score (rejected records).

The raw file is written as gzip JSON lines, streamed (never the whole table in memory), then each
size runs in a fresh subprocess (``os.wait4`` gives that child's own peak RSS):
feedback = chunked ingest -> parquet parts -> conflicts, dedup, split (polars streaming engine) ->
the pairs folder and the summary; validation = the batched GX suite -> validated pairs (sink) and
quarantined rows. Generated files are deleted after each size. Prints one row per size with the
machine's load average (``/proc/loadavg``) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RESPONSES = 4
PAIRS_PER_PROMPT = RESPONSES * (RESPONSES - 1) // 2
WORDS = ("the of and to in is that for it as with was on be by this are or from at an which have not but can "
         "model answer data value time first people water because number example function result system light "
         "energy process between through different important following question should would could also "
         "however therefore solution provide information research student language problem method").split()


def generate(path: Path, n_pairs: int, seed: int = 0) -> dict[str, int]:
    """Write n_pairs pair lines (plus the defects) to a gzip JSON-lines file, block by block."""
    import numpy as np

    rng = np.random.default_rng(seed)
    corpus = " ".join(rng.choice(WORDS, size=3_000_000)) + " "
    n_prompts = -(-n_pairs // PAIRS_PER_PROMPT)
    counts = {"lines": 0, "pairs": 0, "duplicates": 0, "swapped": 0, "malformed": 0}
    block = 20_000
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        for start in range(0, n_prompts, block):
            m = min(block, n_prompts - start)
            p_len = np.clip(rng.lognormal(np.log(360), 1.1, m), 20, 8000).astype(int)
            r_len = np.clip(rng.lognormal(np.log(900), 0.8, (m, RESPONSES)), 10, 12000).astype(int)
            p_at = rng.integers(0, len(corpus) - 9000, m)
            r_at = rng.integers(0, len(corpus) - 13000, (m, RESPONSES))
            scores = rng.integers(1, 11, (m, RESPONSES))
            defect = rng.random((m, PAIRS_PER_PROMPT))
            lines = []
            for j in range(m):
                pid = start + j
                prompt = f"Q{pid}: " + corpus[p_at[j]:p_at[j] + p_len[j]].strip()
                resp = [f"A{pid}.{k}: " + corpus[r_at[j, k]:r_at[j, k] + r_len[j, k]].strip() for k in range(RESPONSES)]
                pair = 0
                for a in range(RESPONSES):
                    for b in range(a + 1, RESPONSES):
                        if counts["pairs"] >= n_pairs:
                            break
                        sa, sb = int(scores[j, a]), int(scores[j, b])
                        hi, lo = (a, b) if sa >= sb else (b, a)
                        d = defect[j, pair]
                        meta = f'{{"score_chosen": {max(sa, sb)}, "score_rejected": {min(sa, sb)}}}'
                        if d < 0.0005:
                            meta = f'{{"score_chosen": {max(sa, sb)}}}'
                            counts["malformed"] += 1
                        line = f'{{"prompt": "{prompt}", "chosen": "{resp[hi]}", "rejected": "{resp[lo]}", "metadata": {meta}}}\n'
                        lines.append(line)
                        counts["pairs"] += 1
                        if 0.0005 <= d < 0.0015:
                            lines.append(line)
                            counts["duplicates"] += 1
                        elif 0.0015 <= d < 0.002 and sa != sb:  # the same two responses judged the other way
                            lines.append(f'{{"prompt": "{prompt}", "chosen": "{resp[lo]}", "rejected": "{resp[hi]}", '
                                         f'"metadata": {{"score_chosen": {max(sa, sb)}, "score_rejected": {min(sa, sb)}}}}}\n')
                            counts["swapped"] += 1
                        pair += 1
            counts["lines"] += len(lines)
            out.write(compressor.compress("".join(lines).encode()))
        out.write(compressor.flush())
    return counts


def run_one(raw: Path, work: Path, chunk_records: int, batch_rows: int) -> dict:
    import polars as pl

    from prefalign.core.feedback import streaming as st
    from prefalign.core.feedback.conflicts import ConflictRule
    from prefalign.core.validation import parse_validation_config
    from prefalign.core.validation.batched import validate_pairs_batched, validated_rows
    from prefalign.datasets.raw_records import RawRecordsDataset

    params = {"parser": "ultrafeedback_pairs", "feedback": "ai", "signal": "score_gap", "gamma": 0.3,
              "score_range": [1, 10], "drop_ties": False}
    split = {"ratios": {"train": 0.8, "val": 0.1, "test": 0.1}, "salt": "bench", "heldout_sources": []}
    import yaml

    validation = yaml.safe_load((ROOT / "conf/base/parameters_validation.yml").read_text())["validation"]
    validation["source_row_bounds"] = {"ultrafeedback": {"min": 1, "max": None}}
    for body in validation["expectations"].values():
        if body and (body.get("kwargs") or {}).get("value_set") == "feedback_sources":
            body["kwargs"]["value_set"] = ["ultrafeedback"]
    config = parse_validation_config(validation)
    t0 = time.perf_counter()
    reader = RawRecordsDataset(filepath=str(raw)).load()
    stats = st.ingest_source_chunks("ultrafeedback", 0, {"records": reader.chunks(chunk_records)}, params, split,
                                    work / "parts", work / "rejected", 0.5)
    t_ingest = time.perf_counter() - t0
    resolution = st.build_pairs_dataset(work / "parts", work / "pairs", split, ConflictRule.from_params(None, {"ultrafeedback": params}))
    pairs = st.scan_pairs(work / "pairs")
    summary = st.summarise_dataset(pairs, [stats], resolution["duplicates"], resolution["conflicts"])
    t_feedback = time.perf_counter() - t0
    shutil.rmtree(work / "parts")
    t1 = time.perf_counter()
    failures, quarantined, results = validate_pairs_batched(pairs, config, batch_rows=batch_rows)
    validated_rows(pairs, failures).sink_parquet(pl.PartitionBy(str(work / "validated"), max_rows_per_file=1_000_000),
                                                 engine="streaming", mkdir=True)
    t_validation = time.perf_counter() - t1
    return {"pairs": summary["total"]["pairs"], "records_read": stats["records_read"], "rejected": stats["records_rejected"],
            "duplicates": sum(resolution["duplicates"].values()),
            "conflicts": resolution["conflicts"]["_total"], "quarantined": quarantined.height,
            "validated": results["rows"]["validated"], "passed": results["passed"],
            "ingest_s": t_ingest, "feedback_s": t_feedback, "validation_s": t_validation,
            "disk_pairs_gb": sum(f.stat().st_size for f in (work / "pairs").rglob("*")) / 1e9}


def _child(args: list[str]) -> tuple[dict, float, float]:
    """Run this script with args in a child; (its JSON, wall seconds, its own peak RSS in MB)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), POLARS_MAX_THREADS=os.environ.get("POLARS_MAX_THREADS", "2"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), time.perf_counter() - t0, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 13_000_000, 26_000_000])
    parser.add_argument("--work", default="/tmp/prefalign_scale")
    parser.add_argument("--chunk-records", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=500_000)
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    raw = work / "raw" / "pairs.jsonl.gz"
    if args.generate:
        raw.parent.mkdir(parents=True, exist_ok=True)
        print(json.dumps(generate(raw, args.generate)))
        return
    if args.run:
        print(json.dumps(run_one(raw, work / "out", args.chunk_records, args.batch_rows)))
        return
    print(f"streaming feedback + validation; chunk {args.chunk_records} records, validation batch {args.batch_rows} rows; "
          f"POLARS_MAX_THREADS={os.environ.get('POLARS_MAX_THREADS', '2')}")
    print(f"{'pairs':>9} {'gen s':>6} {'raw GB':>6} {'ingest s':>8} {'feedback s':>10} {'valid. s':>8} {'total s':>8} "
          f"{'us/pair':>7} {'peak MB':>8} {'dup':>6} {'confl':>6} {'rej':>5} {'quar':>5} {'pairs GB':>8}  load before -> after")
    for size in args.sizes:
        shutil.rmtree(work, ignore_errors=True)
        gen, gen_s, _ = _child(["--work", str(work), "--generate", str(size)])
        raw_gb = raw.stat().st_size / 1e9
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        r, wall, peak = _child(["--work", str(work), "--run", "--chunk-records", str(args.chunk_records),
                                "--batch-rows", str(args.batch_rows)])
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        print(f"{r['pairs']:>9} {gen_s:>6.0f} {raw_gb:>6.2f} {r['ingest_s']:>8.1f} {r['feedback_s']:>10.1f} {r['validation_s']:>8.1f} "
              f"{wall:>8.1f} {1e6 * wall / r['pairs']:>7.1f} {peak:>8.0f} {r['duplicates']:>6} {r['conflicts']['within_source']:>6} "
              f"{r['rejected']:>5} {r['quarantined']:>5} {r['disk_pairs_gb']:>8.2f}  {' '.join(load_before)} -> {' '.join(load_after)}",
              flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
