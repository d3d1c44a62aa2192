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
    gpu_check.main(["export", "--data", str(data), "--export-pairs", "16", "--export-max-length", "96", "--export-max-prompt-length", "48",
                    "--no-smollm2-export"])
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 16 and all(len(r["chosen"]) <= 96 and 0 < r["chosen_prompt"] < len(r["chosen"]) for r in rows)
    capsys.readouterr()
    gpu_check.main(["run", "--dry-run", "--data", str(data)])
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if re.match(r"^(reward|dpo)\s+(padded|packed|shared)\s", line)]
    assert [(r[0], r[1]) for r in table] == [(t, l) for t in ("reward", "dpo") for l in ("padded", "packed", "shared")]
    assert all(float(r[2]) > 0 for r in table)  # tokens/s
    if importlib.util.find_spec("trl") is not None:  # TRL side by side on the same batches
        trl_rows = [line.split() for line in out.splitlines() if re.match(r"^(reward|dpo)\s+trl\s", line)]
        assert [r[0] for r in trl_rows] == ["reward", "dpo"] and all(float(r[2]) > 0 for r in trl_rows)
        assert len(re.findall(r"^ratio\[(reward|dpo), shared / TRL\] pairs_per_s=[0-9.]+", out, re.M)) == 2
    relative = [float(x) for x in re.findall(r"relative ([0-9.e+-]+)\)", out)]
    assert len(relative) == 2 and max(relative) < 1e-5  # packed and shared log-probs = padded ones
    assert "FSDP: skipped on CPU" in out
    assert "FSDP2 2-GPU: skipped (0 GPUs here; needs 2)" in out  # the 2-process FSDP2 check needs 2 GPUs
    resume = json.loads("{" + out.split("FSDP {", 1)[1].splitlines()[0])
    assert resume["checkpoint"] == "step_00000003" and resume["resumed_from_step"] == 3
    assert resume["max_loss_diff_steps_4_6"] < 1e-6  # the resumed run repeats steps 4-6


def test_model_choice_real_weights_else_qwen_shape_else_smollm2_config(tmp_path, monkeypatch):
    gpu_check = _load()
    monkeypatch.setattr(gpu_check, "SMOLLM2_DIR", tmp_path / "absent")
    monkeypatch.setattr(gpu_check, "SMOLLM2_CONFIG", tmp_path / "smollm2_config.json")
    a = gpu_check.argparse.Namespace(dry_run=False, model="auto", data=str(gpu_check.DATA))
    shape, name = gpu_check.choose_model(a)  # no weights here: the Qwen2.5-0.5B shape
    assert shape["hidden_size"] == 896 and shape["num_hidden_layers"] == 24 and shape["vocab_size"] == 151936
    assert shape["num_attention_heads"] == 14 and shape["num_key_value_heads"] == 2 and shape["intermediate_size"] == 4864
    assert a.weights is None and a.data == str(gpu_check.DATA)
    config = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
              "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True}
    (tmp_path / "smollm2_config.json").write_text(json.dumps(config))
    a.model = "smollm2"
    shape, name = gpu_check.choose_model(a)  # the shape from the exported config, its own ids
    assert shape == config and a.weights is None and a.data == str(gpu_check.SMOLLM2_DATA) and "random init" in name
    built = gpu_check.model_config({**config, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                                    "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 300}, "sdpa")
    assert type(built).__name__ == "LlamaConfig" and built.num_key_value_heads == 2 and built.tie_word_embeddings
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text(json.dumps(config))
    (weights / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(gpu_check, "SMOLLM2_DIR", weights)
    a.model, a.data = "auto", str(gpu_check.DATA)
    shape, name = gpu_check.choose_model(a)  # the weights are here: they are used
    assert a.weights == str(weights) and "real weights" in name and shape["hidden_size"] == 576
