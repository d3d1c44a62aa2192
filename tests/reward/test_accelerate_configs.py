"""conf/accelerate/*.yaml are valid accelerate launch configs (GPU settings; the CPU runs are in tests/training/)."""

import copy
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf" / "accelerate"
EXPECTED = {
    "single": DistributedType.NO,
    "ddp": DistributedType.MULTI_GPU,
    "fsdp": DistributedType.FSDP,
    "deepspeed_zero3": DistributedType.DEEPSPEED,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_as_accelerate_cluster_config(name):
    path = CONFIG_DIR / f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown top-level keys and bad enums
    assert config.distributed_type == EXPECTED[name]
    assert config.mixed_precision == "bf16" and config.use_cpu is False
    # nested plugin keys must be ones `accelerate launch` knows (it maps each to a --flag)
    launch_flags = {a.dest for a in launch_command_parser()._actions}
    raw = yaml.safe_load(path.read_text())
    for section in ("fsdp_config", "deepspeed_config"):
        unknown = set(raw.get(section, {})) - launch_flags
        assert not unknown, f"{path.name}: {section} keys unknown to accelerate launch: {sorted(unknown)}"


def deepspeed_launch(*flags: str) -> tuple[list[str] | None, dict[str, str], object]:
    """What ``accelerate launch --config_file conf/accelerate/deepspeed_zero3.yaml <flags> -m m w`` does
    before it starts processes (accelerate's launch_command up to its deepspeed_launcher call): the
    command it would run instead of torchrun (None = torchrun), the ACCELERATE_* environment every
    process gets, and the resolved arguments."""
    from accelerate.commands.launch import _validate_launch_command
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIG_DIR / "deepspeed_zero3.yaml"), *flags, "-m", "m", "w"])
    args, defaults, _ = _validate_launch_command(args)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    cmd, env = prepare_deepspeed_cmd_env(args)
    return cmd, {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}, args


def test_deepspeed_zero3_config_as_the_training_processes_see_it():
    """The DeepSpeedPlugin every process builds from the launcher's environment: ZeRO-3, no
    zero.Init (the node builds the model first), and the loop-owned keys left to the loop
    (core/training/zero3.py fills them from the training block; tests/training/test_zero3.py runs it)."""
    from accelerate.utils import DeepSpeedPlugin, patch_environment

    from prefalign.core.training import zero3

    cmd, env, _ = deepspeed_launch("--num_processes", "8", "--main_process_port", "29555")
    assert cmd is None  # one node: torchrun
    with patch_environment(**env):
        plugin = DeepSpeedPlugin()
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == 3 and config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert plugin.zero3_init_flag is False
    # unset in the file, so nothing can contradict the training block
    assert [config[k] for k in zero3.LOOP_OWNED] == ["auto", "auto", "auto"]
    # batch_size 16 on 8 processes, 2 accumulated micro-batches, clipping at 0.5
    filled = zero3.configure(copy.deepcopy(config), 2, 2, 0.5)
    assert [filled[k] for k in zero3.LOOP_OWNED] == [2, 2, 0.5] and filled["train_batch_size"] == "auto"
    assert zero3.configure(copy.deepcopy(config), 2, 2, None)["gradient_clipping"] == 0.0  # no clipping is DeepSpeed's 0


def test_deepspeed_zero3_several_nodes_start_their_own_processes_with_torchrun():
    """Each node's Kedro run launches its node's processes (docs/distributed.md): with DeepSpeed that
    needs deepspeed_multinode_launcher: standard (torchrun); accelerate's default, pdsh, would run the
    `deepspeed` runner that ssh-es into a hostfile's machines from one node."""
    cmd, _, args = deepspeed_launch("--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
                                    "--main_process_ip", "10.0.0.5", "--main_process_port", "29555")
    assert cmd is None, f"accelerate would run {cmd} instead of torchrun"
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "8")


def test_deepspeed_values_set_in_the_accelerate_config_must_match_the_training_block():
    from prefalign.core.training import zero3

    with pytest.raises(ValueError, match=r"gradient_clipping=1.0 but training.max_grad_norm is 0.5"):
        zero3.configure({"gradient_clipping": 1.0}, 1, 1, 0.5)
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps=1 but training.gradient_accumulation_steps is 4"):
        zero3.configure({"gradient_accumulation_steps": 1}, 1, 4, 1.0)
    with pytest.raises(ValueError, match=r"gradient_clipping=1.0 but training.max_grad_norm is None"):
        zero3.configure({"gradient_clipping": 1.0}, 1, 1, None)
    config = zero3.configure({"gradient_clipping": 1.0, "gradient_accumulation_steps": 4}, 3, 4, 1.0)  # equal: kept
    assert (config["gradient_clipping"], config["gradient_accumulation_steps"], config["train_micro_batch_size_per_gpu"]) == (1.0, 4, 3)


def test_a_deepspeed_config_without_deepspeed_fails_before_the_run(monkeypatch, tmp_path):
    """deepspeed is not a dependency: a DeepSpeed config is refused in one line naming the install recipe."""
    import importlib.util

    from prefalign.core.training.launch import check_accelerate_config

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real_find_spec(name, *a))
    with pytest.raises(ValueError, match=r"policy.defaults.accelerate_config='.*deepspeed_zero3.yaml' is a DeepSpeed "
                                         r"config, and deepspeed is not installed: .*docs/distributed.md"):
        check_accelerate_config(str(CONFIG_DIR / "deepspeed_zero3.yaml"), "policy.defaults.accelerate_config")
    check_accelerate_config(str(CONFIG_DIR / "fsdp.yaml"))  # no error: not DeepSpeed
    check_accelerate_config(None)
    with pytest.raises(FileNotFoundError, match=r"accelerate_config='.*fsdp2.yaml' does not exist; the configs in .*ddp.yaml"):
        check_accelerate_config(str(CONFIG_DIR / "fsdp2.yaml"))
