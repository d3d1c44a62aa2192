"""Ties (p_chosen = 0.5) are left out by every hard-label objective and kept by soft ones
(issue 11, class 1; case 03_ties_in_dpo_ipo), decided in one place: the registry's drops_ties."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from prefalign.core.feedback.ingest import ingest_source
from prefalign.core.objectives import registry
from prefalign.core.objectives.soft_label import pair_targets
from prefalign.core.policy.losses import dpo_loss, ipo_loss
from prefalign.core.policy.train_policy import PolicyDataConfig, reference_logprobs, train_preference
from prefalign.core.config_utils import deep_merge
from prefalign.core.reward.train_reward import RewardParams, select_pairs
from prefalign.core.ties import leave_out_ties
from prefalign.core.training.loop import TrainConfig
from tests.feedback.helpers import records
from tests.policy.conftest import make_pairs

DATA = PolicyDataConfig(max_length=64, max_prompt_length=32, batch_size=8, eval_batch_size=32)
UF = {"parser": "ultrafeedback_pairs", "signal": "score_gap", "feedback": "ai", "gamma": 0.3, "score_range": [1, 10]}


def _case_03_rows() -> pl.DataFrame:
    # the two records of shared/cases/03_ties_in_dpo_ipo, copied by hand
    raw = records(
        {"prompt": "Suggest a name for a grey cat.", "chosen": "How about Smokey?", "rejected": "Maybe Ash.",
         "metadata": {"score_chosen": 7.0, "score_rejected": 7.0}},
        {"prompt": "Suggest a name for a small dog.", "chosen": "Pip is a cute name.", "rejected": "Dog.",
         "metadata": {"score_chosen": 8.0, "score_rejected": 3.0}},
    )
    rows, rejected, _ = ingest_source("ultrafeedback", {"records": raw}, UF)
    assert rejected.height == 0
    return rows


def test_case_03_tie_kept_by_feedback_left_out_by_hard_labels_kept_by_mmpo():
    rows = _case_03_rows()
    tie = rows.filter(pl.col("chosen") == "How about Smokey?").row(0, named=True)
    assert tie["p_chosen"] == 0.5 and tie["margin"] == 0.0  # feedback keeps it, documented
    hard = {"reward_bt": {}, "policy_dpo": {}, "policy_ipo": {}, "policy_dpo (cDPO)": {"label_smoothing": 0.1}}
    for namespace, params in hard.items():
        spec = registry.get(namespace.split(" ")[0])
        config = spec.parse(params if spec.family == "policy" else deep_merge({}, params))
        kept, ties = leave_out_ties(rows, spec.drops_ties(config))
        assert (kept["chosen"].to_list(), ties) == (["Pip is a cute name."], 1), namespace
    for namespace in ("reward_mmpo", "policy_mmpo"):
        spec = registry.get(namespace)
        kept, ties = leave_out_ties(rows, spec.drops_ties(spec.parse({})))
        assert kept.height == 2 and ties == 0, namespace


def test_why_hard_labels_must_not_see_ties():
    """The case's numbers: at h = 0 with p = 0.5, DPO's gradient is -beta/2 = -0.05 at beta = 0.1
    (it learns chosen > rejected), IPO's is -1/beta (it pulls h to 1/(2 beta)); MMPO's is 0."""
    grads = {}
    half = torch.tensor([0.5])
    losses = {"dpo": lambda h: dpo_loss(h, 0.1), "ipo": lambda h: ipo_loss(h, 0.1),
              "mmpo": lambda h: dpo_loss(h, 0.1, pair_targets(half, soft_targets=True))}
    for loss, fn in losses.items():
        h = torch.zeros(1, requires_grad=True)
        fn(h).backward()
        grads[loss] = float(h.grad)
    assert grads["dpo"] == pytest.approx(-0.05)
    assert grads["ipo"] == pytest.approx(-2 * (1 / 0.2))
    assert grads["mmpo"] == pytest.approx(0.0, abs=1e-9)


def test_the_soft_targets_switch_decides_and_reward_selection_follows_it():
    bt, mmpo = registry.get("reward_bt"), registry.get("reward_mmpo")
    assert bt.drops_ties(bt.parse({})) and not mmpo.drops_ties(mmpo.parse({}))
    gpm = registry.get("reward_gpm")  # the one switch, on any logistic objective BT/MMPO do not define
    assert gpm.drops_ties(gpm.parse({})) and not gpm.drops_ties(gpm.parse({"soft_targets": True}))
    pairs = make_pairs(8).with_columns(p_chosen=pl.when(pl.int_range(pl.len()) % 2 == 0).then(0.5).otherwise(pl.col("p_chosen")))
    train_ties = pairs.filter((pl.col("split") == "train") & (pl.col("p_chosen") == 0.5)).height
    _, counts = select_pairs(pairs, "train", RewardParams(), None, drop_ties=True)
    assert counts["train_ties_dropped"] == train_ties > 0
    _, counts = select_pairs(pairs, "train", RewardParams(soft_targets=True), None, drop_ties=False)
    assert "train_ties_dropped" not in counts


@pytest.fixture(scope="module")
def pairs_with_ties() -> pl.DataFrame:
    pairs = make_pairs(16)
    every_third = pl.int_range(pl.len()) % 3 == 0
    return pairs.with_columns(p_chosen=pl.when(every_third).then(0.5).otherwise(pl.col("p_chosen")))


@pytest.mark.parametrize("loss", ["dpo", "ipo", "cdpo", "mmpo"])
def test_policy_selection_leaves_ties_out_for_hard_labels_only(tiny_policy, pairs_with_ties, tmp_path, loss):
    table = reference_logprobs(tiny_policy, pairs_with_ties, DATA)
    training = TrainConfig(max_steps=1, learning_rate=1e-3, eval_every=0, checkpoint_every=0, progress_bar=False)
    spec = registry.get("policy_ipo" if loss == "ipo" else "policy_mmpo" if loss == "mmpo" else "policy_dpo")
    config = spec.parse({"beta": 0.1, **({"label_smoothing": 0.1} if loss == "cdpo" else {})})
    run = train_preference(tiny_policy, pairs_with_ties, table, spec, config, DATA, training, tmp_path)
    ties = {s: pairs_with_ties.filter((pl.col("split") == s) & (pl.col("p_chosen") == 0.5)).height for s in ("train", "val")}
    rows = {s: pairs_with_ties.filter(pl.col("split") == s).height for s in ("train", "val")}
    assert ties["train"] > 0 and ties["val"] > 0
    if loss == "mmpo":
        assert run.metrics["ties_dropped"] == {"train": 0, "val": 0}
        assert run.metrics["policy"]["train"]["pairs"] == rows["train"]
    else:
        assert run.metrics["ties_dropped"] == ties
        assert run.metrics["policy"]["train"]["pairs"] == rows["train"] - ties["train"]
        assert run.metrics["policy"]["val"]["pairs"] == rows["val"] - ties["val"]
