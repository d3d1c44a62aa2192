"""``RewardModel``: a backbone with a scalar or GPM head, saved as a ``save_pretrained`` directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from prefalign.core.reward.heads import POOLINGS, GPMHead, RewardOutput, ScalarHead, gather_rows, pool
from prefalign.core.training.batching import SequenceBatch
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
    pooling: str = "auto"  # auto | last | first | mean (methods.md s6); auto: last for decoders, first for encoders
    max_length: int = 256
    max_prompt_length: int = 128

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "HeadConfig":
        cfg = dataclass_from_params(cls, params, "head")
        if cfg.head not in HEAD_TYPES:
            raise ValueError(f"head={cfg.head!r} is not one of {HEAD_TYPES}")
        if cfg.tau <= 0:
            raise ValueError(f"tau={cfg.tau} must be > 0")
        if cfg.pooling not in ("auto", *POOLINGS):
            raise ValueError(f"head.pooling={cfg.pooling!r} is not one of {('auto', *POOLINGS)}")
        return cfg


def is_bidirectional_encoder(config: PretrainedConfig) -> bool:
    """BERT/MiniLM/DeBERTa/RoBERTa-family backbones (masked-LM architectures not set up as decoders)."""
    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


def default_pooling(config: PretrainedConfig) -> str:
    """``first`` ([CLS], what sequence-classification heads of encoders read) for encoders, else ``last``."""
    return "first" if is_bidirectional_encoder(config) else "last"


class RewardModel(torch.nn.Module):
    """Backbone (``AutoModel``) + head. ``forward(SequenceBatch) -> RewardOutput``.

    ``head_config.pooling`` "auto" is resolved from the backbone here (and saved resolved). With a
    bidirectional encoder, the prompt's hidden states depend on the response, so GPM's gate comes
    from a separate prompt-only forward (``[CLS] prompt [SEP]``): a function of the prompt alone,
    shared by every response to it, as the causal decoder's last-prompt-token state is (methods.md s6).
    """

    checkpoint_kind = "reward_model"

    def __init__(self, backbone: PreTrainedModel, head_config: HeadConfig | dict[str, Any]):
        super().__init__()
        cfg = head_config if isinstance(head_config, HeadConfig) else HeadConfig.from_dict(head_config)
        if cfg.pooling == "auto":
            cfg = replace(cfg, pooling=default_pooling(backbone.config))
        self.head_config = cfg
        self.bidirectional = is_bidirectional_encoder(backbone.config)
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        cfg = self.head_config
        self.head = ScalarHead(hidden) if cfg.head == "scalar" else GPMHead(hidden, cfg.gpm_k)

    @property
    def is_gpm(self) -> bool:
        return self.head_config.head == "gpm"

    def forward(self, sequences: SequenceBatch) -> RewardOutput:
        pooling = self.head_config.pooling
        hidden = self.backbone(input_ids=sequences.input_ids, attention_mask=sequences.attention_mask).last_hidden_state
        pooled = pool(hidden, sequences.attention_mask, sequences.last_index, pooling)
        if not self.is_gpm:
            return RewardOutput(rewards=self.head(pooled), tau=self.head_config.tau)
        if self.bidirectional:
            # Prompt-only forward: positions 0..last_prompt_index of each row, nothing of the response.
            width = int(sequences.last_prompt_index.max()) + 1
            positions = torch.arange(width, device=sequences.input_ids.device)
            mask = (positions[None, :] <= sequences.last_prompt_index[:, None]).to(sequences.attention_mask.dtype)
            prompt_hidden = self.backbone(input_ids=sequences.input_ids[:, :width], attention_mask=mask).last_hidden_state
            prompt_pooled = pool(prompt_hidden, mask, sequences.last_prompt_index, pooling)
        else:
            prompt_pooled = gather_rows(hidden, sequences.last_prompt_index)  # causal: sees the prompt only
        v, gate = self.head(pooled, prompt_pooled)
        return RewardOutput(embeddings=v, gate=gate, tau=self.head_config.tau)

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
