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
