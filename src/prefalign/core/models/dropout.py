"""Dropout off for training (``training.disable_dropout``, on by default).

Objectives that compare the policy with a reference (DPO, MMPO, IPO, cDPO; GPO with pi_t) read
the reference's log-probs from an eval-mode pass, where dropout is off. If the policy trains with
dropout on, its log-probs are noisy versions of the same function, so at policy = reference the
implicit margin h is not 0 and the DPO loss is not ln 2 (measured: up to 3.4e-3 away on a
1-layer model with LoRA dropout 0.1). TRL's ``DPOConfig.disable_dropout`` defaults to True for the
same reason (huggingface/trl #744).

A model's dropout lives in three places, and all three are set to 0:

- ``nn.Dropout`` modules (and the other ``_DropoutNd`` kinds), which includes peft's LoRA dropout
  (``lora_dropout``: a ModuleDict of ``nn.Dropout``);
- float attributes that attention functions read at forward time: transformers' Llama/Qwen2/Mistral
  attention passes ``dropout=0.0 if not self.training else self.attention_dropout`` to the SDPA,
  eager or flash kernels (transformers 5.x), OPT's attention reads ``self.dropout``, BERT's SDPA
  path ``self.dropout_prob``;
- the model config's rates (``attention_dropout``, ``hidden_dropout``, ``*_pdrop``, ``layerdrop``,
  ...), for code that reads the config at forward time and for modules built later.
"""

from __future__ import annotations

import re

import torch
from torch.nn.modules.dropout import _DropoutNd

# attribute / config names that hold a dropout probability (not e.g. "use_dropout" flags: floats only)
DROPOUT_NAME = re.compile(r"(dropout|pdrop|drop_prob|layerdrop|drop_path)", re.IGNORECASE)


def _is_rate(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _configs(model: torch.nn.Module) -> list[object]:
    """Every distinct transformers config reachable from ``model``'s modules (peft wrappers, reward heads)."""
    seen, out = set(), []
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict") and id(config) not in seen:
            seen.add(id(config))
            out.append(config)
    return out


def disable_dropout(model: torch.nn.Module) -> list[str]:
    """Set every dropout probability of ``model`` to 0 (module doc: modules, attributes, config).

    Args:
        model: any torch module (a transformers model, a peft ``PeftModel``, a ``RewardModel``).

    Returns:
        What was changed, e.g. ``["model.layers.0.self_attn.attention_dropout=0.1", "config.attention_dropout=0.1"]``
        (empty when the model had no dropout).

    Source: docs/policy.md "Dropout"; TRL ``DPOConfig.disable_dropout``.
    """
    changed = []
    for name, module in model.named_modules():
        if isinstance(module, _DropoutNd):
            if module.p > 0:
                changed.append(f"{name}.p={module.p}")
                module.p = 0.0
            continue
        for attr, value in list(vars(module).items()):
            if DROPOUT_NAME.search(attr) and _is_rate(value):
                changed.append(f"{name}.{attr}={value}")
                setattr(module, attr, 0.0)
    for config in _configs(model):
        for key, value in config.to_dict().items():
            if DROPOUT_NAME.search(key) and _is_rate(value) and hasattr(config, key):
                changed.append(f"config.{key}={value}")
                setattr(config, key, 0.0)
    return changed
