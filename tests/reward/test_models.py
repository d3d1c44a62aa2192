from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from prefalign.core.models import ModelConfig, TokenizerConfig, build_backbone, build_causal_lm, build_tokenizer
from tests.reward.helpers import TINY_MODEL, toy_tokenizer


def test_trained_bpe_tokenizer_has_specials_and_round_trips(tmp_path: Path):
    tok = toy_tokenizer()
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert {tok.pad_token, tok.bos_token, tok.eos_token} == {"<|pad|>", "<|bos|>", "<|eos|>"}
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    text = "héllo 🙂 unseen wörds"  # byte-level: nothing unknown, decoding is lossless
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids and again.pad_token_id == tok.pad_token_id


def test_bpe_vocab_size_is_respected():
    tok = build_tokenizer({"vocab_size": 280}, ["abc abd abe " * 50, "xyz xy xz " * 50])
    assert 259 <= len(tok) <= 280


def test_tokenizer_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"unknown key tokenizer\.vocab\b"):
        TokenizerConfig.from_dict({"vocab": 100})
    with pytest.raises(ValueError, match="vocab_size=100"):
        TokenizerConfig.from_dict({"vocab_size": 100})
    with pytest.raises(ValueError, match="texts are needed"):
        build_tokenizer({})


def test_backbone_from_config_is_seeded_and_sized():
    tok = toy_tokenizer()
    a = build_backbone({**TINY_MODEL, "seed": 3}, tok)
    b = build_backbone({**TINY_MODEL, "seed": 3}, tok)
    c = build_backbone({**TINY_MODEL, "seed": 4}, tok)
    assert a.config.hidden_size == 32 and a.config.num_hidden_layers == 1 and a.config.vocab_size == len(tok)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_save_and_load_back_by_local_path(tmp_path: Path):
    tok = toy_tokenizer()
    lm = build_causal_lm(TINY_MODEL, tok)
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    tok_again = build_tokenizer({"name_or_path": str(tmp_path / "lm")})
    loaded = build_causal_lm({"name_or_path": str(tmp_path / "lm")}, tok_again)
    backbone = build_backbone({"name_or_path": str(tmp_path / "lm")}, tok_again)
    assert isinstance(loaded, type(lm)) and isinstance(backbone, type(build_backbone(TINY_MODEL, tok)))
    ids = torch.tensor([tok("hello world")["input_ids"]])
    lm.eval(), loaded.eval()
    assert torch.allclose(lm(ids).logits, loaded(ids).logits, atol=1e-6)


def test_missing_local_path_raises_naming_it(tmp_path: Path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        build_backbone({"name_or_path": missing}, toy_tokenizer())
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        build_tokenizer({"name_or_path": missing})


def test_model_config_rejects_bad_keys_and_values():
    with pytest.raises(ValueError, match=r"unknown key model\.layers\b"):
        ModelConfig.from_dict({"layers": 2})
    with pytest.raises(ValueError, match="model.dtype='float8'"):
        ModelConfig.from_dict({"dtype": "float8"})
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig.from_dict({"hidden_size": 30, "num_heads": 4})
