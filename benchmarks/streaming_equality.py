"""The streaming feedback engine against the in-memory one on a raw-data folder (not a timed test).

    python benchmarks/streaming_equality.py --raw-data-dir ../shared/data --env base

Runs the feedback and validation nodes with ``feedback.engine: in_memory`` and then ``streaming``
(tests/feedback/streaming_equality.py, the same driver as the equality test on the shipped
samples) and prints, per output, whether they are equal: pairs, validated and quarantined rows
(row for row after sorting by pair_id), rejected records (in order), the resolution counts, the
feedback summary, the validation results and the report; with each engine's wall time and the
machine's load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-data-dir", required=True)
    parser.add_argument("--env", default="base")
    parser.add_argument("--chunk-records", type=int, default=5000, help="small chunks: every big file is cut in many parts")
    parser.add_argument("--batch-rows", type=int, default=5000)
    args = parser.parse_args()
    from tests.feedback.streaming_equality import differences, load_config, run_engine

    params, catalog = load_config(args.raw_data_dir, args.env)
    work = Path(tempfile.mkdtemp(prefix="streaming_equality_"))
    load = lambda: " ".join(Path("/proc/loadavg").read_text().split()[:3])  # noqa: E731
    print(f"raw data {args.raw_data_dir}, env {args.env}, chunks of {args.chunk_records} records, "
          f"validation batches of {args.batch_rows} rows; load {load()}")
    memory = run_engine("in_memory", params, catalog, work)
    print(f"in_memory: {memory['pairs'].height} pairs, {memory['rejected'].height} rejected, "
          f"{memory['quarantined'].height} quarantined, {memory['validated'].height} validated, "
          f"{memory['seconds']:.1f} s; load {load()}")
    streaming = run_engine("streaming", params, catalog, work, args.chunk_records, args.batch_rows)
    print(f"streaming: {streaming['pairs'].height} pairs, {streaming['rejected'].height} rejected, "
          f"{streaming['quarantined'].height} quarantined, {streaming['validated'].height} validated, "
          f"{streaming['seconds']:.1f} s; load {load()}")
    conflicts = memory["resolution"]["conflicts"]["_total"]
    print(f"conflicting comparisons {conflicts}, duplicates dropped {sum(memory['resolution']['duplicates'].values())}")
    found = differences(memory, streaming)
    print("EQUAL: pairs, rejected, resolution, summary, validation results, report, validated and quarantined rows"
          if not found else "DIFFERENT: " + "; ".join(found))


if __name__ == "__main__":
    main()
