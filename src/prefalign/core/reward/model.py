"""``RewardModel``: a backbone (optionally with LoRA adapters) and a reward head (core/reward/heads.py:
scalar, GPM, or any head registered there; the model asks the head, never its name).

Saved as a ``save_pretrained`` directory; a scalar model on a decoder backbone IS a standard
``AutoModelForSequenceClassification`` directory (num_labels=1). Layouts: docs/reward.md.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from prefalign.core.models.backbone import is_bidirectional_encoder
from prefalign.core.models.checkpoint import save_tokenizer
from prefalign.core.models.loading import one_construction_at_a_time
from prefalign.core.models.lora import is_adapted, is_adapter_dir, load_adapted, merged_copy, save_adapted
from prefalign.core.models.pooled_rows import last_layer_at_rows
from prefalign.core.reward.export import check_exportable, save_sequence_classifier
from prefalign.core.reward.heads import HEADS, POOLINGS, RewardOutput, gather_rows, pool
from prefalign.core.training.batching import SequenceBatch
from prefalign.core.training.packing import PackedSequences, packed_forward, packed_hidden_rows
from prefalign.core.models.params import dataclass_from_params

HEAD_TYPES = tuple(HEADS)  # the registered heads' names (core/reward/heads.py)
HEAD_CONFIG_FILE = "head_config.json"
HEAD_WEIGHTS_FILE = "head.safetensors"


@dataclass(frozen=True)
class HeadConfig:
    """The head, and the truncation the model was trained with (scoring reuses it)."""

    head: str = "scalar"  # a registered head (HEAD_TYPES): scalar | gpm | ...
    gpm_k: int = 2  # GPM: number of 2x2 blocks; embedding dimension 2k
    tau: float = 0.1  # GPM: P(i > j) = sigmoid(s / tau)
    pooling: str = "auto"  # auto | last | first | mean (methods.md s6); auto: last for decoders, first for encoders
    max_length: int = 256
    max_prompt_length: int = 128

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "HeadConfig":
        """Parse and check a head block.

        Args:
            params: HeadConfig keys (``head``, ``gpm_k``, ``tau``, ``pooling``, the lengths), or None.

        Returns:
            The HeadConfig.

        Raises:
            ValueError: an unknown key, a head that is not registered (core/reward/heads.py HEADS),
                tau <= 0, a setting the head rejects (``check_config``), or an unknown pooling.
        """
        cfg = dataclass_from_params(cls, params, "head")
        if cfg.head not in HEADS:
            raise ValueError(f"head={cfg.head!r} is not one of {tuple(HEADS)} (the heads registered in core/reward/heads.py)")
        if cfg.tau <= 0:
            raise ValueError(f"tau={cfg.tau} must be > 0")
        HEADS[cfg.head].check_config(cfg)  # what the head would reject after the tokenizer is trained
        if cfg.pooling not in ("auto", *POOLINGS):
            raise ValueError(f"head.pooling={cfg.pooling!r} is not one of {('auto', *POOLINGS)}")
        return cfg


def default_pooling(config: PretrainedConfig) -> str:
    """The pooling of ``pooling: auto``.

    Args:
        config: the backbone's transformers config.

    Returns:
        ``first`` ([CLS], what sequence-classification heads of encoders read) for encoders, else ``last``.

    Source: docs/methods.md s6.
    """
    return "first" if is_bidirectional_encoder(config) else "last"


class RewardModel(torch.nn.Module):
    """Backbone (``AutoModel``) + head. ``forward(SequenceBatch) -> RewardOutput``.

    ``head_config.pooling`` "auto" is resolved from the backbone here (and saved resolved). With a
    bidirectional encoder, the prompt's hidden states depend on the response, so GPM's gate comes
    from a separate prompt-only forward (``[CLS] prompt [SEP]``): a function of the prompt alone,
    shared by every response to it, as the causal decoder's last-prompt-token state is (methods.md s6).
    """

    checkpoint_kind = "reward_model"
    #: the last layer's o_proj and MLP run at the pooled positions only (core/models/pooled_rows.py; 2-3% less CPU time
    #: per reward step on SmolLM2, docs/performance.md); False: at every position (the plain computation)
    last_layer_at_pooled_rows = True

    def __init__(self, backbone: PreTrainedModel, head_config: HeadConfig | dict[str, Any], head_bias: bool = False):
        super().__init__()
        cfg = head_config if isinstance(head_config, HeadConfig) else HeadConfig.from_dict(head_config)
        if cfg.pooling == "auto":
            cfg = replace(cfg, pooling=default_pooling(backbone.config))
        self.head_config = cfg
        self.bidirectional = is_bidirectional_encoder(backbone.config)
        self.backbone = backbone
        hidden = (backbone.get_base_model() if is_adapted(backbone) else backbone).config.hidden_size
        cfg = self.head_config
        self.head = HEADS[cfg.head].build(hidden, cfg, bias=head_bias)

    @property
    def has_scalar_reward(self) -> bool:
        """The head gives one reward per response (response_rewards, sequence-classification export)."""
        return self.head.scalar_reward

    def forward(self, sequences: SequenceBatch | PackedSequences) -> RewardOutput:
        """The head's outputs for N sequences.

        Args:
            sequences: a padded SequenceBatch ([N, T] ids and mask, last_index and last_prompt_index
                [N]) or PackedSequences (padding-free rows, core/training/packing.py).

        Returns:
            The head's RewardOutput (``rewards`` [N], or GPM ``embeddings`` [N, 2k] and ``gate`` [N, k]).

        Raises:
            ValueError: packed input to a model that is not a causal decoder read at its last token.

        Source: docs/methods.md s3, s6.
        """
        pooling = self.head_config.pooling
        if isinstance(sequences, PackedSequences):  # padding-free rows (core/training/packing.py)
            if pooling != "last" or self.bidirectional:
                raise ValueError(
                    f"packed or prompt-shared batches (training.packing / training.share_prompt) need a causal decoder "
                    f"read at its last token; this model has head.pooling={pooling!r}"
                    f"{' on a bidirectional encoder' if self.bidirectional else ''}: set both switches to auto (the default: "
                    "padded for such models) or false"
                )
            read = torch.cat([sequences.last_index, sequences.last_prompt_index]) if self.head.reads_prompt else sequences.last_index
            with self._only_rows(read, sequences.input_ids.shape[1]):
                hidden = packed_forward(self.backbone, sequences).last_hidden_state
            pooled = packed_hidden_rows(hidden, sequences.last_index)
            prompt_pooled = packed_hidden_rows(hidden, sequences.last_prompt_index) if self.head.reads_prompt else None
            return self.head.outputs(pooled, prompt_pooled, self.head_config.tau)
        with self._only_rows(self._pooled_positions(sequences), sequences.input_ids.shape[1]):
            hidden = self.backbone(input_ids=sequences.input_ids, attention_mask=sequences.attention_mask).last_hidden_state
        pooled = pool(hidden, sequences.attention_mask, sequences.last_index, pooling)
        if not self.head.reads_prompt:
            return self.head.outputs(pooled, None, self.head_config.tau)
        if self.bidirectional:
            # Prompt-only forward: positions 0..last_prompt_index of each row, nothing of the response.
            width = int(sequences.last_prompt_index.max()) + 1
            positions = torch.arange(width, device=sequences.input_ids.device)
            mask = (positions[None, :] <= sequences.last_prompt_index[:, None]).to(sequences.attention_mask.dtype)
            prompt_hidden = self.backbone(input_ids=sequences.input_ids[:, :width], attention_mask=mask).last_hidden_state
            prompt_pooled = pool(prompt_hidden, mask, sequences.last_prompt_index, pooling)
        else:
            prompt_pooled = gather_rows(hidden, sequences.last_prompt_index)  # causal: sees the prompt only
        return self.head.outputs(pooled, prompt_pooled, self.head_config.tau)

    def _pooled_positions(self, sequences: SequenceBatch) -> torch.Tensor | None:
        """[N or 2N, 2] (row, column) positions of a padded batch the head reads; None: all (not last-token pooling)."""
        if self.head_config.pooling != "last" or self.bidirectional:
            return None
        rows = torch.arange(sequences.input_ids.shape[0], device=sequences.input_ids.device)
        last = [sequences.last_index] + ([sequences.last_prompt_index] if self.head.reads_prompt else [])
        return torch.cat([torch.stack([rows, index], dim=1) for index in last])

    def _only_rows(self, rows: torch.Tensor | None, width: int):
        if rows is None or not self.last_layer_at_pooled_rows:
            return nullcontext(False)
        return last_layer_at_rows(self.backbone, rows, width)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the model as a directory (layouts in docs/reward.md, "Checkpoint layout").

        - scalar head, backbone with a transformers sequence-classification class whose pooling
          matches (decoders): a standard ``AutoModelForSequenceClassification`` directory
          (num_labels=1), loadable by plain transformers with the same rewards;
        - scalar head on another backbone (encoders), or GPM: backbone ``save_pretrained`` +
          ``head.safetensors``;
        - LoRA backbone: peft adapter + ``head.safetensors`` (the head is trained fully and saved
          whole), or, with ``model.lora.merge_on_save``, the merged model in one of the above;
        - always ``head_config.json`` (head type, GPM k and tau, the truncation lengths).

        Args:
            directory: the folder to write (created).

        Returns:
            None.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        backbone = self.backbone
        if is_adapted(backbone) and getattr(backbone, "prefalign_merge_on_save", False):
            backbone = merged_copy(backbone)
        if is_adapted(backbone):
            save_adapted(backbone, directory)
            self._save_head(directory)
        elif self.has_scalar_reward and self.exportable:
            save_sequence_classifier(backbone, self.head, directory)
        else:
            backbone.save_pretrained(directory)
            self._save_head(directory)
        (directory / HEAD_CONFIG_FILE).write_text(json.dumps(asdict(self.head_config), indent=2))

    @property
    def exportable(self) -> bool:
        """True when ``export_sequence_classifier`` can reproduce the rewards exactly (a scalar
        reward, pooling ``last``, an architecture whose transformers class pools the same way)."""
        if self.head_config.pooling != "last":  # transformers' seq-cls decoders read the last real token
            return False
        try:
            check_exportable(self._base_config, self.head)
        except ValueError:
            return False
        return self.has_scalar_reward

    @property
    def _base_config(self):
        return self.backbone.get_base_model().config if is_adapted(self.backbone) else self.backbone.config

    def export_sequence_classifier(self, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
        """A standard ``AutoModelForSequenceClassification`` directory (num_labels=1, LoRA merged).

        ``AutoModelForSequenceClassification.from_pretrained(directory)(input_ids, attention_mask).logits[:, 0]``
        equals this model's rewards for the same right-padded ids (see export.py for the pad-token
        rule). With ``tokenizer`` (the one the model was trained with) the directory also holds it,
        carrying the chat template of the training layout (``save_tokenizer``), so
        ``tokenizer.apply_chat_template(prompt turns + [assistant response])`` gives those ids.

        Args:
            directory: the folder to write.
            tokenizer: the model's tokenizer, saved beside it, or None.

        Returns:
            The directory written.

        Raises:
            ValueError: a head without a scalar reward (GPM), or a backbone whose transformers class pools
                differently (named, e.g. BertForSequenceClassification); see ``check_exportable``.
        """
        if not self.has_scalar_reward:
            raise ValueError(
                f"a {self.head_config.head.upper()} has no scalar reward to export as AutoModelForSequenceClassification "
                f"(head.head={self.head_config.head!r}); load it with "
                "prefalign.core.reward.scoring.load_preference_model(path) (layout in docs/reward.md)"
            )
        check_exportable(self._base_config, self.head)  # the architecture first: names the class
        if self.head_config.pooling != "last":
            raise ValueError(
                f"head.pooling={self.head_config.pooling!r}: AutoModelForSequenceClassification decoders read the "
                "last real token, so only pooling 'last' exports with the same rewards; retrain with head.pooling: last "
                "or load the model with prefalign's RewardModel.from_pretrained"
            )
        backbone = merged_copy(self.backbone) if is_adapted(self.backbone) else self.backbone
        out = save_sequence_classifier(backbone, self.head, directory)
        if tokenizer is not None:
            save_tokenizer(tokenizer, out)
        return out

    def _save_head(self, directory: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, directory / HEAD_WEIGHTS_FILE)

    @classmethod
    @one_construction_at_a_time
    def from_pretrained(cls, directory: str | Path) -> "RewardModel":
        """Load any layout ``save_pretrained`` writes (LoRA adapters stay unmerged and trainable).

        Args:
            directory: a folder written by ``save_pretrained``.

        Returns:
            The RewardModel (train mode, as torch builds it).

        Raises:
            FileNotFoundError: no ``head_config.json`` there. ValueError: a head that is not registered.
        """
        directory = Path(directory)
        head_config = HeadConfig.from_dict(json.loads((directory / HEAD_CONFIG_FILE).read_text()))
        if not (directory / HEAD_WEIGHTS_FILE).exists():  # standard sequence-classification directory
            classifier = AutoModelForSequenceClassification.from_pretrained(directory)
            model = cls(getattr(classifier, classifier.base_model_prefix), head_config)
            model.head.score = classifier.score
            return model
        backbone = load_adapted(directory, AutoModel) if is_adapter_dir(directory) else AutoModel.from_pretrained(directory)
        head_state = load_file(directory / HEAD_WEIGHTS_FILE)
        model = cls(backbone, head_config, head_bias="score.bias" in head_state)
        model.head.load_state_dict(head_state)
        return model
