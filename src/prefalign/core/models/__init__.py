"""Models from configuration: tokenizers, backbones, causal LMs and checkpoint bundles."""

from prefalign.core.models.backbone import ModelConfig, build_backbone, build_causal_lm
from prefalign.core.models.tokenizer import TokenizerConfig, build_tokenizer

__all__ = ["ModelConfig", "TokenizerConfig", "build_backbone", "build_causal_lm", "build_tokenizer"]
