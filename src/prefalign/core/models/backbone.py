"""Backbones from configuration: a pretrained model by ``name_or_path`` or a small one from config.

``build_backbone`` returns an ``AutoModel`` (hidden states, for reward heads);
``build_causal_lm`` returns an ``AutoModelForCausalLM`` (for policies). With ``model.lora`` set,
either is returned wrapped in peft LoRA adapters (core/models/lora.py), base weights frozen. Both are seeded when
built from config, and ``trust_remote_code`` is only passed on when the user sets it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from prefalign.core.models.lm_head import DEFAULT_CHUNK_TOKENS, check_chunk_tokens, set_logprob_chunk_tokens
from prefalign.core.models.loading import one_construction_at_a_time
from prefalign.core.models.lora import LoraSettings, adapt_for_training, is_adapted
from prefalign.core.training.frozen_cache import enable_frozen_cache
from prefalign.core.models.tokenizer import check_local_path, check_tokenizer_fits
from prefalign.core.models.params import dataclass_from_params

def is_bidirectional_encoder(config: PretrainedConfig) -> bool:
    """BERT/MiniLM/DeBERTa/RoBERTa-family backbones (masked-LM architectures not set up as decoders).

    Args:
        config: a transformers model config.

    Returns:
        True when ``config.model_type`` has a masked-LM architecture and ``is_decoder`` is not set.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelConfig:
    """How to get a backbone. With ``name_or_path`` null, a Llama-style model of these sizes."""

    name_or_path: str | None = None
    trust_remote_code: bool = False
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 512
    seed: int = 0
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # e.g. "sdpa", "eager", "flash_attention_2"
    lora: dict[str, Any] | None = None  # LoraSettings keys (core/models/lora.py); null = full fine-tune
    freeze_layers: int = 0  # > 0: the input embeddings and the lowest N transformer layers are not trained
    cache_frozen_layers: bool = False  # true: the frozen layers run once per packed segment, later steps read their output (core/training/frozen_cache.py)
    cache_max_gigabytes: float = 4.0  # the frozen-layer cache's size limit
    # causal LMs: response positions per LM-head chunk when log-probs are computed (core/models/lm_head.py);
    # no [tokens x vocabulary] logits are held whole; null = all positions at once
    logprob_chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "ModelConfig":
        """The ``model`` parameter block, checked by type and by value before any model is built.

        Args:
            params: the block; None = all defaults (a small Llama-style model from config).

        Returns:
            The checked configuration.

        Raises:
            ParameterError: an unknown key or a value of the wrong type (here or in the ``lora`` block).
            ValueError: ``dtype`` not in TORCH_DTYPES, ``freeze_layers`` < 0, ``cache_frozen_layers`` without
                ``freeze_layers`` >= 1, ``cache_max_gigabytes`` <= 0, ``hidden_size`` not divisible by
                ``num_heads`` (model from config), or a bad ``logprob_chunk_tokens`` or ``lora`` value.
        """
        cfg = dataclass_from_params(cls, params, "model")
        if cfg.dtype not in TORCH_DTYPES:
            raise ValueError(f"model.dtype={cfg.dtype!r} is not one of {sorted(TORCH_DTYPES)}")
        if cfg.freeze_layers < 0:
            raise ValueError(f"model.freeze_layers={cfg.freeze_layers} must be >= 0")
        if cfg.cache_frozen_layers and cfg.freeze_layers < 1:
            raise ValueError("model.cache_frozen_layers: true needs model.freeze_layers >= 1 (the layers whose output is cached)")
        if cfg.cache_max_gigabytes <= 0:
            raise ValueError(f"model.cache_max_gigabytes={cfg.cache_max_gigabytes} must be > 0")
        if cfg.name_or_path is None and cfg.hidden_size % cfg.num_heads:
            raise ValueError(
                f"model.hidden_size={cfg.hidden_size} must be divisible by model.num_heads={cfg.num_heads}"
            )
        check_chunk_tokens(cfg.logprob_chunk_tokens)
        cfg.lora_settings()  # a bad lora key fails here, before any training
        return cfg

    def lora_settings(self) -> LoraSettings | None:
        """The checked LoRA settings of the ``lora`` block.

        Returns:
            A LoraSettings, or None when ``lora`` is null (full fine-tune).
        """
        return LoraSettings.from_dict(self.lora)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dict.

        Returns:
            ``dataclasses.asdict(self)``: every field, ``lora`` as its dict.
        """
        return asdict(self)


def small_architecture(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """A Llama-style config sized by ``cfg`` with the tokenizer's vocabulary and special ids.

    Args:
        cfg: the sizes (hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings).
        tokenizer: its ``len`` is the vocabulary; its pad/bos/eos ids go into the config.

    Returns:
        A LlamaConfig with tied input/output embeddings and one key/value head per query head.
    """
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )


def transformer_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The model's stack of transformer layers (the ModuleList with ``num_hidden_layers`` entries).

    Args:
        model: a transformers model (its ``config.num_hidden_layers`` says how many layers to look for).

    Returns:
        The first ModuleList (in ``model.modules()`` order) with ``num_hidden_layers`` entries.

    Raises:
        ValueError: no such list (the message says to set model.freeze_layers to 0).
    """
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"found no list of {n} transformer layers in {type(model).__name__}; set model.freeze_layers to 0")


