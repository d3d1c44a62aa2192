"""One step's loss and gradient do not depend on its split into micro-batches and processes (issue 20, item 1).

Token-level terms (SFT, ORPO's NLL) are divided by the step's tokens, pair-level terms by the
step's pairs (core/training/normalisation.py). Before, the loop averaged micro-batch means: on
these 4 pairs SFT's grad norm differed by 38% between 4 x 1 and 2 x 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prefalign.core.training.launch import run_accelerate_module
from tests.training.grad_split import CHOSEN, OBJECTIVES, PROMPTS, one_step, setup

TOL = 1e-6  # relative, fp32: the split only changes summation order (a loss of ~6 has an fp32 ULP of 4.8e-7)


def assert_same_step(run: dict, reference: dict) -> None:
    assert run["loss"] == pytest.approx(reference["loss"], rel=TOL, abs=TOL)
    assert run["grad_norm"] == pytest.approx(reference["grad_norm"], rel=TOL)
    # each entry within 1e-6 of the gradient's norm (GPM's is ~14 here: tau = 0.1 scales its logits by 10)
    assert float((run["grad"] - reference["grad"]).abs().max()) <= TOL * max(1.0, reference["grad_norm"])


@pytest.fixture(scope="module")
def whole_batch_steps():
    """Batch 4 x accumulation 1 and batch 3 x 1: the reference of every split, in one process."""
    return {(objective, n): one_step(objective, n, 1, n, val_batch_size=3 if n == 3 else None) for objective in OBJECTIVES for n in (4, 3)}


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_batch_and_accumulation_split_give_one_loss_and_gradient(objective, whole_batch_steps):
    reference = whole_batch_steps[(objective, 4)]
    for batch_size, accum in [(2, 2), (1, 4)]:
        assert_same_step(one_step(objective, batch_size, accum), reference)
    # 3 pairs as micro-batches of 2 and 1: the short last micro-batch weighs its own pairs only
    assert_same_step(one_step(objective, 2, 2, n_pairs=3), whole_batch_steps[(objective, 3)])


def test_sft_step_loss_is_the_global_token_mean():
    """Recomputed by hand, one sequence at a time: sum of response-token NLLs / number of response tokens."""
    model, batches, _ = setup("sft")
    tok_counts, nll_sums = [], []
    from tests.training.grad_split import tokenizer
    from prefalign.core.training.batching import tokenize_sequences

    with torch.no_grad():
        for seq in tokenize_sequences(tokenizer(), PROMPTS, CHOSEN, 64, 32):
            ids = torch.tensor([seq.input_ids])
            logits = model(input_ids=ids).logits[0]
            start, end = seq.prompt_length, len(seq.input_ids)  # response tokens: positions start..end-1
            nll_sums.append(float(F.cross_entropy(logits[start - 1:end - 1], ids[0, start:end], reduction="sum")))
            tok_counts.append(end - start)
    global_mean = sum(nll_sums) / sum(tok_counts)
    assert len(set(tok_counts)) > 2  # responses of very different lengths, else the split could not matter
    for batch_size, accum in [(4, 1), (2, 2), (1, 4)]:
        assert one_step("sft", batch_size, accum)["loss"] == pytest.approx(global_mean, rel=TOL)
    # what averaging the micro-batch means would log for 1 x 4 (the old loop): measurably different
    mean_of_means = sum(s / n for s, n in zip(nll_sums, tok_counts)) / len(tok_counts)
    assert abs(mean_of_means - global_mean) > 1e-3


def test_plain_loss_function_is_a_mean_over_examples(whole_batch_steps):
    """A plain ``loss_fn(model, batch)`` (no StepLoss) is read as its batch's mean over pairs, so a
    pair-level loss written that way is split-invariant too."""
    model, batches, loss_fn = setup("reward_bt")

    def plain(model, batch):
        return loss_fn(model, batch)  # a StepLoss called without denominators: the batch mean

    import copy
    import tempfile

    from prefalign.core.training.loop import TrainConfig, train

    cfg = TrainConfig(max_steps=1, learning_rate=1e-9, gradient_accumulation_steps=2, max_grad_norm=1e9, eval_every=0,
                      checkpoint_every=0, progress_bar=False)
    with tempfile.TemporaryDirectory() as out:
        row = train(copy.deepcopy(model), batches(2), [], plain, cfg, out).history[0]
    assert row["train_loss"] == pytest.approx(whole_batch_steps[("reward_bt", 4)]["loss"], rel=TOL)
    assert row["grad_norm"] == pytest.approx(whole_batch_steps[("reward_bt", 4)]["grad_norm"], rel=TOL)


@pytest.mark.slow
def test_two_processes_give_the_one_process_step(whole_batch_steps, tmp_path: Path):
    """2 processes (gloo) x {batch 4 x 1, batch 2 x 2, batch 2 x 2 over 3 pairs (process 1's last share
    empty)} against one process: the same loss, grad norm and gradient for every objective, and the
    same validation loss over 3 pairs in batches of 2 (an empty share again) as over one batch of 3."""
    run_accelerate_module("tests.training.grad_split_worker", tmp_path, 2, None, "split test")
    saved = torch.load(tmp_path / "result.pt")
    assert saved["num_processes"] == 2
    for (objective, n_pairs, batch_size, accum), run in saved["results"].items():
        reference = whole_batch_steps[(objective, n_pairs)]
        assert_same_step(run, reference)
        if n_pairs == 3:
            assert run["val_loss"] == pytest.approx(reference["val_loss"], rel=TOL, abs=TOL)
