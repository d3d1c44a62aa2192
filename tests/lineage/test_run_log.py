"""Reading a run: every node of the trained ci run logged exactly one summary line (rows in/out, time)."""

from __future__ import annotations

import re
from pathlib import Path

from .project_copy import RUN_LOG, TRAINED_PIPELINES


def test_every_node_logs_one_summary_line(trained_project: Path):
    from kedro.framework.project import pipelines

    lines = (trained_project / RUN_LOG).read_text().splitlines()
    summaries = [re.match(r"node (\S+) took (\d+\.\d)s \| in: .+ \| out: .+", line) for line in lines]
    summarised = [m.group(1) for m in summaries if m]
    expected = sorted(node.name for name in TRAINED_PIPELINES for node in pipelines[name].nodes)
    assert sorted(summarised) == expected, f"nodes without exactly one summary line: {set(expected) ^ set(summarised)}"
    # The pairs table is described by its rows, not by its type.
    build_pairs = next(line for line in lines if line.startswith("node build_pairs "))
    assert re.search(r"out: pairs=\d+ rows", build_pairs), build_pairs
