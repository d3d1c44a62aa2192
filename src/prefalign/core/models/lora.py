"""LoRA adapters (the ``peft`` library) for reward backbones and policies, and how they are saved.

LoRA (Hu et al. 2021, arXiv:2106.09685; docs/methods.md s7) freezes the pretrained weight
W and trains a low-rank update: W' = W + (alpha / r) B A, with A [r, d_in], B [d_out, r], B = 0 at
the start (so the adapted model starts equal to the base). Only A and B (and, for reward models,
the head outside the backbone) receive gradients.

Configured in YAML as ``model.lora`` (null = full fine-tune)::

    model:
      lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear, merge_on_save: false}

Saved layout of an adapted model (``save_adapted``), next to whatever the caller writes::

    <dir>/adapter_config.json, adapter_model.safetensors   peft's LoRA weights and settings
    <dir>/prefalign_lora.json   {"base": "base_model" | "<hub id or path>", "merge_on_save": bool}
    <dir>/base_model/           the frozen base (save_pretrained), only when the base cannot be
                                found again by name: built from config, vocabulary resized, or
                                itself a prefalign checkpoint's base_model folder

With ``merge_on_save: true`` the adapter is merged into a copy of the model (``merged_copy``) and
the directory is a plain ``save_pretrained`` model instead: no peft needed to load it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel

from prefalign.core.models.loading import one_construction_at_a_time
from prefalign.core.models.params import dataclass_from_params

LORA_FILE = "prefalign_lora.json"
BASE_DIR = "base_model"


@dataclass(frozen=True)
class LoraSettings:
    """``model.lora`` keys. ``target_modules``: module names, or ``all-linear`` (every linear layer
    of the backbone except the output layer)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # str or list of str
    merge_on_save: bool = False

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "LoraSettings | None":
        """None (or an absent key) means full fine-tuning; bad values raise naming the key.

        Args:
            params: the ``model.lora`` block, or None.

        Returns:
            The checked settings, or None (full fine-tune).

        Raises:
            ParameterError: an unknown key or a value of the wrong type.
            ValueError: ``r`` < 1, ``alpha`` <= 0, ``dropout`` outside [0, 1), or ``target_modules``
                neither a string nor a non-empty list of strings.
        """
        if params is None:
            return None
        cfg = dataclass_from_params(cls, params, "model.lora")
        if not (isinstance(cfg.r, int) and cfg.r >= 1):
            raise ValueError(f"model.lora.r={cfg.r!r} must be an integer >= 1 (the adapter rank)")
        if cfg.alpha <= 0:
            raise ValueError(f"model.lora.alpha={cfg.alpha!r} must be > 0 (the update is scaled by alpha / r)")
        if not 0 <= cfg.dropout < 1:
            raise ValueError(f"model.lora.dropout={cfg.dropout!r} must be in [0, 1)")
        targets = cfg.target_modules
        if not (isinstance(targets, str) or (isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) for t in targets))):
            raise ValueError(
                f"model.lora.target_modules={targets!r} must be 'all-linear' or a non-empty list of module names "
                "(e.g. [q_proj, k_proj, v_proj, o_proj])"
            )
        return cfg


