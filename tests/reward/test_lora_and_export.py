"""LoRA reward models and policies (peft), standard sequence-classification export, GPM loading/scoring.

Every model is tiny and built from config (a Llama-style decoder, a BERT encoder) with the toy
BPE tokenizer: nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io.core import Version
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, BertModel

from prefalign.core.models import build_backbone, build_causal_lm
from prefalign.core.models.checkpoint import ModelBundle, load_bundle, save_bundle
from prefalign.core.models.lora import LORA_FILE, LoraSettings, trainable_parameters
from prefalign.core.reward import scoring
from prefalign.core.reward.heads import gpm_score
from prefalign.core.reward.model import HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, RewardModel
from prefalign.core.reward.objectives import make_reward_loss_fn
from prefalign.core.reward.train_reward import RewardParams
from prefalign.core.training import latest_checkpoint, make_pair_batches, tokenize_pairs, train
from prefalign.core.training.batching import tokenize_sequences
from prefalign.datasets.model_checkpoint import ModelCheckpointDataset
from tests.reward.helpers import TINY_MODEL, toy_pairs, toy_tokenizer

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def texts():
    return toy_pairs(12, seed=3)


def _batches(tok, n=48):
    prompts, chosen, rejected = toy_pairs(n, seed=1)
    pairs = tokenize_pairs(tok, prompts, chosen, rejected, max_length=48, max_prompt_length=24)
    return make_pair_batches(pairs, 8, tok.pad_token_id, seed=0)


def _trained_reward_model(tok, head="scalar", lora=LORA, steps=4, tmp_path=None, model_extra=None) -> RewardModel:
    model = RewardModel(build_backbone({**TINY_MODEL, "lora": lora, **(model_extra or {})}, tok), {"head": head, "max_length": 48, "max_prompt_length": 24})
    cfg = {"max_steps": steps, "learning_rate": 1e-2, "checkpoint_every": 0, "eval_every": 0, "progress_bar": False}
    return train(model, _batches(tok), [], make_reward_loss_fn(RewardParams()), cfg, tmp_path).model.eval()


def _hf_rewards(directory: Path, tok, prompts, responses) -> np.ndarray:
    """Plain transformers: the same token ids, padded by the tokenizer itself (right padding)."""
    seqs = tokenize_sequences(tok, prompts, responses, 48, 24)
    enc = tok.pad({"input_ids": [s.input_ids for s in seqs]}, return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(**enc).logits[:, 0].double().numpy()


def test_lora_settings_parse_and_errors_name_the_key():
    assert LoraSettings.from_dict(None) is None
    assert LoraSettings.from_dict({"r": 8}).alpha == 32.0
    with pytest.raises(ValueError, match=r"unknown key model.lora.rank; allowed keys of model.lora: r, "):
        LoraSettings.from_dict({"rank": 8})
    with pytest.raises(ValueError, match=r"model.lora.r=0 must be an integer >= 1"):
        LoraSettings.from_dict({"r": 0})
    with pytest.raises(ValueError, match=r"model.lora.target_modules=\[\] must be"):
        LoraSettings.from_dict({"target_modules": []})
    with pytest.raises(ValueError, match=r"model.lora.dropout=1.5"):
        build_backbone({**TINY_MODEL, "lora": {"dropout": 1.5}}, toy_tokenizer())


def test_lora_trains_only_adapters_and_the_full_head(tok, tmp_path: Path):
    full = RewardModel(build_backbone(TINY_MODEL, tok), {"head": "scalar"})
    adapted = RewardModel(build_backbone({**TINY_MODEL, "lora": LORA}, tok), {"head": "scalar"})
    n_full, total_full = trainable_parameters(full)
    n_lora, total_lora = trainable_parameters(adapted)
    assert n_full == total_full
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert "head.score.weight" in trainable  # the head is trained fully, never frozen
    assert n_lora < n_full / 5 and total_lora > total_full  # the base is all still there, frozen
    head_before = adapted.head.score.weight.detach().clone()
    base_before = {n: p.detach().clone() for n, p in adapted.named_parameters() if not p.requires_grad}
    cfg = {"max_steps": 3, "learning_rate": 1e-2, "checkpoint_every": 0, "eval_every": 0, "progress_bar": False}
    trained = train(adapted, _batches(tok), [], make_reward_loss_fn(RewardParams()), cfg, tmp_path).model
    assert not torch.equal(trained.head.score.weight, head_before)
    for n, p in trained.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), n


@pytest.mark.parametrize("head", ["scalar", "gpm"])
def test_lora_rewards_identical_after_save_and_load(tok, texts, tmp_path: Path, head):
    model = _trained_reward_model(tok, head=head, tmp_path=tmp_path / "run")
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # the adapter moved
    ds = ModelCheckpointDataset(filepath=str(tmp_path / "reward" / "model"), version=Version(None, None))
    ds.save(ModelBundle(model, tok, {"objective": "bt"}))
    saved = Path(ds.list_versions()[0])
    assert (saved / "adapter_model.safetensors").exists() and (saved / HEAD_WEIGHTS_FILE).exists()
    assert (saved / LORA_FILE).exists() and (saved / "base_model" / "model.safetensors").exists()
    loaded = ModelCheckpointDataset(filepath=str(tmp_path / "reward" / "model"), version=Version(None, None)).load()
    assert isinstance(loaded.model.backbone, PeftModel)
    prompts, chosen, rejected = texts
    before = scoring.pair_logits(model, tok, prompts, chosen, rejected)
    after = scoring.pair_logits(loaded.model, loaded.tokenizer, prompts, chosen, rejected)
    assert np.array_equal(before, after), np.abs(before - after).max()


def test_merge_on_save_writes_a_plain_standard_directory(tok, texts, tmp_path: Path):
    model = _trained_reward_model(tok, lora={**LORA, "merge_on_save": True}, tmp_path=tmp_path / "run")
    save_bundle(ModelBundle(model, tok), tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter_config.json").exists() and not (tmp_path / "merged" / HEAD_WEIGHTS_FILE).exists()
    assert isinstance(model.backbone, PeftModel)  # saving merged a copy, not the model in use
    prompts, chosen, _ = texts
    ours = scoring.response_rewards(model, tok, prompts, chosen)
    theirs = _hf_rewards(tmp_path / "merged", tok, prompts, chosen)
    assert np.abs(ours - theirs).max() < 1e-5  # merging W + (alpha/r) BA reorders float sums only
    reloaded = load_bundle(tmp_path / "merged").model
    assert not isinstance(reloaded.backbone, PeftModel)
    assert np.array_equal(scoring.response_rewards(reloaded, tok, prompts, chosen), theirs)


def test_scalar_reward_model_is_a_standard_sequence_classifier(tok, texts, tmp_path: Path):
    model = _trained_reward_model(tok, lora=None, tmp_path=tmp_path / "run")
    save_bundle(ModelBundle(model, tok), tmp_path / "bt")
    config = json.loads((tmp_path / "bt" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "bt").config.num_labels == 1
    assert not (tmp_path / "bt" / HEAD_WEIGHTS_FILE).exists()
    prompts, chosen, _ = texts
    assert len({len(s) for s in tokenize_sequences(tok, prompts, chosen, 48, 24)}) > 1  # the batch is padded
    ours = scoring.response_rewards(model, tok, prompts, chosen)
    theirs = _hf_rewards(tmp_path / "bt", tok, prompts, chosen)
    assert np.array_equal(ours, theirs), np.abs(ours - theirs).max()
    reloaded = load_bundle(tmp_path / "bt").model
    assert np.array_equal(scoring.response_rewards(reloaded, tok, prompts, chosen), ours)


def test_lora_export_function_merges_into_a_standard_directory(tok, texts, tmp_path: Path):
    model = _trained_reward_model(tok, tmp_path=tmp_path / "run")
    model.export_sequence_classifier(tmp_path / "export")
    prompts, chosen, _ = texts
    ours = scoring.response_rewards(model, tok, prompts, chosen)
    assert np.abs(ours - _hf_rewards(tmp_path / "export", tok, prompts, chosen)).max() < 1e-5


def test_pad_equal_to_eos_exports_without_a_pad_id(texts, tmp_path: Path):
    tok = toy_tokenizer()
    tok.pad_token = tok.eos_token  # as tokenizers without a pad token are set up
    model = RewardModel(build_backbone(TINY_MODEL, tok), {"head": "scalar"}).eval()
    assert model.backbone.config.pad_token_id == model.backbone.config.eos_token_id
    model.export_sequence_classifier(tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["pad_token_id"] is None
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    prompts, chosen, _ = texts
    ours = scoring.response_rewards(model, tok, prompts[:2], chosen[:2])
    for i, seq in enumerate(tokenize_sequences(tok, prompts[:2], chosen[:2], 48, 24)):
        with torch.no_grad():  # one sequence at a time: the last position is the final EOS, as in prefalign
            assert classifier(torch.tensor([seq.input_ids])).logits[0, 0].item() == pytest.approx(ours[i], abs=1e-6)
    padded = tok.pad({"input_ids": [s.input_ids for s in tokenize_sequences(tok, prompts[:2], chosen[:2], 48, 24)]}, return_tensors="pt")
    with pytest.raises(ValueError, match="no padding token"):  # refused, never a silently wrong reward
        classifier(**padded)


def _bert_reward_model(tok) -> RewardModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=tok.pad_token_id, max_position_embeddings=128)
    return RewardModel(BertModel(config), {"head": "scalar"}).eval()


def test_encoder_and_gpm_exports_fail_naming_the_architecture(tok, texts, tmp_path: Path):
    bert = _bert_reward_model(tok)
    with pytest.raises(ValueError, match=r"'bert' backbone as BertForSequenceClassification.*load_bundle"):
        bert.export_sequence_classifier(tmp_path / "bert_export")
    # it still saves (backbone + head) and loads back with identical rewards
    save_bundle(ModelBundle(bert, tok), tmp_path / "bert")
    prompts, chosen, _ = texts
    loaded = load_bundle(tmp_path / "bert").model
    assert np.array_equal(scoring.response_rewards(loaded, tok, prompts, chosen), scoring.response_rewards(bert, tok, prompts, chosen))
    gpm = RewardModel(build_backbone(TINY_MODEL, tok), {"head": "gpm"})
    with pytest.raises(ValueError, match="GPM has no scalar reward.*load_preference_model"):
        gpm.export_sequence_classifier(tmp_path / "gpm_export")


def test_old_layout_with_a_biased_head_still_loads(tok, texts, tmp_path: Path):
    backbone = build_backbone(TINY_MODEL, tok)
    backbone.save_pretrained(tmp_path / "old")
    (tmp_path / "old" / HEAD_CONFIG_FILE).write_text(json.dumps({"head": "scalar"}))
    save_file({"score.weight": torch.ones(1, TINY_MODEL["hidden_size"]), "score.bias": torch.tensor([2.0])}, tmp_path / "old" / HEAD_WEIGHTS_FILE)
    model = RewardModel.from_pretrained(tmp_path / "old")
    assert model.head.score.bias.item() == 2.0
    with pytest.raises(ValueError, match="has a bias"):
        model.export_sequence_classifier(tmp_path / "export")


def test_gpm_load_and_score_is_antisymmetric_and_matches_the_embeddings(tok, tmp_path: Path):
    model = _trained_reward_model(tok, head="gpm", lora=None, tmp_path=tmp_path / "run")
    save_bundle(ModelBundle(model, tok), tmp_path / "gpm")
    pm = scoring.load_preference_model(tmp_path / "gpm")
    prompt, responses = "question 1: why sky", ["great kind", "awful rude", "clear", "lazy wrong vague"]
    s = pm.score(prompt, responses)
    assert s.shape == (4, 4) and s.dtype == torch.float64
    assert torch.equal(s, -s.T) and torch.all(s.diagonal() == 0)
    assert s.abs().max() > 0
    # by hand: S[i, j] = sum_l lambda_l (v_i[2l] v_j[2l+1] - v_i[2l+1] v_j[2l]) from the saved model's embeddings
    v, gate = scoring.response_embeddings(model, tok, [prompt] * 4, responses)
    lam = gate[0]
    by_hand = np.array([[sum(lam[l] * (v[i, 2 * l] * v[j, 2 * l + 1] - v[i, 2 * l + 1] * v[j, 2 * l]) for l in range(len(lam)))
                         for j in range(4)] for i in range(4)])
    assert np.allclose(s.numpy(), by_hand, atol=1e-12)
    assert torch.allclose(pm.probabilities(prompt, responses), torch.sigmoid(s / 0.1))
    assert np.allclose(scoring.preference_matrix(model, tok, prompt, responses), s.numpy() / 0.1)
    with pytest.raises(ValueError, match="at least one response"):
        pm.score(prompt, [])


def test_load_preference_model_rejects_a_policy(tok, tmp_path: Path):
    save_bundle(ModelBundle(build_causal_lm(TINY_MODEL, tok), tok), tmp_path / "policy")
    with pytest.raises(ValueError, match="not a reward/preference model"):
        scoring.load_preference_model(tmp_path / "policy")


def test_lora_policy_round_trips_as_adapter_and_as_merged_causal_lm(tok, tmp_path: Path):
    policy = build_causal_lm({**TINY_MODEL, "lora": LORA}, tok)
    assert isinstance(policy, PeftModel)
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)  # as if trained: the adapter changes the logits
    policy.eval()
    ids = torch.tensor([tok("great kind clear")["input_ids"]])
    with torch.no_grad():
        logits = policy(input_ids=ids).logits
        with policy.disable_adapter():
            assert not torch.allclose(policy(input_ids=ids).logits, logits)
    ds = ModelCheckpointDataset(filepath=str(tmp_path / "policy_sft" / "model"), version=Version(None, None))
    ds.save(ModelBundle(policy, tok, {"objective": "sft"}))
    loaded = ds.load().model
    assert isinstance(loaded, PeftModel) and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, logits)
    policy.prefalign_merge_on_save = True
    save_bundle(ModelBundle(policy, tok), tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()  # no peft needed
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, logits, atol=1e-5)


def test_resume_after_kill_with_lora_equals_uninterrupted_run(tok, tmp_path: Path):
    batches = _batches(tok, 64)
    loss_fn = make_reward_loss_fn(RewardParams())
    cfg = {"max_steps": 6, "learning_rate": 1e-2, "eval_every": 0, "checkpoint_every": 2, "keep_checkpoints": 1,
           "progress_bar": False, "seed": 5}

    def fresh(seed):
        return RewardModel(build_backbone({**TINY_MODEL, "lora": LORA, "seed": seed}, tok), {"head": "scalar"})

    full = train(fresh(0), batches, [], loss_fn, cfg, tmp_path / "full")
    calls = {"n": 0}

    def dies_in_step_5(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated kill")
        return loss_fn(model, batch)

    with pytest.raises(RuntimeError, match="simulated kill"):
        train(fresh(0), batches, [], dies_in_step_5, cfg, tmp_path / "killed")
    assert latest_checkpoint(tmp_path / "killed").name == "step_00000004"
    resumed = train(fresh(99), batches, [], loss_fn, cfg, tmp_path / "killed")  # another init: the checkpoint wins
    assert resumed.resumed_from_step == 4 and resumed.steps == 6
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name


def test_lora_over_a_pretrained_base_refers_to_it_and_loads_with_plain_peft(tok, tmp_path: Path):
    from peft import AutoPeftModelForCausalLM

    build_causal_lm(TINY_MODEL, tok).save_pretrained(tmp_path / "base")
    policy = build_causal_lm({"name_or_path": str(tmp_path / "base"), "lora": LORA}, tok)
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    save_bundle(ModelBundle(policy.eval(), tok), tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / LORA_FILE).read_text())["base"] == str(tmp_path / "base")
    assert not (tmp_path / "adapter" / "base_model").exists()  # the base is referred to, not copied
    ids = torch.tensor([tok("great kind clear")["input_ids"]])
    with torch.no_grad():
        expected = policy(input_ids=ids).logits
        assert torch.equal(load_bundle(tmp_path / "adapter").model(input_ids=ids).logits, expected)
        assert torch.equal(AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter").eval()(input_ids=ids).logits, expected)
    import shutil

    shutil.rmtree(tmp_path / "base")
    with pytest.raises(FileNotFoundError, match="adapts the base model .*does not exist.*merge_on_save"):
        load_bundle(tmp_path / "adapter")


def test_gradient_checkpointing_with_lora_still_reaches_the_adapters(tok):
    model = RewardModel(build_backbone({**TINY_MODEL, "lora": LORA, "gradient_checkpointing": True}, tok), {"head": "scalar"})
    assert model.backbone.get_base_model().is_gradient_checkpointing
    batch = _batches(tok)[0]
    model.train()
    loss, _ = make_reward_loss_fn(RewardParams())(model, batch)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # B starts at 0, its gradient does not


def test_lora_on_a_pretrained_encoder_round_trips_and_refuses_export(tok, texts, tmp_path: Path):
    _bert_reward_model(tok).backbone.save_pretrained(tmp_path / "bert")
    model = RewardModel(build_backbone({"name_or_path": str(tmp_path / "bert"), "lora": LORA}, tok), {"head": "scalar"}).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    save_bundle(ModelBundle(model, tok), tmp_path / "saved")
    prompts, chosen, _ = texts
    loaded = load_bundle(tmp_path / "saved").model
    assert np.array_equal(scoring.response_rewards(loaded, tok, prompts, chosen), scoring.response_rewards(model, tok, prompts, chosen))
    with pytest.raises(ValueError, match="BertForSequenceClassification"):
        model.export_sequence_classifier(tmp_path / "export")


@pytest.mark.parametrize("build, causal_lm", [(build_backbone, False), (build_causal_lm, True)])
def test_built_with_lora_equals_adapted_after_loading(tok, monkeypatch, build, causal_lm):
    """One code path puts adapters on: building with model.lora goes through lora.adapt_for_training,
    and gives the same adapters as building without and adapting afterwards (as the policy nodes do)."""
    from prefalign.core.models import backbone, lora

    calls = []
    monkeypatch.setattr(backbone, "adapt_for_training", lambda *a, **k: calls.append(k) or lora.adapt_for_training(*a, **k))
    params = {**TINY_MODEL, "lora": LORA, "seed": 3}
    built = build(params, tok)
    assert [c["causal_lm"] for c in calls] == [causal_lm] and calls[0]["seed"] == 3
    later = lora.adapt_for_training(build({**TINY_MODEL, "seed": 3}, tok), params, causal_lm=causal_lm, seed=3)
    assert isinstance(built, PeftModel) and isinstance(later, PeftModel)
    a, b = built.state_dict(), later.state_dict()
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
