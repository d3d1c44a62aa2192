from pathlib import Path

import pytest
import torch

from prefalign.core.training import TrainConfig, latest_checkpoint, make_pair_batches, tokenize_pairs, train
from tests.reward.helpers import TinyScalarRM, bt_loss_fn, toy_pairs, toy_tokenizer


@pytest.fixture(scope="module")
def data():
    tok = toy_tokenizer()
    prompts, chosen, rejected = toy_pairs(96, seed=1)
    train_pairs = tokenize_pairs(tok, prompts[:64], chosen[:64], rejected[:64], max_length=48, max_prompt_length=24)
    val_pairs = tokenize_pairs(tok, prompts[64:], chosen[64:], rejected[64:], max_length=48, max_prompt_length=24)
    return (
        tok,
        make_pair_batches(train_pairs, 8, tok.pad_token_id, seed=0),
        make_pair_batches(val_pairs, 16, tok.pad_token_id, seed=None),
    )


def test_config_fails_before_training_naming_the_key():
    with pytest.raises(ValueError, match=r"unknown key training\.lr\b.*allowed keys of training: .*learning_rate"):
        TrainConfig.from_dict({"lr": 0.1})
    with pytest.raises(ValueError, match=r"training.lr_schedule='step' is invalid; it must be one of \('constant', 'linear', 'cosine'\)"):
        TrainConfig.from_dict({"lr_schedule": "step"})
    with pytest.raises(ValueError, match="training.mixed_precision='fp8'"):
        TrainConfig.from_dict({"mixed_precision": "fp8"})
    with pytest.raises(ValueError, match="training.warmup_steps=20"):
        TrainConfig.from_dict({"max_steps": 10, "warmup_steps": 20})


def test_warmup_then_cosine_schedule_by_hand():
    cfg = TrainConfig(max_steps=10, warmup_steps=2, lr_schedule="cosine")
    assert cfg.lr_factor(0) == pytest.approx(1 / 3) and cfg.lr_factor(1) == pytest.approx(2 / 3)
    assert cfg.lr_factor(2) == pytest.approx(1.0)
    assert cfg.lr_factor(6) == pytest.approx(0.5)  # halfway through the 8 decay steps: (1 + cos(pi/2)) / 2
    assert TrainConfig(max_steps=10, lr_schedule="linear").lr_factor(5) == pytest.approx(0.5)


def test_tiny_run_learns(data, tmp_path: Path):
    tok, train_batches, val_batches = data
    cfg = {"max_steps": 24, "learning_rate": 3e-3, "warmup_steps": 2, "eval_every": 8, "checkpoint_every": 0, "progress_bar": False}
    result = train(TinyScalarRM(tok), train_batches, val_batches, bt_loss_fn, cfg, tmp_path)
    val_losses = [row["val_loss"] for row in result.history if "val_loss" in row]
    assert len(result.history) == 24 and len(val_losses) == 3
    assert val_losses[-1] < val_losses[0] < 0.75  # chance level of BT is log 2 = 0.693
    assert result.final_metrics["val_accuracy"] > 0.8
    assert result.tokens_per_second > 0 and result.steps == 24


class Killed(RuntimeError):
    pass


def test_resume_after_kill_equals_uninterrupted_run(data, tmp_path: Path):
    tok, train_batches, val_batches = data
    # 8 batches per epoch, 2 micro-batches per step: the run crosses an epoch boundary (reshuffle).
    cfg = {"max_steps": 6, "gradient_accumulation_steps": 2, "learning_rate": 3e-3, "eval_every": 3,
           "checkpoint_every": 2, "keep_checkpoints": 1, "progress_bar": False, "seed": 5}
    full = train(TinyScalarRM(tok), train_batches, val_batches, bt_loss_fn, cfg, tmp_path / "full")

    calls = {"n": 0}

    def dies_in_step_6(model, batch):  # step 5 (1-based) = micro-batch calls 9 and 10
        calls["n"] += model.training  # validation calls do not count
        if calls["n"] == 10:
            raise Killed("simulated kill")
        return bt_loss_fn(model, batch)

    with pytest.raises(Killed):
        train(TinyScalarRM(tok), train_batches, val_batches, dies_in_step_6, cfg, tmp_path / "killed")
    assert latest_checkpoint(tmp_path / "killed").name == "step_00000004"
    # a fresh process would build a fresh model (here with another init) and resume from the checkpoint
    resumed = train(TinyScalarRM(tok, seed=99), train_batches, val_batches, bt_loss_fn, cfg, tmp_path / "killed")
    assert resumed.resumed_from_step == 4 and resumed.steps == 6
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in full.history], abs=1e-6)
    assert resumed.final_metrics["val_loss"] == pytest.approx(full.final_metrics["val_loss"], abs=1e-6)
