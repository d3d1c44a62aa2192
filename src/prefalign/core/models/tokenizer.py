"""Tokenizer from configuration: a pretrained one by name/path, or a byte-level BPE trained here.

The trained tokenizer is wrapped as a ``PreTrainedTokenizerFast`` with pad/bos/eos set, so it
saves with ``save_pretrained`` next to the model and loads back with ``AutoTokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from prefalign.core.models.params import dataclass_from_params

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"


@dataclass(frozen=True)
class TokenizerConfig:
    """``name_or_path``: hub id or local dir; null trains a byte-level BPE of ``vocab_size``."""

    name_or_path: str | None = None
    vocab_size: int = 512
    min_frequency: int = 2
    trust_remote_code: bool = False

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "TokenizerConfig":
        """The ``tokenizer`` parameter block, checked.

        Args:
            params: the block; None = defaults (a byte-level BPE of 512 tokens trained on the data).

        Returns:
            The checked configuration.

        Raises:
            ParameterError: an unknown key or a value of the wrong type.
            ValueError: ``vocab_size`` < 260 for a BPE trained here.
        """
        cfg = dataclass_from_params(cls, params, "tokenizer")
        if cfg.name_or_path is None and cfg.vocab_size < 260:
            raise ValueError(
                f"tokenizer.vocab_size={cfg.vocab_size} is too small for a byte-level BPE "
                "(256 byte symbols + 3 special tokens); use 260 or more"
            )
        return cfg


def is_local_path(name_or_path: str) -> bool:
    """A string that looks like a filesystem path (not a hub id like ``org/model``).

    Args:
        name_or_path: a hub id or a path.

    Returns:
        True when it starts with "/", "./", "../" or "~", or exists on disk.
    """
    return name_or_path.startswith(("/", "./", "../", "~")) or Path(name_or_path).exists()


def check_local_path(name_or_path: str) -> None:
    """Raise naming the path when a local model/tokenizer directory does not exist.

    Args:
        name_or_path: a hub id or a path (hub ids pass unchecked).

    Raises:
        FileNotFoundError: it looks like a local path and does not exist.
    """
    if is_local_path(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise FileNotFoundError(
            f"model path '{name_or_path}' does not exist; give an existing directory written by "
            "save_pretrained, a hub id such as 'Qwen/Qwen2.5-0.5B', or null for a model from config"
        )


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (every byte is representable, so nothing maps to UNK).

    Args:
        texts: the training texts.
        vocab_size: the vocabulary size, special tokens included.
        min_frequency: the least count of a pair to be merged.

    Returns:
        A PreTrainedTokenizerFast with pad ``<|pad|>`` (id 0), bos ``<|bos|>`` and eos ``<|eos|>``.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD_TOKEN, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN
    )


def tokenizer_params_for_model(tokenizer_params: dict[str, Any] | None, model_params: dict[str, Any] | None) -> dict[str, Any]:
    """The tokenizer follows the model: with ``model.name_or_path`` set and ``tokenizer.name_or_path``
    null, the tokenizer is the model's own (a BPE trained here would index a pretrained embedding
    table at random). A tokenizer the user names explicitly is kept (and checked by ``check_tokenizer_fits``).

    Returns:
        The tokenizer parameters to build from (a new dict; the inputs are not changed).

    Args:
        tokenizer_params: the ``tokenizer`` block (None = empty).
        model_params: the ``model`` block (None = empty).
    """
    tokenizer_params = dict(tokenizer_params or {})
    model_path = (model_params or {}).get("name_or_path")
    if model_path is not None and tokenizer_params.get("name_or_path") is None:
        tokenizer_params["name_or_path"] = model_path
        if (model_params or {}).get("trust_remote_code"):
            tokenizer_params.setdefault("trust_remote_code", True)
    return tokenizer_params


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, vocab_size: int, tokenizer_path: str | None, model_path: str | None) -> None:
    """Raise before training when the tokenizer's ids do not index the model's embedding table.

    Args:
        tokenizer: the tokenizer that will encode the data.
        vocab_size: rows of the model's input embedding table (or its config's ``vocab_size``).
        tokenizer_path, model_path: where each came from (named in the error; None = trained / built here).

    Raises:
        ValueError: when ``len(tokenizer)`` or any special-token id is >= ``vocab_size``.
    """
    special = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "unk", "cls", "sep")}
    too_big = {k: v for k, v in special.items() if v is not None and v >= vocab_size}
    if len(tokenizer) > vocab_size or too_big:
        raise ValueError(
            f"tokenizer '{tokenizer_path or 'trained here'}' does not fit model '{model_path or 'built from config'}': "
            f"{len(tokenizer)} tokens{', special ids ' + str(too_big) if too_big else ''} but the model's embedding "
            f"table has {vocab_size} rows. Set tokenizer.name_or_path to null (the model's own tokenizer) or to "
            "the tokenizer the model was trained with"
        )


def build_tokenizer(config: TokenizerConfig | dict[str, Any] | None, texts: Iterable[str] | None = None) -> PreTrainedTokenizerBase:
    """Load ``config.name_or_path`` or train a BPE on ``texts``; always returns one with a pad token.

    Args:
        config: the ``tokenizer`` parameters (TokenizerConfig, its dict, or None = defaults).
        texts: training texts, needed when ``name_or_path`` is null.

    Returns:
        The tokenizer; a loaded one without a pad token gets its eos token as pad.

    Raises:
        ValueError: ``name_or_path`` is null and no ``texts`` were given, or a bad value (``from_dict``).
        ParameterError: a bad key or type (``from_dict``).
        FileNotFoundError: a local ``name_or_path`` that does not exist.
    """
    cfg = config if isinstance(config, TokenizerConfig) else TokenizerConfig.from_dict(config)
    if cfg.name_or_path is None:
        if texts is None:
            raise ValueError("tokenizer.name_or_path is null, so texts are needed to train a BPE tokenizer")
        return train_bpe_tokenizer(texts, cfg.vocab_size, cfg.min_frequency)
    check_local_path(cfg.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(cfg.name_or_path, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        # Decoder-only checkpoints often ship without a pad token; padding is masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
