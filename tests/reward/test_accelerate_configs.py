"""conf/accelerate/*.yaml are valid accelerate launch configs (they cannot be run on this CPU machine)."""

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


def test_deepspeed_zero3_config_builds_accelerates_deepspeed_plugin():
    """deepspeed is not installed here, so ZeRO-3 never runs (docs/distributed.md); the config's
    deepspeed_config section at least builds accelerate's DeepSpeedPlugin into a ZeRO-3 config."""
    from accelerate.utils import DeepSpeedPlugin

    raw = yaml.safe_load((CONFIG_DIR / "deepspeed_zero3.yaml").read_text())["deepspeed_config"]
    plugin = DeepSpeedPlugin(**raw)
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0 and plugin.deepspeed_config["gradient_accumulation_steps"] == 1
    # no micro-batch size: accelerate's prepare() would need a dataloader to fill 'auto' (the loop passes none)
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"
