"""Encoder backbones for reward models (methods.md s6): the model's own tokenizer, pooling, GPM's gate."""

from pathlib import Path

import polars as pl
import pytest
import torch

from prefalign.core.models import build_backbone, build_tokenizer
from prefalign.core.models.tokenizer import tokenizer_params_for_model
from prefalign.core.reward.model import RewardModel
from prefalign.core.objectives import registry
from prefalign.core.reward.train_reward import RewardParams, fit_tokenizer, train_reward_model
from prefalign.core.training.batching import collate_sequences, tokenize_pairs, tokenize_sequences
from tests.reward.helpers import TINY_MODEL, toy_pairs_frame, toy_tokenizer
from tests.reward.offline_tokenizers import bert_tokenizer, tiny_bert, tiny_bert_dir

PROMPTS = ["What is two plus two?", "Tell me about the old mill by the river.", "Why is the sky blue?"]
RESPONSES = ["Four.", "Children play by the old mill every summer evening, a long answer.", "Rayleigh scattering."]
MINILM_DIR = Path(__file__).resolve().parents[2] / "data/06_models/pretrained/all-MiniLM-L6-v2"


@pytest.mark.parametrize("pooling", ["first", "mean", "last"])
@pytest.mark.parametrize("head", ["scalar", "gpm"])
def test_right_padded_encoder_batch_reads_the_same_positions_as_each_row_alone(pooling, head):
    tok = bert_tokenizer()
    model = RewardModel(tiny_bert(tok), {"head": head, "pooling": pooling}).eval()
    seqs = tokenize_sequences(tok, PROMPTS, RESPONSES, 64, 32)
    with torch.no_grad():
        together = model(collate_sequences(seqs, tok.pad_token_id))
        alone = [model(collate_sequences([s], tok.pad_token_id)) for s in seqs]
    for name in ("rewards", "embeddings", "gate"):
        if getattr(together, name) is not None:
            stacked = torch.cat([getattr(a, name) for a in alone])
            assert torch.allclose(getattr(together, name), stacked, atol=1e-5), name


def test_pooling_defaults_per_architecture():
    tok = toy_tokenizer()
    assert RewardModel(build_backbone(TINY_MODEL, tok), {}).head_config.pooling == "last"  # Llama-style decoder
    assert RewardModel(tiny_bert(bert_tokenizer()), {}).head_config.pooling == "first"  # BERT: [CLS]
    with pytest.raises(ValueError, match="pooling='max'"):
        RewardModel(tiny_bert(bert_tokenizer()), {"pooling": "max"})


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_gpm_on_a_bidirectional_encoder_is_exactly_antisymmetric_and_gates_on_the_prompt_alone(pooling):
    tok = bert_tokenizer()
    torch.manual_seed(0)
    model = RewardModel(tiny_bert(tok), {"head": "gpm", "gpm_k": 2, "pooling": pooling}).eval()
    prompts = PROMPTS * 2
    a, b = RESPONSES + RESPONSES[::-1], RESPONSES[1:] + RESPONSES[:1] + RESPONSES
    ab, ba = tokenize_pairs(tok, prompts, a, b, max_length=64, max_prompt_length=16), tokenize_pairs(tok, prompts, b, a, max_length=64, max_prompt_length=16)

    def z(pairs):
        batch = collate_sequences(pairs.chosen + pairs.rejected, tok.pad_token_id)
        with torch.no_grad():
            out = model(batch)
        return out.pair_logits(len(pairs)), out.gate

    z_ab, gate_ab = z(ab)
    z_ba, _ = z(ba)
    assert torch.equal(z_ab, -z_ba)  # s(a > b) = -s(b > a), bit for bit
    assert z_ab.abs().max() > 0
    n = len(prompts)
    # the gate is a function of the prompt: both sides of every pair agree although their responses differ
    assert torch.allclose(gate_ab[:n], gate_ab[n:], atol=1e-6)
    # ... which it would not be if read from the full (bidirectional) forward at the last prompt token
    batch = collate_sequences(ab.chosen + ab.rejected, tok.pad_token_id)
    with torch.no_grad():
        hidden = model.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        naive = torch.softmax(model.head.gate(hidden[torch.arange(2 * n), batch.last_prompt_index]), -1)
    assert not torch.allclose(naive[:n], naive[n:], atol=1e-4)


def _params(model_dir: str, namespace: str = "reward_bt", **extra) -> RewardParams:
    return registry.get(namespace).parse({
        "max_length": 64, "max_prompt_length": 24, "batch_size": 8, "eval_batch_size": 16,
        "train_accuracy_pairs": 8, "model": {"name_or_path": model_dir},
        "training": {"max_steps": 2, "learning_rate": 1e-4, "checkpoint_every": 0, "eval_every": 0, "progress_bar": False, "cpu_threads": 1},
        **extra,
    })


