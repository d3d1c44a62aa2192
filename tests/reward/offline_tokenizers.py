"""Tokenizers and a tiny encoder built OFFLINE for the sequence-layout tests (no hub download).

- ``chatml_tokenizer``: byte-level BPE with ChatML control tokens and a ChatML template (Qwen-style:
  no BOS, ``<|im_end|>`` closes a turn).
- ``llama3_tokenizer``: byte-level BPE with Llama-3 control tokens and a Llama-3-style template
  (one ``<|begin_of_text|>`` BOS written by the template, contents trimmed, ``<|eot_id|>`` closes a turn).
- ``bert_tokenizer``: WordPiece with [CLS]/[SEP]/[PAD]/[UNK]/[MASK] and BERT's pair post-processor.
- ``tiny_bert_dir``: a random-init BERT from config saved with its tokenizer by ``save_pretrained``
  (the same code path as a real pretrained encoder directory such as all-MiniLM-L6-v2).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

CORPUS = [
    "You are a helpful assistant.",
    "What is two plus two? Four is the answer.",
    "Tell me about the old mill by the river where children play.",
    "The sky is blue because of Rayleigh scattering of sunlight.",
    "Great, clear, correct and kind answers are preferred to rude or vague ones.",
] * 20

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def _byte_bpe(special_tokens: list[str], vocab_size: int = 400) -> Tokenizer:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return backend


def chatml_tokenizer() -> PreTrainedTokenizerFast:
    backend = _byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    backend = _byte_bpe(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>"],
    )
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def bert_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(CORPUS, trainer=trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials, show_progress=False))
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_bert(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def tiny_bert_dir(directory: Path) -> Path:
    """A local pretrained-encoder directory (weights + config + tokenizer), as ``save_pretrained`` writes it."""
    tok = bert_tokenizer()
    tiny_bert(tok).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
