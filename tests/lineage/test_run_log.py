"""Reading a run: every node of the trained ci run logged exactly one summary line (rows in/out, time)."""

from __future__ import annotations

import re
from importlib import import_module
from pathlib import Path

from .project_copy import RUN_LOG, TRAINED_PIPELINES


def test_every_node_logs_one_summary_line(trained_project: Path):
    lines = (trained_project / RUN_LOG).read_text().splitlines()
    summaries = [re.match(r"node (\S+) took (\d+\.\d)s \| in: .+ \| out: .+", line) for line in lines]
    summarised = [m.group(1) for m in summaries if m]
    # Each pipeline built from its own module, as find_pipelines does (independent of what other tests configured).
    pipelines = {name: import_module(f"prefalign.pipelines.{name}.pipeline").create_pipeline() for name in TRAINED_PIPELINES}
    expected = sorted(node.name for pipeline in pipelines.values() for node in pipeline.nodes)
    assert sorted(summarised) == expected, f"nodes without exactly one summary line: {set(expected) ^ set(summarised)}"
    # The pairs table is described by its rows, not by its type.
    build_pairs = next(line for line in lines if line.startswith("node build_pairs "))
    assert re.search(r"out: pairs=\d+ rows", build_pairs), build_pairs


def test_log_lines_name_the_model_round_numbers_and_explain_deduplication(trained_project: Path):
    lines = (trained_project / RUN_LOG).read_text().splitlines()
    reward = [line for line in lines if line.startswith("reward ")]
    assert any(line.startswith("reward gpm (head gpm, loss bt): val_accuracy=") for line in reward), reward
    assert any(line.startswith("reward bt (head scalar, loss bt): ") for line in reward), reward
    for line in reward:  # 4 decimals at most, e.g. 0.6495 and not 0.6494565217391305
        assert not re.search(r"\d\.\d{5,}", line), line
    assert not [line for line in lines if "=method" in line or "=function" in line]
    ingest = next(line for line in lines if line.startswith("node ingest_alpaca_eval "))
    assert "raw_alpaca_eval=loaded on demand" in ingest, ingest
    dedup = [line for line in lines if line.startswith("feedback pandalm_7b:")]
    assert dedup and re.search(r"\d+ records read -> \d+ pairs; \d+ pair rows dropped as duplicates of a pair already produced by this source or a higher-priority one", dedup[0]), dedup