def test_tokenizer_follows_a_pretrained_model_directory(tmp_path):
    """Issue 10: a MiniLM path with the default (null) tokenizer trained a BPE on the pairs; now the model's own."""
    model_dir = str(tiny_bert_dir(tmp_path / "encoder"))
    frame = toy_pairs_frame(16, 8)
    tok = fit_tokenizer(frame.filter(pl.col("split") == "train"), _params(model_dir, tokenizer={"vocab_size": 2048}))
    from transformers import AutoTokenizer

    assert tok.get_vocab() == AutoTokenizer.from_pretrained(model_dir).get_vocab() and tok.cls_token == "[CLS]"
    assert tokenizer_params_for_model({"name_or_path": None}, {"name_or_path": model_dir})["name_or_path"] == model_dir
    assert tokenizer_params_for_model({"name_or_path": "other"}, {"name_or_path": model_dir})["name_or_path"] == "other"
    assert tokenizer_params_for_model({}, {"name_or_path": None}) == {}


def test_a_tokenizer_that_does_not_fit_the_model_fails_before_training_naming_both_paths(tmp_path):
    model_dir = str(tiny_bert_dir(tmp_path / "encoder"))
    big = build_tokenizer({"vocab_size": 1000}, [f"word{i} other{i} thing{i}" for i in range(400)] * 3)
    assert len(big) > len(bert_tokenizer())
    big.save_pretrained(tmp_path / "big_bpe")
    frame = toy_pairs_frame(16, 8).filter(pl.col("split") == "train")
    params = _params(model_dir, tokenizer={"name_or_path": str(tmp_path / "big_bpe")})
    with pytest.raises(ValueError, match=r"big_bpe.*does not fit model.*encoder"):
        fit_tokenizer(frame, params)
    with pytest.raises(ValueError, match="does not fit"):
        build_backbone({"name_or_path": model_dir}, big)


def _pretrained_dir(tmp_path: Path) -> str:
    """The fetched all-MiniLM-L6-v2 when present (scripts/fetch_pretrained_minilm.py), else a tiny BERT
    saved the same way: either way the code path is 'a local pretrained encoder directory + its tokenizer'."""
    if (MINILM_DIR / "config.json").exists():
        return str(MINILM_DIR)
    return str(tiny_bert_dir(tmp_path / "encoder"))


@pytest.mark.parametrize("namespace,head,same_tokenizer", [
    ("reward_bt", {}, True), ("reward_mmpo", {}, False), ("reward_gpm", {"gpm_k": 2}, False)
])
def test_reward_models_train_on_a_local_pretrained_encoder_with_its_own_tokenizer(tmp_path, namespace, head, same_tokenizer):
    """Issue 10: naming the encoder's directory as the tokenizer too crashed in collate_sequences (no BOS/EOS)."""
    model_dir = _pretrained_dir(tmp_path)
    frame = toy_pairs_frame(24, 8)
    train, val = frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") == "val")
    tokenizer = {"name_or_path": model_dir} if same_tokenizer else {}
    params = _params(model_dir, namespace, head=head, tokenizer=tokenizer)
    tok = fit_tokenizer(train, params)
    assert tok.name_or_path == model_dir
    out = train_reward_model(train, val, tok, params, tmp_path / "run", registry.get(namespace).name)
    model = out.bundle.model
    assert model.head_config.pooling == "first" and model.bidirectional
    assert out.metrics["steps"] == 2 and out.metrics["val_loss"] == out.metrics["val_loss"]  # finite, not NaN
    model.save_pretrained(tmp_path / "saved")
    again = RewardModel.from_pretrained(tmp_path / "saved")
    assert again.head_config == model.head_config


def test_freeze_layers_stops_gradients_below_layer_n():
    tok = bert_tokenizer()
    from prefalign.core.models.backbone import freeze_lower_layers

    model = tiny_bert(tok)
    freeze_lower_layers(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layer.1.") for n in trainable)
    with pytest.raises(ValueError, match="freeze_layers=2 must be below the model's 2 layers"):
        freeze_lower_layers(tiny_bert(tok), 2)
    decoder = build_backbone({**TINY_MODEL, "num_layers": 2, "freeze_layers": 1}, toy_tokenizer())
    trainable = {n for n, p in decoder.named_parameters() if p.requires_grad}
    assert "norm.weight" in trainable and not any(n.startswith(("embed", "layers.0.")) for n in trainable)


def test_gpu_environment_trains_chat_models_in_their_template_with_their_tokenizer(tmp_path):
    """Issue 10: the gpu env trained Qwen2.5-Instruct on `[eos] prompt response [eos]`. Its reward and
    policy tokenizers are the model's own, and a chat model's tokenizer selects its chat template:
    shown offline with a tiny Llama-style model saved beside a ChatML (Qwen-style) tokenizer."""
    import yaml

    from prefalign.core.training.batching import tokenize_pair_frame
    from tests.reward.offline_tokenizers import chatml_tokenizer

    root = Path(__file__).resolve().parents[2] / "conf"
    for section, name in (("reward", "parameters_reward.yml"), ("policy", "parameters_policy.yml")):
        defaults = yaml.safe_load((root / "gpu" / name).read_text())[section]["defaults"]
        model = defaults["model"]["name_or_path"]
        assert model and tokenizer_params_for_model(defaults.get("tokenizer"), defaults["model"])["name_or_path"] == model

    chat = chatml_tokenizer()
    model_dir = tmp_path / "chat_model"
    build_backbone({**TINY_MODEL}, chat).save_pretrained(model_dir)
    chat.save_pretrained(model_dir)
    frame = toy_pairs_frame(16, 8).filter(pl.col("split") == "train")
    tok = fit_tokenizer(frame, _params(str(model_dir)))
    assert tok.chat_template
    pairs = tokenize_pair_frame(tok, frame.head(3), 512, 128)
    for i, row in enumerate(frame.head(3).iter_rows(named=True)):
        whole = tok.apply_chat_template(
            [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["chosen"]}], tokenize=True, return_dict=False
        )
        assert pairs.chosen[i].input_ids == whole


