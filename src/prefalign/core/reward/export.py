"""Scalar reward models as standard ``AutoModelForSequenceClassification`` directories (num_labels=1).

Why this is exact for decoder backbones (Llama, Qwen2, Mistral, Gemma, ...): transformers'
``GenericForSequenceClassification`` is ``<base model> + score`` where ``score`` is a bias-free
``Linear(hidden, num_labels)`` applied to the hidden state of the rightmost token that is not the
pad token. prefalign's ``ScalarHead`` is the same bias-free linear map read at the last real
token (``last_index`` from the attention mask). The two positions agree when the input is
right-padded with a pad id that never occurs inside a sequence. When the pad id is also the
EOS/BOS id (common: tokenizers without a pad token borrow EOS), the rightmost non-pad token would
be the one BEFORE the final EOS; the export then writes ``pad_token_id: null`` in its config, so
transformers reads the last position (exact for one sequence, or a batch without padding) and
refuses padded batches with its own error instead of returning a wrong reward.

Encoder classes (BERT, DeBERTa, ...) pool through their own layers (BERT: dense + tanh on [CLS],
then a classifier with a bias): prefalign's head cannot be written into them exactly, so
``check_exportable`` raises naming the architecture.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GenericForSequenceClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return set(value) if isinstance(value, (list, tuple)) else {value}


def sequence_classifier_class(config: PretrainedConfig) -> type[PreTrainedModel] | None:
    """transformers' ``*ForSequenceClassification`` class for this backbone config, if any.

    Args:
        config: the backbone's transformers config.

    Returns:
        The class registered for ``type(config)`` in transformers' sequence-classification mapping, or None.
    """
    try:
        return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:
        return None


def check_exportable(config: PretrainedConfig, head: torch.nn.Module) -> type[PreTrainedModel]:
    """The class to export to; raises when the rewards could not be reproduced exactly.

    Raises:
        ValueError: naming the architecture (no sequence-classification class, or one whose
            pooling / classifier differ from prefalign's last-token linear head), or a head with a
            bias (checkpoints from before the bias-free head).

    Args:
        config: the backbone's config.
        head: the reward model's scalar head (a bias-free linear layer is exportable).

    Returns:
        The ``*ForSequenceClassification`` class to save as.
    """
    cls = sequence_classifier_class(config)
    if cls is None or not issubclass(cls, GenericForSequenceClassification):
        name = cls.__name__ if cls is not None else f"(none for model_type={config.model_type!r})"
        raise ValueError(
            f"cannot export a reward model on a {config.model_type!r} backbone as {name}: that class does not read "
            "a bias-free linear score at the last non-pad token (encoders pool [CLS] through their own dense+tanh "
            "pooler and a biased classifier), so plain transformers would give different rewards. Load it with "
            "prefalign.core.models.checkpoint.load_bundle(path) instead, or train on a decoder backbone "
            "(Llama, Qwen2, Mistral, Gemma) to get a standard AutoModelForSequenceClassification directory"
        )
    score = getattr(head, "score", None)
    if score is None or score.out_features != 1 or score.bias is not None:
        raise ValueError(
            "only a scalar head without bias exports to AutoModelForSequenceClassification (num_labels=1); "
            "this head has " + ("a bias (an old checkpoint): retrain it" if score is not None and score.bias is not None else "no scalar score layer (GPM?)")
        )
    return cls


def save_sequence_classifier(backbone: PreTrainedModel, head: torch.nn.Module, directory: str | Path) -> Path:
    """Write ``backbone`` + ``head.score`` as ``<Arch>ForSequenceClassification`` (num_labels=1).

    No weights are copied: a shell of the class is built on the meta device and the trained
    modules are put in its place before ``save_pretrained``.

    Args:
        backbone: the plain (unadapted or merged) base model, e.g. ``LlamaModel``.
        head: a ``ScalarHead`` (``head.score``: Linear(hidden, 1, bias=False)).
        directory: where to write config.json + model.safetensors.
    Returns:
        ``directory``.
    Raises:
        ValueError: see ``check_exportable``.
    """
    config = copy.deepcopy(backbone.config)
    cls = check_exportable(config, head)
    config.num_labels = 1
    config.problem_type = "regression"
    reserved = _ids(getattr(config, "eos_token_id", None)) | _ids(getattr(config, "bos_token_id", None))
    if config.pad_token_id in reserved:
        # see the module docstring: a pad id that also ends sequences would move the pooled position
        config.pad_token_id = None
    with torch.device("meta"):
        shell = cls(config)
    setattr(shell, shell.base_model_prefix, backbone)
    shell.score = head.score
    shell.save_pretrained(directory)
    return Path(directory)
