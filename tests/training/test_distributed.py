"""Distributed training on CPU (gloo) equals one process with the same global batch (docs/distributed.md).

- 2-process DDP and 2-process FSDP2 (conf/accelerate/fsdp.yaml: the loop shards with ``fully_shard``)
  for reward BT, reward GPM and DPO (DPO also with LoRA on a frozen base, and with 2 accumulated
  micro-batches of 1 pair: process 1's shares empty): every step's loss and grad norm (clipping active), the validation losses and the
  final weights against one process;
- FSDP2 sharded checkpoint, SIGKILL of process 1 after it, resume: the same curve and weights as
  the uninterrupted run;
- two machines on this one: two launchers (machine_rank 0 and 1, rendezvous on 127.0.0.1), one
  process each, through the Kedro node's launcher (``run_in_subprocesses``): equal to one process.

Tiny models built from config (tests/training/grad_split.py); every launch starts 2-3 Python
processes, so each test takes 30-90 s on a loaded 2-core machine.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from prefalign.core.objectives.train_objective import ENTRY
from prefalign.core.config_utils import deep_merge
from prefalign.core.reward.train_reward import RewardParams, fit_tokenizer, select_pairs, train_reward_model
from prefalign.core.training.launch import Machines, free_port, run_accelerate_module, run_in_subprocesses
from tests.reward.helpers import TINY_MODEL, toy_pairs_frame
from tests.training.distributed_worker import KILL_AFTER_STEP, OBJECTIVES, run_objective

ROOT = Path(__file__).resolve().parents[2]
FSDP = str(ROOT / "conf" / "accelerate" / "fsdp.yaml")
WORKER = "tests.training.distributed_worker"
TOL = 1e-5


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("one")
    return {name: run_objective(name, out / name) for name in OBJECTIVES}


def max_differences(run: dict, reference: dict) -> dict[str, float]:
    """Largest |difference| of the per-step train loss, grad norm, validation loss, and of the final weights."""
    rows = list(zip(run["history"], reference["history"], strict=True))
    assert [a["step"] for a, _ in rows] == [1, 2, 3, 4]
    assert [a.get("val_loss") is None for a, _ in rows] == [b.get("val_loss") is None for _, b in rows]
    return {
        "loss": max(abs(a["train_loss"] - b["train_loss"]) for a, b in rows),
        "grad_norm": max(abs(a["grad_norm"] - b["grad_norm"]) for a, b in rows),
        "val_loss": max(abs(a["val_loss"] - b["val_loss"]) for a, b in rows if b.get("val_loss") is not None),
        "weights": max(float((run["weights"][k] - w).abs().max()) for k, w in reference["weights"].items()),
    }


def assert_equal_runs(results: dict, one_process: dict, objectives=OBJECTIVES) -> None:
    for name in objectives:
        run, reference = results[name], one_process[name]
        assert run["weights"].keys() == reference["weights"].keys()
        diff = max_differences(run, reference)
        assert diff["loss"] <= TOL and diff["val_loss"] <= TOL, (name, diff)
        # grad norms of 5-50 before clipping at 0.5: relative 1e-5; weights after 4 Adam steps of lr 1e-2
        assert diff["grad_norm"] <= TOL * max(1.0, max(h["grad_norm"] for h in reference["history"])), (name, diff)
        assert diff["weights"] <= 1e-4, (name, diff)


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(one_process, tmp_path):
    run_accelerate_module(WORKER, tmp_path, 2, None, "DDP test", ["run"])
    saved = torch.load(tmp_path / "result_run.pt", weights_only=False)
    assert saved["num_processes"] == 2 and not saved["fsdp"]
    assert_equal_runs(saved["results"], one_process)


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    """One FSDP2 launch: the uninterrupted runs of every objective, then a DPO run whose process 1 is
    SIGKILLed right after its step-2 sharded checkpoint (so the launch fails)."""
    work = tmp_path_factory.mktemp("fsdp")
    with pytest.raises(RuntimeError, match="SIGKILL"):
        run_accelerate_module(WORKER, work, 2, FSDP, "FSDP2 test", ["kill", *OBJECTIVES])
    return work


@pytest.mark.slow
def test_two_process_fsdp2_equals_one_process(fsdp_runs, one_process):
    saved = torch.load(fsdp_runs / "result_run.pt", weights_only=False)
    assert saved["num_processes"] == 2 and saved["fsdp"]
    assert_equal_runs(saved["results"], one_process)


@pytest.mark.slow
def test_fsdp2_resume_after_kill_equals_uninterrupted_run(fsdp_runs, one_process):
    checkpoint = fsdp_runs / "out_kill_dpo" / "checkpoints" / f"step_{KILL_AFTER_STEP:08d}"
    # sharded: one torch.distributed.checkpoint file per process, no full copy of the weights
    assert sorted(p.name for p in (checkpoint / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not list(checkpoint.glob("*.safetensors")) and not list(checkpoint.glob("*.bin"))
    run_accelerate_module(WORKER, fsdp_runs, 2, FSDP, "FSDP2 resume", ["resume", "dpo"])
    saved = torch.load(fsdp_runs / "result_resume.pt", weights_only=False)
    resumed = saved["results"]["dpo"]
    assert saved["fsdp"] and resumed["resumed_from_step"] == KILL_AFTER_STEP
    uninterrupted = torch.load(fsdp_runs / "result_run.pt", weights_only=False)["results"]["dpo"]
    diff = max_differences(resumed, uninterrupted)
    assert diff["loss"] <= TOL and diff["weights"] <= 1e-6, diff
    assert_equal_runs({"dpo": resumed}, one_process, ["dpo"])


PARAMS = {
    "max_length": 48, "max_prompt_length": 24, "batch_size": 8, "eval_batch_size": 16,
    "tokenizer": {"vocab_size": 300}, "model": TINY_MODEL,
    "training": {"max_steps": 3, "learning_rate": 3e-3, "eval_every": 0, "checkpoint_every": 0, "progress_bar": False,
                 "cpu_threads": 1},
}


def node_runs(tmp_path: Path, machines: list[Machines | None], accelerate_config: str | None = None):
    """reward BT on the toy pairs in one process, and through the node's launcher (``run_in_subprocesses``,
    2 processes in all, ``accelerate_config``: None = DDP) once per entry of ``machines`` (launched
    together, one thread each: two entries with machine_rank 0 and 1 are two nodes on this machine)."""
    pairs = toy_pairs_frame(32, 8)
    single = RewardParams.from_dict(PARAMS)
    train, _ = select_pairs(pairs, "train", single, None, False)
    val, _ = select_pairs(pairs, "val", single, None, False)
    tokenizer = fit_tokenizer(train, single)
    one = train_reward_model(train, val, tokenizer, single, tmp_path / "one", "bt")
    params = asdict(RewardParams.from_dict(deep_merge(PARAMS, {"num_processes": 2, "accelerate_config": accelerate_config})))
    runs, errors = {}, []

    def machine(rank: int) -> None:
        try:
            runs[rank] = run_in_subprocesses(ENTRY, "reward_bt", {"params": params, "output_dir": str(tmp_path / f"state_{rank}")},
                                             {"train": train, "val": val}, {}, {"tokenizer": tokenizer},
                                             tmp_path / f"machine_{rank}", 2, accelerate_config, machines[rank])
        except Exception as error:  # noqa: BLE001 (re-raised below, in the test's thread)
            errors.append(error)

    threads = [threading.Thread(target=machine, args=(rank,)) for rank in range(len(machines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    return one, [runs[rank] for rank in range(len(machines))]


def assert_node_run_equals(run, one) -> None:
    assert run.metrics["num_processes"] == 2
    assert run.training_curve["train_loss"].to_list() == pytest.approx(one.training_curve["train_loss"].to_list(), abs=TOL)
    assert run.metrics["val_loss"] == pytest.approx(one.metrics["val_loss"], abs=TOL)
    weights = run.bundle.model.state_dict()
    assert max(float((weights[k] - w).abs().max()) for k, w in one.bundle.model.state_dict().items()) <= 1e-4


@pytest.mark.slow
def test_two_machines_with_one_process_each_equal_one_process(tmp_path):
    """Two launchers on this machine, as on two nodes: machine_rank 0 and 1, rendezvous on 127.0.0.1."""
    port = free_port()
    one, runs = node_runs(tmp_path, [Machines(2, rank, "127.0.0.1", port) for rank in (0, 1)])
    for run in runs:  # each machine's node gets the (identical) trained model back
        assert_node_run_equals(run, one)


def test_machines_from_env_and_the_multi_node_command():
    """The launcher arguments a cluster's nodes get from PREFALIGN_* variables (docs/distributed.md)."""
    from prefalign.core.training.launch import accelerate_command, machines_from_env

    assert machines_from_env({}) == Machines()
    env = {"PREFALIGN_NUM_MACHINES": "2", "PREFALIGN_MACHINE_RANK": "1", "PREFALIGN_MAIN_PROCESS_IP": "10.0.0.5",
           "PREFALIGN_MAIN_PROCESS_PORT": "29555"}
    machines = machines_from_env(env)
    assert machines == Machines(2, 1, "10.0.0.5", 29555)
    cmd = accelerate_command("m", Path("w"), 16, FSDP, machines=machines)
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert {k: flags[k] for k in ("--num_machines", "--num_processes", "--machine_rank", "--main_process_ip",
                                  "--main_process_port", "--config_file")} == {
        "--num_machines": "2", "--num_processes": "16", "--machine_rank": "1", "--main_process_ip": "10.0.0.5",
        "--main_process_port": "29555", "--config_file": FSDP}
    assert cmd[-3:] == ["-m", "m", "w"]
    single = accelerate_command("m", Path("w"), 2, None, machines=Machines())
    assert "--machine_rank" not in single and single[single.index("--num_machines") + 1] == "1"
    with pytest.raises(ValueError, match="PREFALIGN_MAIN_PROCESS_IP"):
        machines_from_env({"PREFALIGN_NUM_MACHINES": "2", "PREFALIGN_MACHINE_RANK": "0"})
    with pytest.raises(ValueError, match=r"PREFALIGN_MACHINE_RANK=2 must be in \[0, PREFALIGN_NUM_MACHINES=2\)"):
        machines_from_env({**env, "PREFALIGN_MACHINE_RANK": "2"})
    with pytest.raises(ValueError, match="PREFALIGN_NUM_MACHINES='two' must be an integer"):
        machines_from_env({**env, "PREFALIGN_NUM_MACHINES": "two"})
    with pytest.raises(ValueError, match="num_processes=3 must be a multiple of PREFALIGN_NUM_MACHINES=2"):
        accelerate_command("m", Path("w"), 3, None, machines=machines)


def test_fsdp_settings_the_loop_does_not_implement_are_rejected(monkeypatch):
    from prefalign.core.training.sharding import fsdp2_requested, use_fsdp2

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert not fsdp2_requested()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert fsdp2_requested() and not use_fsdp2(1)  # one process: nothing to shard
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    with pytest.raises(ValueError, match="FSDP_OFFLOAD_PARAMS=true is not supported"):
        fsdp2_requested()
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "false")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        fsdp2_requested()
