"""scripts/gpu_check.py: the CPU-side export and the --dry-run of the GPU check (tiny sizes)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_then_dry_run_prints_the_table(tmp_path, capsys):
    gpu_check = _load()
    data = tmp_path / "pairs.jsonl"
    gpu_check.main(["export", "--data", str(data), "--export-pairs", "16", "--export-max-length", "96", "--export-max-prompt-length", "48"])
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 16 and all(len(r["chosen"]) <= 96 and 0 < r["chosen_prompt"] < len(r["chosen"]) for r in rows)
    capsys.readouterr()
    gpu_check.main(["run", "--dry-run", "--data", str(data)])
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if re.match(r"^(reward|dpo)\s+(padded|packed|shared)\s", line)]
    assert [(r[0], r[1]) for r in table] == [(t, l) for t in ("reward", "dpo") for l in ("padded", "packed", "shared")]
    assert all(float(r[2]) > 0 for r in table)  # tokens/s
    relative = [float(x) for x in re.findall(r"relative ([0-9.e+-]+)\)", out)]
    assert len(relative) == 2 and max(relative) < 1e-5  # packed and shared log-probs = padded ones
    assert "FSDP: skipped on CPU" in out
    assert "FSDP2 2-GPU: skipped (0 GPUs here; needs 2)" in out  # the 2-process FSDP2 check needs 2 GPUs
    resume = json.loads("{" + out.split("FSDP {", 1)[1].splitlines()[0])
    assert resume["checkpoint"] == "step_00000003" and resume["resumed_from_step"] == 3
    assert resume["max_loss_diff_steps_4_6"] < 1e-6  # the resumed run repeats steps 4-6
