"""A model and its tokenizer as one ``save_pretrained``-style directory (safetensors, never pickles).

Layout::

    <dir>/prefalign_checkpoint.json   {"kind": "causal_lm" | "backbone" | "reward_model", ...}
    <dir>/config.json, model.safetensors   (transformers' save_pretrained)
    <dir>/tokenizer.json, tokenizer_config.json, chat_template.jinja ...  (the template of the layout
                                             trained in: ``save_tokenizer``)
    <dir>/head_config.json, head.safetensors   (reward models only, written by the model class;
                                               scalar reward models are a standard
                                               AutoModelForSequenceClassification dir instead)
    <dir>/adapter_config.json, adapter_model.safetensors, prefalign_lora.json, [base_model/]
                                             (LoRA models saved unmerged: core/models/lora.py)

``kind`` picks the loader, from a fixed registry (no class path from the file is imported).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from prefalign.core.models.loading import one_construction_at_a_time
from prefalign.core.models.lora import is_adapted, is_adapter_dir, load_adapted, save_adapted
from prefalign.core.training.frozen_cache import enable_frozen_cache, frozen_prefix_layers

MARKER_FILE = "prefalign_checkpoint.json"
# kind -> "module:Class" with a from_pretrained(path) classmethod; imported lazily (reward model lives in core/reward).
LOADERS: dict[str, str] = {
    "causal_lm": "transformers:AutoModelForCausalLM",
    "backbone": "transformers:AutoModel",
    "reward_model": "prefalign.core.reward.model:RewardModel",
}


@dataclass
class ModelBundle:
    """What checkpoint datasets save and load: a model and the tokenizer it was trained with."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    metadata: dict[str, Any] | None = None  # small JSON-able facts (objective, steps, ...)


def checkpoint_kind(model: torch.nn.Module) -> str:
    """Which loader a saved model needs.

    Args:
        model: the model to save.

    Returns:
        Its ``checkpoint_kind`` attribute when set (reward models), else ``causal_lm`` for a model with
        ``generate`` and ``lm_head``, else ``backbone``.
    """
    kind = getattr(model, "checkpoint_kind", None)
    if kind:
        return kind
    return "causal_lm" if hasattr(model, "generate") and hasattr(model, "lm_head") else "backbone"


def save_bundle(bundle: ModelBundle, directory: str | Path) -> Path:
    """Save a model and its tokenizer as one checkpoint directory (layout in the module docstring).

    Args:
        bundle: the model, its tokenizer, and JSON-able metadata (a ``checkpoint`` key is dropped);
            ``frozen_layers`` is added when the model's lowest layers did not train.
        directory: where to write (created if absent).

    Returns:
        ``directory`` as a Path.

    Raises:
        ValueError: the model's kind has no loader in LOADERS.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kind = checkpoint_kind(bundle.model)
    if kind not in LOADERS:
        raise ValueError(f"model kind {kind!r} has no loader; known kinds: {sorted(LOADERS)}")
    if is_adapted(bundle.model):  # a policy with LoRA (reward models handle their own backbone)
        save_adapted(bundle.model, directory)
    else:
        bundle.model.save_pretrained(directory)
    save_tokenizer(bundle.tokenizer, directory)
    metadata = {k: v for k, v in (bundle.metadata or {}).items() if k != "checkpoint"}  # the path is the loader's to say
    frozen = frozen_prefix_layers(bundle.model)
    if frozen:  # trained with these layers frozen: scoring reads them through the frozen-layer cache
        metadata["frozen_layers"] = frozen
    marker = {"kind": kind, "format_version": 1, "metadata": metadata, "lora_adapter": is_adapter_dir(directory)}
    (directory / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True))
    return directory


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """``tokenizer.save_pretrained(directory)`` with the chat template of the layout the model was
    trained in (``core.training.batching.layout_chat_template``: a chat model's own template, or the
    ``[bos] prompt response [eos]`` template for tokenizers without one), so that plain
    ``tokenizer.apply_chat_template(conversation)`` gives the ids prefalign trained on. The tokenizer
    object itself is left as it was.

    Args:
        tokenizer: the tokenizer the model was trained with.
        directory: the checkpoint directory.
    """
    from prefalign.core.training.batching import layout_chat_template

    template, before = layout_chat_template(tokenizer), getattr(tokenizer, "chat_template", None)
    try:
        if template is not None:
            tokenizer.chat_template = template
        tokenizer.save_pretrained(directory)
    finally:
        tokenizer.chat_template = before


@one_construction_at_a_time
def load_bundle(directory: str | Path, device: str | torch.device = "cpu", frozen_cache: bool = True) -> ModelBundle:
    """Load a checkpoint written by ``save_bundle`` (weights only from safetensors; the loader class from LOADERS).

    Args:
        directory: the checkpoint directory.
        device: where the model goes; it is put in eval mode.
        frozen_cache: attach the frozen-layer cache when the checkpoint records ``frozen_layers``.

    Returns:
        A ModelBundle with the model, its tokenizer and the saved metadata.

    Raises:
        FileNotFoundError: no ``prefalign_checkpoint.json`` in ``directory`` (or a LoRA base that no
            longer exists, from ``load_adapted``).
        ValueError: the recorded kind is not in LOADERS.
    """
    directory = Path(directory)
    marker_path = directory / MARKER_FILE
    if not marker_path.exists():
        raise FileNotFoundError(
            f"{marker_path} not found: '{directory}' is not a prefalign checkpoint (save it with save_bundle)"
        )
    marker = json.loads(marker_path.read_text())
    kind = marker["kind"]
    if kind not in LOADERS:
        raise ValueError(f"checkpoint kind {kind!r} in {marker_path} is unknown; known kinds: {sorted(LOADERS)}")
    module_name, class_name = LOADERS[kind].split(":")
    loader = getattr(importlib.import_module(module_name), class_name)
    if kind in ("causal_lm", "backbone") and is_adapter_dir(directory):
        model = load_adapted(directory, loader).to(device)
    else:
        model = loader.from_pretrained(directory).to(device)
    model.eval()
    metadata = marker.get("metadata") or {}
    if frozen_cache and metadata.get("frozen_layers"):
        # its lowest layers are the weights it was trained on top of (often shared by several
        # checkpoints of one run): scoring computes them once per packed segment (frozen_cache.py)
        enable_frozen_cache(model, int(metadata["frozen_layers"]), require_frozen=False)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return ModelBundle(model=model, tokenizer=tokenizer, metadata=metadata)
