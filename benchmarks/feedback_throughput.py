"""Throughput of the feedback pipeline on raw files (e.g. the full files that scripts/download_raw_data.py fetches).

    python benchmarks/feedback_throughput.py --raw-data-dir data/raw_full

1. Runs `kedro run --pipelines feedback --params raw_data_dir=...` in-process (a real
   KedroSession on this project; outputs land in data/, which git ignores), timed end to end.
2. Then ingests each source alone through the same catalog entries and core functions, timed,
   to show where the time goes.
Prints records/s, pairs produced and peak memory (max RSS of this process).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-data-dir", required=True, help="the full raw files (python scripts/download_raw_data.py --dest data/raw_full) or data/01_raw")
    parser.add_argument("--env", default="base")
    args = parser.parse_args()

    import logging

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from prefalign.core.feedback.ingest import ingest_source
    from prefalign.pipelines.feedback.pipeline import RAW_SOURCES

    logging.disable(logging.INFO)
    bootstrap_project(ROOT)
    params = {"raw_data_dir": str(Path(args.raw_data_dir).resolve())}
    start = time.perf_counter()
    with KedroSession.create(project_path=ROOT, env=args.env, runtime_params=params) as session:
        session.run(pipeline_names=["feedback"])
        context = session.load_context()
    total = time.perf_counter() - start
    catalog, conf = context.catalog, context.params["feedback"]
    summary = catalog.load("feedback_summary")
    rss_after_run = _max_rss_mb()

    print(f"raw data: {params['raw_data_dir']}  env: {args.env}")
    print(f"{'source':15} {'records':>8} {'aux':>7} {'rejected':>8} {'pairs':>7} {'seconds':>8} {'records/s':>10}")
    for source, roles in RAW_SOURCES.items():
        if not conf["sources"][source].get("enabled", True):
            continue
        t0 = time.perf_counter()
        inputs = {role: catalog.load(name)() for role, name in roles.items()}
        ingest_source(source, inputs, conf["sources"][source])
        seconds = time.perf_counter() - t0
        s = summary["sources"][source]
        records = s["records_read"] + s["auxiliary_records_read"]
        print(f"{source:15} {s['records_read']:>8} {s['auxiliary_records_read']:>7} "
              f"{s['records_rejected'] + s['auxiliary_records_rejected']:>8} {s['pairs']:>7} {seconds:>8.2f} {records / seconds:>10.0f}")
    t = summary["total"]
    records = sum(s["records_read"] + s["auxiliary_records_read"] for s in summary["sources"].values())
    print(f"whole `kedro run --pipelines feedback` (session start to end): {total:.2f} s, "
          f"{records} records ({t['records_read']} judgments), {records / total:.0f} records/s, "
          f"{t['pairs']} pairs ({t['pairs'] / total:.0f} pairs/s), peak RSS {rss_after_run:.0f} MB")


if __name__ == "__main__":
    main()