def freeze_lower_layers(model: PreTrainedModel, n: int) -> None:
    """Stop gradients to the input embeddings and the lowest ``n`` layers (a cheaper fine-tune: the
    backward pass stops at layer n). Adapters (LoRA) are the peft integration's business, not this.

    Raises:
        ValueError: ``n`` is not below the number of layers (nothing would be trained).

    Args:
        model: a transformers model (not peft-wrapped: pass ``get_base_model()``); changed in place.
        n: the number of lowest transformer layers frozen, with the input embeddings (every parameter
            whose name contains "embed").
    """
    layers = transformer_layers(model)
    if n >= len(layers):
        raise ValueError(f"model.freeze_layers={n} must be below the model's {len(layers)} layers")
    in_layers = {id(p) for p in layers.parameters()}
    trained = {id(p) for layer in layers[n:] for p in layer.parameters()}
    for name, param in model.named_parameters():
        # Everything below layer n (embeddings, their norms, the lower layers) is frozen, so the
        # backward pass stops at layer n; the upper layers and final norms / poolers train.
        below = "embed" in name.lower() or (id(param) in in_layers and id(param) not in trained)
        param.requires_grad_(not below)


@one_construction_at_a_time
def _build(auto_class: type, cfg: ModelConfig | dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg)
    dtype = TORCH_DTYPES[cfg.dtype]
    extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    if cfg.name_or_path is None:
        torch.manual_seed(cfg.seed)  # random init is reproducible under the seed
        model = auto_class.from_config(small_architecture(cfg, tokenizer), dtype=dtype, **extra)
    else:
        check_local_path(cfg.name_or_path)
        model = auto_class.from_pretrained(
            cfg.name_or_path, dtype=dtype, trust_remote_code=cfg.trust_remote_code, **extra
        )
        # A tokenizer that does not index this embedding table is an error, never a silent resize.
        rows = min(model.get_input_embeddings().num_embeddings, getattr(model.config, "vocab_size", None) or 10**12)
        check_tokenizer_fits(tokenizer, rows, getattr(tokenizer, "name_or_path", None) or None, cfg.name_or_path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return prepare_for_training(model, cfg, causal_lm=auto_class is AutoModelForCausalLM)


def prepare_for_training(model: torch.nn.Module, cfg: ModelConfig | dict[str, Any] | None, causal_lm: bool = True) -> torch.nn.Module:
    """The one place a model (freshly built, or a loaded starting policy such as the SFT model DPO
    starts from) gets the training-time settings of ``model``: frozen lower layers, LoRA adapters,
    the log-prob chunk size (causal LMs), the frozen-layer cache.

    Args:
        model: an ``AutoModel`` (reward backbone) or ``AutoModelForCausalLM`` (policy), maybe peft-wrapped.
        cfg: the ``model`` parameters (ModelConfig or its dict; None = full fine-tune, nothing changed).
        causal_lm: True for a policy, False for a reward backbone (LoRA's task type).

    Returns:
        ``model`` (or its peft wrapper, with ``model.lora``), ready for the training loop.

    Raises:
        ValueError: a bad key (``ModelConfig.from_dict``), ``freeze_layers`` not below the number of
            layers, or a cache over layers that still train (``frozen_cache.enable_frozen_cache``).
    """
    if cfg is None:
        return model
    cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg)
    if cfg.freeze_layers:
        freeze_lower_layers(model.get_base_model() if is_adapted(model) else model, cfg.freeze_layers)
    model = adapt_for_training(model, cfg.to_dict(), causal_lm=causal_lm, seed=cfg.seed)
    if causal_lm:  # response log-probs through the LM head in chunks of this many positions (lm_head.py)
        set_logprob_chunk_tokens(model, cfg.logprob_chunk_tokens)
    if cfg.cache_frozen_layers:
        enable_frozen_cache(model, cfg.freeze_layers, cfg.cache_max_gigabytes)
    return model


def build_backbone(cfg: ModelConfig | dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """An ``AutoModel`` returning hidden states (reward models put their head on top).

    Args:
        cfg: the ``model`` parameters (ModelConfig or its dict).
        tokenizer: the tokenizer the data are encoded with (sizes a model from config; checked
            against a pretrained model's embedding table).

    Returns:
        The model (peft-wrapped with ``lora``), prepared by ``prepare_for_training``.

    Raises:
        ParameterError: a bad ``model`` key or type (``ModelConfig.from_dict``).
        ValueError: a bad ``model`` value, a tokenizer that does not fit the pretrained embedding table,
            or a bad ``freeze_layers`` / cache setting (``prepare_for_training``).
        FileNotFoundError: a local ``name_or_path`` that does not exist.
    """
    return _build(AutoModel, cfg, tokenizer)


def build_causal_lm(cfg: ModelConfig | dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """An ``AutoModelForCausalLM`` (policies: SFT, DPO, MMPO, IPO, GPO).

    Args:
        cfg: the ``model`` parameters (ModelConfig or its dict).
        tokenizer: the tokenizer the data are encoded with.

    Returns:
        The causal LM (peft-wrapped with ``lora``), its log-prob chunk size set, prepared by ``prepare_for_training``.

    Raises:
        ParameterError: a bad ``model`` key or type.
        ValueError: a bad ``model`` value, a tokenizer that does not fit, or a bad ``freeze_layers`` / cache setting.
        FileNotFoundError: a local ``name_or_path`` that does not exist.
    """
    return _build(AutoModelForCausalLM, cfg, tokenizer)
