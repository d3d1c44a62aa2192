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
child's CPU seconds (user + system; us/pair is CPU per pair) and the machine's load average
(``/proc/loadavg``) before and after: on a shared machine the wall time follows the load.
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


def generate_parts(parts: Path, n_pairs: int, seed: int = 0, block: int = 200_000) -> dict[str, int]:
    """The --stage table input: pair-row parts (streaming.PART_SCHEMA) written directly, with the
    same texts, lengths and defects as ``generate`` (0.1% repeated pairs, 0.05% pairs judged the
    other way), keys from polars' hash instead of blake2b (the parser and hashing cost is what the
    full stage measures; this one measures the whole-table steps and validation)."""
    import numpy as np
    import polars as pl

    from prefalign.core.feedback.streaming import PART_SCHEMA
    from prefalign.core.schema import with_prompt_messages

    rng = np.random.default_rng(seed)
    corpus = " ".join(rng.choice(WORDS, size=3_000_000)) + " "
    folder = parts / "ultrafeedback"
    folder.mkdir(parents=True, exist_ok=True)
    pairs_ab = [(a, b) for a in range(RESPONSES) for b in range(a + 1, RESPONSES)]
    counts = {"pairs": 0, "duplicates": 0, "swapped": 0}
    hexes = lambda s: pl.Series([f"{v:016x}" for v in s.to_list()], dtype=pl.String)  # noqa: E731
    for index, start in enumerate(range(0, n_pairs, block)):
        m = min(block, n_pairs - start)
        row = np.arange(start, start + m)
        pid = row // PAIRS_PER_PROMPT
        first, last = int(pid[0]), int(pid[-1])
        n_prompts = last - first + 1
        prng = np.random.default_rng([seed, first])
        p_len = np.clip(prng.lognormal(np.log(360), 1.1, n_prompts), 20, 8000).astype(int)
        r_len = np.clip(prng.lognormal(np.log(900), 0.8, (n_prompts, RESPONSES)), 10, 12000).astype(int)
        p_at = prng.integers(0, len(corpus) - 9000, n_prompts)
        r_at = prng.integers(0, len(corpus) - 13000, (n_prompts, RESPONSES))
        scores = prng.integers(1, 11, (n_prompts, RESPONSES)).astype(float)
        prompts = [f"Q{first + j}: " + corpus[p_at[j]:p_at[j] + p_len[j]].strip() for j in range(n_prompts)]
        responses = [[f"A{first + j}.{k}: " + corpus[r_at[j, k]:r_at[j, k] + r_len[j, k]].strip() for k in range(RESPONSES)]
                     for j in range(n_prompts)]
        local = pid - first
        which = row % PAIRS_PER_PROMPT
        a = np.array([pairs_ab[w][0] for w in which])
        b = np.array([pairs_ab[w][1] for w in which])
        sa, sb = scores[local, a], scores[local, b]
        a_wins = sa >= sb
        chosen = [responses[l][x if w else y] for l, x, y, w in zip(local, a, b, a_wins)]
        rejected = [responses[l][y if w else x] for l, x, y, w in zip(local, a, b, a_wins)]
        gap = np.abs(sa - sb)
        p = 1.0 / (1.0 + np.exp(-0.3 * gap))
        frame = pl.DataFrame({"prompt": [prompts[l] for l in local], "chosen": chosen, "rejected": rejected,
                              "margin": gap, "p_chosen": p})
        defect = prng.random(m)
        dup = frame.filter(pl.Series(defect < 0.001))
        swap = frame.filter(pl.Series((defect >= 0.001) & (defect < 0.0015) & (gap > 0))).with_columns(
            chosen=pl.col("rejected"), rejected=pl.col("chosen"))  # a contradicting judgment (p_chosen kept: A is now worse)
        counts["duplicates"] += dup.height
        counts["swapped"] += swap.height
        frame = pl.concat([frame, dup, swap])
        lo_text = pl.when(pl.col("chosen") <= pl.col("rejected")).then(pl.col("chosen")).otherwise(pl.col("rejected"))
        hi_text = pl.when(pl.col("chosen") <= pl.col("rejected")).then(pl.col("rejected")).otherwise(pl.col("chosen"))
        frame = with_prompt_messages(frame).with_columns(
            source=pl.lit("ultrafeedback"), feedback=pl.lit("ai"), signal=pl.lit("score_gap"), true_p=pl.lit(None, pl.Float64),
            _i=pl.int_range(counts["pairs"], counts["pairs"] + frame.height, dtype=pl.Int64),
            _key_hi=pl.concat_str(pl.col("prompt"), lo_text, hi_text, separator="\xff").hash(1),
            _key_lo=pl.concat_str(pl.col("prompt"), lo_text, hi_text, separator="\xff").hash(2) // 4294967296,
            _a_chosen=pl.col("chosen") <= pl.col("rejected"),
            _pair_hi=pl.concat_str(pl.col("prompt"), pl.col("chosen"), pl.col("rejected"), separator="\xff").hash(3),
            _pair_lo=pl.concat_str(pl.col("prompt"), pl.col("chosen"), pl.col("rejected"), separator="\xff").hash(4) // 4294967296,
            _prompt_h=pl.col("prompt").hash(5),
        ).with_columns(
            _p_a=pl.when(pl.col("_a_chosen")).then(pl.col("p_chosen")).otherwise(1.0 - pl.col("p_chosen")),
            split=pl.when(pl.col("_prompt_h") % 10 < 8).then(pl.lit("train")).when(pl.col("_prompt_h") % 10 < 9)
            .then(pl.lit("val")).otherwise(pl.lit("test")),
        )
        frame = frame.with_columns(
            _key=hexes(frame["_key_hi"]) + hexes(frame["_key_lo"]).str.slice(8),
            pair_id=hexes(frame["_pair_hi"]) + hexes(frame["_pair_lo"]).str.slice(8),
            prompt_id=hexes(frame["_prompt_h"]) + pl.lit("00000000"),
        ).select([pl.col(c).cast(t) for c, t in PART_SCHEMA.items()])
        counts["pairs"] += frame.height
        frame.write_parquet(folder / f"part-{index:06d}.parquet", row_group_size=20_000)
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
    if raw.exists():
        reader = RawRecordsDataset(filepath=str(raw)).load()
        _, _, stats = st.ingest_source_chunks("ultrafeedback", {"records": reader.chunks(chunk_records)}, params, split,
                                              work / "parts", 0.5)
    else:  # --stage table: the parts were generated
        n = st.scan_parts(work / "parts").select(pl.len()).collect().item()
        stats = {"source": "ultrafeedback", "records_read": n, "records_rejected": 0}
    t_ingest = time.perf_counter() - t0
    plan, resolution = st.build_pairs_lazy([st.scan_parts(work / "parts")], ["ultrafeedback"], split,
                                           ConflictRule.from_params(None, {"ultrafeedback": params}))
    st.sink_pairs(plan, work / "pairs")
    pairs = st.scan_pairs(work / "pairs")
    summary = st.summarise_dataset(pairs, [stats], resolution["duplicates"], resolution["conflicts"])
    t_feedback = time.perf_counter() - t0
    shutil.rmtree(work / "parts")
    t1 = time.perf_counter()
    failures, quarantined, results = validate_pairs_batched(pairs, config, batch_rows=batch_rows)
    st.sink_pairs(validated_rows(pairs, failures), work / "validated")
    t_validation = time.perf_counter() - t1
    return {"pairs": summary["total"]["pairs"], "records_read": stats["records_read"], "rejected": stats["records_rejected"],
            "duplicates": sum(resolution["duplicates"].values()),
            "conflicts": resolution["conflicts"]["_total"], "quarantined": quarantined.height,
            "validated": results["rows"]["validated"], "passed": results["passed"],
            "ingest_s": t_ingest, "feedback_s": t_feedback, "validation_s": t_validation,
            "disk_pairs_gb": sum(f.stat().st_size for f in (work / "pairs").rglob("*")) / 1e9}


