"""How pair building grows with the number of pairs, up to 1M+ (synthetic expansion of real data).

    python benchmarks/feedback_scaling.py --raw-data-dir data/raw_full --sizes 10000 100000 1000000 2000000

The scored responses of the real Tulu-2 best-of-n files (805 prompts x 11 samples, judge
probabilities) are replicated with a copy index appended to the prompt, so copy c of a prompt is a
new prompt with the same 11 responses (55 candidate pairs each), until the target number of pairs
is reached (no cap). Responses are cut to --text-chars characters so that 2M pairs of texts fit in
memory on a laptop: the cost measured is the per-pair work (self-join, margins, orientation,
pair_id hashing, dedup, split), which does not depend on text length except through hashing.

Each size runs in a fresh subprocess so its peak RSS is its own. Prints one row per size, with
time and memory ratios against the previous size (1.0x time per 10x pairs would be linear).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _one(raw_data_dir: str, n_pairs: int, text_chars: int) -> dict:
    import polars as pl

    from prefalign.core.feedback.pairs import build_pairs_table, to_pair_rows, within_group_pairs
    from prefalign.core.feedback.parsers import parse_alpaca_eval
    from prefalign.datasets.raw_records import RawRecordsDataset

    records = RawRecordsDataset(filepath=f"{raw_data_dir}/tulu2_bon", glob="sample_*.json").load()()
    scored = parse_alpaca_eval({"records": records}, {}).frame.with_columns(pl.col("response").str.slice(0, text_chars))
    per_copy = scored.group_by("group").len().select((pl.col("len") * (pl.col("len") - 1) // 2).sum()).item()
    copies = -(-n_pairs // per_copy)
    scored = pl.concat([scored.with_columns(group=pl.col("group") + f" #{c}", prompt=pl.col("prompt") + f" #{c}")
                        for c in range(copies)]).rechunk()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = {}
    t0 = time.perf_counter()
    comparisons, candidates, _ = within_group_pairs(scored, None)
    times["expand"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows, _ = to_pair_rows(comparisons, "tulu2_bon", {"signal": "judge_prob", "feedback": "ai", "eps": 1e-4})
    times["margins"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    pairs, _ = build_pairs_table([rows], {"ratios": {"train": 0.8, "val": 0.1, "test": 0.1}, "salt": "bench"})
    times["table"] = time.perf_counter() - t2
    return {"responses": scored.height, "candidates": candidates, "pairs": pairs.height, "seconds": time.perf_counter() - t0,
            **times, "rss_before_mb": rss_before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-data-dir", required=True, help="the full raw files (python scripts/download_raw_data.py --dest data/raw_full)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 2_000_000])
    parser.add_argument("--text-chars", type=int, default=200)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.raw_data_dir, args.one, args.text_chars)))
        return
    print(f"pair building on Tulu-2 best-of-n x copies, responses cut to {args.text_chars} chars")
    print(f"{'target':>9} {'responses':>9} {'pairs':>9} {'expand s':>8} {'margins s':>9} {'table s':>8} {'total s':>8} "
          f"{'pairs/s':>9} {'peak MB':>8} {'x time':>7} {'x mem':>6}")
    previous = None
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--raw-data-dir", args.raw_data_dir, "--one", str(size),
                              "--text-chars", str(args.text_chars)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = (f"{r['seconds'] / previous['seconds']:>7.1f} {r['peak_rss_mb'] / previous['peak_rss_mb']:>6.1f}"
                 if previous else f"{'-':>7} {'-':>6}")
        print(f"{size:>9} {r['responses']:>9} {r['pairs']:>9} {r['expand']:>8.2f} {r['margins']:>9.2f} {r['table']:>8.2f} "
              f"{r['seconds']:>8.2f} {r['pairs'] / r['seconds']:>9.0f} {r['peak_rss_mb']:>8.0f} {ratio}")
        previous = r


if __name__ == "__main__":
    main()