def test_pair_logits_truncate_pairs_as_in_training_and_are_antisymmetric():
    from prefalign.core.reward.scoring import pair_logits

    tok = bert_tokenizer()
    torch.manual_seed(0)
    model = RewardModel(tiny_bert(tok), {"head": "gpm", "max_length": 24, "max_prompt_length": 8}).eval()
    shared = " ".join(["children play by the old mill"] * 6)
    prompts = PROMPTS + ["Describe the mill."]
    a, b = RESPONSES + [shared + " lovely"], RESPONSES[::-1] + [shared + " ugly"]
    z_ab, z_ba = pair_logits(model, tok, prompts, a, b), pair_logits(model, tok, prompts, b, a)
    assert (z_ab == -z_ba).all() and z_ab[-1] == 0.0 and (z_ab[:3] != 0).any()


def _shipped_reward_defaults(model_dir: str | None) -> dict:
    """conf/base's reward.defaults (packing / share_prompt as shipped) at test size, on ``model_dir``."""
    import yaml

    from prefalign.core.config_utils import lift_sub_blocks

    defaults = lift_sub_blocks(yaml.safe_load((Path(__file__).resolve().parents[2] / "conf/base/parameters_reward.yml").read_text())["reward"]["defaults"])
    training = {**defaults["training"], "max_steps": 2, "warmup_steps": 0, "eval_every": 0, "checkpoint_every": 0, "progress_bar": False}
    model = {"name_or_path": model_dir} if model_dir else dict(TINY_MODEL)
    return {**defaults, "max_length": 64, "max_prompt_length": 24, "batch_size": 8, "eval_batch_size": 16,
            "train_accuracy_pairs": 8, "max_train_pairs": None, "max_val_pairs": None, "sources": None,
            "tokenizer": {"vocab_size": 300}, "model": model, "training": training, "checkpoint_dir": None}


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_shipped_layout_defaults_follow_the_model_kind(tmp_path, kind):
    """Issue 19 item 4: with conf/base's defaults, an encoder directory trains (padded: it reads [CLS])
    and a causal decoder gets the packed, prompt-shared layout; nobody flips a switch."""
    model_dir = str(tiny_bert_dir(tmp_path / "encoder")) if kind == "encoder" else None
    params = registry.get("reward_bt").parse(_shipped_reward_defaults(model_dir))
    assert params.training["packing"] == "auto" and params.training["share_prompt"] == "auto"
    frame = toy_pairs_frame(24, 8)
    train, val = frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") == "val")
    out = train_reward_model(train, val, fit_tokenizer(train, params), params, tmp_path / "run", "bt")
    on = kind == "decoder"
    assert out.metrics["layout"] == {"packing": on, "share_prompt": on}
    assert out.metrics["steps"] == 2 and out.metrics["val_loss"] == out.metrics["val_loss"]


def test_packable_reads_the_model_kind_pooling_and_attention_kernel():
    from prefalign.core.models import build_causal_lm
    from prefalign.core.training.loop import TrainConfig
    from prefalign.core.training.packing import packable, resolve_layout

    tok = toy_tokenizer()
    decoder = RewardModel(build_backbone(TINY_MODEL, tok), {})
    assert packable(decoder) == (True, True) and packable(build_causal_lm(TINY_MODEL, tok)) == (True, True)
    assert packable(RewardModel(tiny_bert(bert_tokenizer()), {})) == (False, False)
    assert packable(RewardModel(build_backbone(TINY_MODEL, tok), {"pooling": "mean"})) == (False, False)
    eager = RewardModel(build_backbone({**TINY_MODEL, "attn_implementation": "eager"}, tok), {})
    assert packable(eager) == (False, False)
    decoder.backbone.config._attn_implementation = "flash_attention_2"  # packs, cannot share a prompt
    assert packable(decoder) == (True, False)
    auto = TrainConfig.from_dict({})
    assert (auto.packing, auto.share_prompt) == ("auto", "auto")
    resolved = resolve_layout(auto, decoder)
    assert (resolved.packing, resolved.share_prompt) == (True, False)
    explicit = resolve_layout(TrainConfig.from_dict({"packing": False, "share_prompt": False}), eager)
    assert (explicit.packing, explicit.share_prompt) == (False, False)
    with pytest.raises(ValueError, match="training.packing='yes' is invalid; it must be true, false or auto"):
        TrainConfig.from_dict({"packing": "yes"})