def _child(args: list[str]) -> tuple[dict, float, float, float]:
    """Run this script with args in a child; (its JSON, wall seconds, its own peak RSS in MB, its
    CPU seconds, user + system: the cost on a shared machine, where wall time depends on the load)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), POLARS_MAX_THREADS=os.environ.get("POLARS_MAX_THREADS", "2"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed with {proc.returncode}")
    return (json.loads(out.strip().splitlines()[-1]), time.perf_counter() - t0, usage.ru_maxrss / 1024,
            usage.ru_utime + usage.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 13_000_000, 26_000_000])
    parser.add_argument("--work", default="/tmp/prefalign_scale")
    parser.add_argument("--chunk-records", type=int, default=20_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--stage", choices=["full", "table"], default="full",
                        help="full: raw gzip JSON lines -> validated pairs; table: generated parts -> validated pairs "
                             "(the whole-table steps and validation alone, without the per-record parser)")
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    raw = work / "raw" / "pairs.jsonl.gz"
    if args.generate:
        if args.stage == "table":
            print(json.dumps(generate_parts(work / "out" / "parts", args.generate)))
            return
        raw.parent.mkdir(parents=True, exist_ok=True)
        print(json.dumps(generate(raw, args.generate)))
        return
    if args.run:
        print(json.dumps(run_one(raw, work / "out", args.chunk_records, args.batch_rows)))
        return
    print(f"stage {args.stage}: streaming feedback + validation; chunk {args.chunk_records} records, validation batch {args.batch_rows} rows; "
          f"POLARS_MAX_THREADS={os.environ.get('POLARS_MAX_THREADS', '2')}")
    print(f"{'pairs':>9} {'gen s':>6} {'raw GB':>6} {'ingest s':>8} {'feedback s':>10} {'valid. s':>8} {'total s':>8} "
          f"{'cpu s':>7} {'us/pair':>7} {'peak MB':>8} {'dup':>6} {'confl':>6} {'rej':>5} {'quar':>5} {'pairs GB':>8}  load before -> after")
    for size in args.sizes:
        shutil.rmtree(work, ignore_errors=True)
        gen, gen_s, _, _ = _child(["--work", str(work), "--stage", args.stage, "--generate", str(size)])
        raw_gb = raw.stat().st_size / 1e9 if raw.exists() else sum(f.stat().st_size for f in (work / "out" / "parts").rglob("*")) / 1e9
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        r, wall, peak, cpu = _child(["--work", str(work), "--run", "--chunk-records", str(args.chunk_records),
                                "--batch-rows", str(args.batch_rows)])
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        print(f"{r['pairs']:>9} {gen_s:>6.0f} {raw_gb:>6.2f} {r['ingest_s']:>8.1f} {r['feedback_s']:>10.1f} {r['validation_s']:>8.1f} "
              f"{wall:>8.1f} {cpu:>7.0f} {1e6 * cpu / r['pairs']:>7.1f} {peak:>8.0f} {r['duplicates']:>6} {r['conflicts']['within_source']:>6} "
              f"{r['rejected']:>5} {r['quarantined']:>5} {r['disk_pairs_gb']:>8.2f}  {' '.join(load_before)} -> {' '.join(load_after)}",
              flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
