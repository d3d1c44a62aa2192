"""Logs that read in a file: plain unwrapped lines off a terminal, rich in one; progress as
periodic rounded lines instead of carriage returns; no tied-weight warning on checkpoint save."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import torch

from prefalign.console import rich_logging_in_terminal
from prefalign.core.training.loop import drop_tied_weights, save_checkpoint
from prefalign.core.training.progress import Progress, format_progress, labelled, rounded

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _logger(stream) -> logging.Logger:
    logger = logging.getLogger(f"test_console_{id(stream)}")
    logger.handlers.clear()
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def test_a_file_keeps_plain_unwrapped_lines():
    stream = io.StringIO()
    logger = _logger(stream)
    assert rich_logging_in_terminal(logger) == 0
    path = "/a/very/long/path/" + "x" * 150 + "/evaluation_report.html"
    logger.info("report: %s", path)
    assert stream.getvalue() == f"report: {path}\n"


def test_a_terminal_gets_the_rich_handler():
    from rich.logging import RichHandler

    logger = _logger(_Terminal())
    assert rich_logging_in_terminal(logger) == 1
    assert [type(h) for h in logger.handlers if isinstance(h, RichHandler)]


def test_progress_off_a_terminal_logs_rounded_lines_without_carriage_returns(caplog, monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 20))  # 20 s per step
    monkeypatch.setattr("prefalign.core.training.progress.time.perf_counter", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="prefalign.core.training.progress")
    bar = Progress(total=4, desc="train", every_seconds=30, terminal=False)
    for _ in range(4):
        bar.update(1, loss=0.693147180559, tok_s=1234.5678)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all("\r" not in line for line in lines)
    assert lines[-1].startswith("train 4/4 (100%) loss=0.6931 tok_s=1235 elapsed")
    assert len(lines) == 3  # steps 2 and 3 (30 s apart), then the final line; not one per step


def test_progress_names_the_model_it_trains(caplog):
    """`reward_bt train 8/8 (100%) ...`: the run's hook labels each node's progress with its namespace."""
    from kedro.pipeline import Node

    from prefalign.hooks import RunSummaryHooks

    caplog.set_level(logging.INFO, logger="prefalign.core.training.progress")
    hooks, node = RunSummaryHooks(), Node(lambda x: x, "a", "b", name="train_model", namespace="reward_bt")
    hooks.before_node_run(node, {"a": 1})
    bar = Progress(total=1, terminal=False)
    bar.update(1, loss=0.25)
    hooks.after_node_run(node, {"a": 1}, {"b": 1})
    after = Progress(total=1, terminal=False)  # outside a node: no label
    for progress in (bar, after):
        progress.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "prefalign.core.training.progress"]
    assert [line.split(" elapsed")[0] for line in lines] == ["reward_bt train 1/1 (100%) loss=0.25"]
    with labelled("policy_dpo"):
        inside = Progress(total=2, terminal=False)
    assert inside.desc == "policy_dpo train" and after.desc == "train"


def test_the_logging_config_keeps_node_lines_and_drops_dataset_lines():
    """conf/logging.yml: Kedro's per-dataset "Loading data from" / "Saving data to" (INFO, one per
    dataset and node, about half of a run's lines) are shown only when kedro.io.data_catalog is
    set to DEBUG; the node lines and the prefalign summary stay; no colour codes in a file."""
    script = """
import logging, logging.config, sys, warnings, yaml
config = yaml.safe_load(open(sys.argv[1]))
logging.config.dictConfig(config)
from prefalign.console import rich_logging_in_terminal
rich_logging_in_terminal()
from kedro.io import DataCatalog, MemoryDataset
catalog = DataCatalog({"pairs": MemoryDataset()})
catalog.save("pairs", 1); catalog.load("pairs")
logging.getLogger("kedro.runner.sequential_runner").info("Completed 1 out of 1 tasks")
logging.getLogger("prefalign").info("node build_pairs took 0.2s")
warnings.warn("\x1b[33mcoloured\x1b[0m warning")
logging.getLogger("kedro.io.data_catalog").setLevel(logging.DEBUG)
catalog.load("pairs")
"""
    result = subprocess.run([sys.executable, "-c", script, str(REPO_ROOT / "conf" / "logging.yml")], capture_output=True,
                            text=True, timeout=120, cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT / "src"), "PATH": ""})
    lines = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if ": " in line]
    assert result.returncode == 0, result.stderr[-2000:]
    assert lines == ["Completed 1 out of 1 tasks", "node build_pairs took 0.2s",
                     lines[2], "Loading data from pairs (MemoryDataset)..."], result.stdout
    assert lines[2].endswith("UserWarning: coloured warning") and "\x1b" not in result.stdout


def test_format_progress_and_rounded():
    assert format_progress("train", 120, 600, 40.0, 120, loss=0.12345678) == \
        "train 120/600 (20%) loss=0.1235 elapsed 40s eta 2m40s"
    assert rounded(0.6494565217391305) == 0.6495 and rounded(8) == 8 and rounded(None) is None


def test_checkpoint_of_a_tied_model_saves_without_the_shared_tensor_warning(tmp_path, caplog):
    from accelerate import Accelerator
    from transformers import LlamaConfig, LlamaForCausalLM


    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(model)
    accelerator.register_save_state_pre_hook(drop_tied_weights)
    caplog.set_level(logging.WARNING)
    path = save_checkpoint(accelerator, tmp_path, 1, [], keep=1)
    assert not [r for r in caplog.records if "shared tensor" in r.getMessage()]
    # The checkpoint still restores the tied weights.
    torch.manual_seed(1)
    fresh = accelerator.prepare(LlamaForCausalLM(config))
    accelerator._models = [fresh]
    accelerator.load_state(str(path))
    assert torch.equal(fresh.lm_head.weight, model.model.embed_tokens.weight)
    assert fresh.lm_head.weight.data_ptr() == fresh.model.embed_tokens.weight.data_ptr()


def test_drop_tied_weights_keeps_distinct_tensors():
    shared = torch.zeros(2, 2)
    state = {"embed": shared, "head": shared, "other": torch.zeros(2, 2), "step": 3}
    drop_tied_weights([], [state], "unused")
    assert sorted(state) == ["embed", "other", "step"]
