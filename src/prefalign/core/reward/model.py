"""``RewardModel``: a backbone with a scalar or GPM head, saved as a ``save_pretrained`` directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, PreTrainedModel

from prefalign.core.reward.heads import GPMHead, RewardOutput, ScalarHead
from prefalign.core.training.batching import SequenceBatch
from prefalign.core.training.packing import PackedSequences, model_inputs, packed_hidden_rows
from prefalign.core.models.params import dataclass_from_params

HEAD_TYPES = ("scalar", "gpm")
HEAD_CONFIG_FILE = "head_config.json"
HEAD_WEIGHTS_FILE = "head.safetensors"


@dataclass(frozen=True)
class HeadConfig:
    """The head, and the truncation the model was trained with (scoring reuses it)."""

    head: str = "scalar"  # scalar | gpm
    gpm_k: int = 2  # GPM: number of 2x2 blocks; embedding dimension 2k
    tau: float = 0.1  # GPM: P(i > j) = sigmoid(s / tau)
    max_length: int = 256
    max_prompt_length: int = 128

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "HeadConfig":
        cfg = dataclass_from_params(cls, params, "head")
        if cfg.head not in HEAD_TYPES:
            raise ValueError(f"head={cfg.head!r} is not one of {HEAD_TYPES}")
        if cfg.tau <= 0:
            raise ValueError(f"tau={cfg.tau} must be > 0")
        return cfg


class RewardModel(torch.nn.Module):
    """Backbone (``AutoModel``) + head. ``forward(SequenceBatch) -> RewardOutput``."""

    checkpoint_kind = "reward_model"

    def __init__(self, backbone: PreTrainedModel, head_config: HeadConfig | dict[str, Any]):
        super().__init__()
        self.head_config = head_config if isinstance(head_config, HeadConfig) else HeadConfig.from_dict(head_config)
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        cfg = self.head_config
        self.head = ScalarHead(hidden) if cfg.head == "scalar" else GPMHead(hidden, cfg.gpm_k)

    @property
    def is_gpm(self) -> bool:
        return self.head_config.head == "gpm"

    def forward(self, sequences: SequenceBatch | PackedSequences) -> RewardOutput:
        if isinstance(sequences, PackedSequences):  # padding-free rows (core/training/packing.py)
            hidden = self.backbone(**model_inputs(self.backbone, sequences)).last_hidden_state
            # [N, 2, H]: each sequence's last token, then its last prompt token; the heads read rows 0 and 1
            hidden = torch.stack([packed_hidden_rows(hidden, sequences.last_index), packed_hidden_rows(hidden, sequences.last_prompt_index)], 1)
            last = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
            last_prompt = last + 1
        else:
            hidden = self.backbone(input_ids=sequences.input_ids, attention_mask=sequences.attention_mask).last_hidden_state
            last, last_prompt = sequences.last_index, sequences.last_prompt_index
        if self.is_gpm:
            v, gate = self.head(hidden, last, last_prompt)
            return RewardOutput(embeddings=v, gate=gate, tau=self.head_config.tau)
        return RewardOutput(rewards=self.head(hidden, last), tau=self.head_config.tau)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.backbone.save_pretrained(directory)
        (directory / HEAD_CONFIG_FILE).write_text(json.dumps(asdict(self.head_config), indent=2))
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, directory / HEAD_WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "RewardModel":
        directory = Path(directory)
        head_config = HeadConfig.from_dict(json.loads((directory / HEAD_CONFIG_FILE).read_text()))
        model = cls(AutoModel.from_pretrained(directory), head_config)
        model.head.load_state_dict(load_file(directory / HEAD_WEIGHTS_FILE))
        return model