def apply_lora(model: PreTrainedModel, settings: LoraSettings, causal_lm: bool) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters; every base weight is frozen.

    Args:
        model: an ``AutoModel`` (reward backbone) or ``AutoModelForCausalLM`` (policy).
        settings: rank, alpha, dropout, target modules.
        causal_lm: True for a policy (peft's CAUSAL_LM task), False for a reward backbone
            (FEATURE_EXTRACTION: the forward returns hidden states; the head lives outside).
    Returns:
        The ``PeftModel``; ``model.forward`` arguments and outputs are unchanged.
    """
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules) if not isinstance(settings.target_modules, str) else settings.target_modules,
        task_type=TaskType.CAUSAL_LM if causal_lm else TaskType.FEATURE_EXTRACTION,
    )
    # peft enables input gradients itself when gradient checkpointing is on (frozen embeddings).
    adapted = get_peft_model(model, config)
    adapted.prefalign_merge_on_save = settings.merge_on_save
    return adapted


def is_adapted(model: torch.nn.Module) -> bool:
    """Whether ``model`` carries peft adapters.

    Args:
        model: any module.

    Returns:
        True for a ``peft.PeftModel``.
    """
    return isinstance(model, PeftModel)


def merged_copy(model: PeftModel) -> PreTrainedModel:
    """A plain model with W + (alpha / r) B A folded in; ``model`` itself keeps its adapters.

    Costs one extra copy of the weights in memory for the moment of the merge.

    Args:
        model: the adapted model (left unchanged).

    Returns:
        The merged base model class (e.g. ``LlamaForCausalLM``), without LoRA layers.
    """
    return copy.deepcopy(model).merge_and_unload()


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters that receive gradients, all parameters).

    Args:
        model: any module.

    Returns:
        (parameters with ``requires_grad``, all parameters), as element counts.
    """
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _base_reference(model: PeftModel) -> str | None:
    """The hub id / path the base can be loaded from again, or None when it must be saved."""
    name = model.peft_config[model.active_adapter].base_model_name_or_path or ""
    if not name:
        return None
    path = Path(name)
    if path.name == BASE_DIR and (path.parent / LORA_FILE).exists():
        return None  # a previous checkpoint's copy: checkpoints must not depend on each other
    return name


def save_adapted(model: PeftModel, directory: str | Path) -> None:
    """Write the adapter layout of the module docstring (merged instead when ``merge_on_save``).

    Args:
        model: the adapted model (``prefalign_merge_on_save`` says whether to merge).
        directory: where to write (created by ``save_pretrained`` if absent).
    """
    directory = Path(directory)
    if getattr(model, "prefalign_merge_on_save", False):
        merged_copy(model).save_pretrained(directory)
        return
    model.save_pretrained(directory)
    base = _base_reference(model)
    if base is None:
        copy.deepcopy(model).unload().save_pretrained(directory / BASE_DIR)  # unload: the base without LoRA layers
    meta = {"base": base or BASE_DIR, "merge_on_save": False}
    (directory / LORA_FILE).write_text(json.dumps(meta, indent=2))


def is_adapter_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds an unmerged LoRA checkpoint written by ``save_adapted``.

    Args:
        directory: a checkpoint directory.

    Returns:
        True when its ``prefalign_lora.json`` exists.
    """
    return (Path(directory) / LORA_FILE).exists()


@one_construction_at_a_time
def load_adapted(directory: str | Path, auto_class: type, is_trainable: bool = True) -> PeftModel:
    """Load a ``save_adapted`` directory: the base (saved copy or hub id), then the adapter.

    Args:
        directory: the checkpoint directory.
        auto_class: ``AutoModel`` (reward backbone) or ``AutoModelForCausalLM``.
        is_trainable: keep the adapter trainable (a LoRA SFT policy is trained further by DPO).
    Raises:
        FileNotFoundError: naming the base when it is a local path that no longer exists.

    Returns:
        The PeftModel (base + adapter), with ``prefalign_merge_on_save`` restored from the file.
    """
    directory = Path(directory)
    meta = json.loads((directory / LORA_FILE).read_text())
    base_path = directory / BASE_DIR if meta["base"] == BASE_DIR else meta["base"]
    if meta["base"] != BASE_DIR and str(base_path).startswith(("/", ".")) and not Path(base_path).exists():
        raise FileNotFoundError(
            f"the LoRA checkpoint '{directory}' adapts the base model '{base_path}', which does not exist; "
            "restore that directory, or save with model.lora.merge_on_save: true for a self-contained checkpoint"
        )
    base = auto_class.from_pretrained(base_path)
    model = PeftModel.from_pretrained(base, directory, is_trainable=is_trainable)
    model.prefalign_merge_on_save = meta.get("merge_on_save", False)
    return model


def adapt_for_training(model: torch.nn.Module, model_params: dict[str, Any] | None, causal_lm: bool = True, seed: int = 0) -> torch.nn.Module:
    """The one place LoRA adapters are put on a model for training: fresh backbones and policies
    (core/models/backbone.py) and loaded starting policies (e.g. the SFT policy DPO starts from).

    Args:
        model: an ``AutoModel`` (reward backbone) or ``AutoModelForCausalLM`` (policy), or a
            ``PeftModel`` already carrying adapters.
        model_params: the ``model`` parameters; only ``lora`` is read (null or absent = full fine-tune).
        causal_lm: True for a policy, False for a reward backbone (see ``apply_lora``).
        seed: seeds LoRA's random A matrices, so the same seed gives the same adapters.
    Returns:
        ``model`` unchanged when ``model.lora`` is null or the model is already adapted (a LoRA SFT
        checkpoint loads with its adapter trainable and is trained further, not stacked); else the
        ``PeftModel`` with fresh adapters and every base weight frozen.
    Raises:
        ValueError: a bad ``model.lora`` key, naming it (``LoraSettings.from_dict``).

    Source: Hu et al. 2021 (arXiv:2106.09685), docs/methods.md s7.
    """
    settings = LoraSettings.from_dict((model_params or {}).get("lora"))
    if settings is None or is_adapted(model):
        return model
    torch.manual_seed(seed)  # LoRA's A matrices are random: same seed, same adapters
    return apply_lora(model, settings, causal_lm=causal_lm)
