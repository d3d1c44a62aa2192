from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io.core import Version

from prefalign.core.models.checkpoint import ModelBundle
from prefalign.core.objectives import registry
from prefalign.core.reward.scoring import pair_logits, preference_matrix, response_embeddings, response_rewards
from prefalign.core.config_utils import deep_merge
from prefalign.core.reward.train_reward import RewardParams, fit_tokenizer, select_pairs, train_reward_model
from prefalign.datasets.model_checkpoint import ModelCheckpointDataset
from tests.reward.helpers import TINY_MODEL, toy_pairs_frame

BASE = {
    "max_length": 48, "max_prompt_length": 24, "batch_size": 8, "eval_batch_size": 16,
    "tokenizer": {"vocab_size": 300}, "model": TINY_MODEL,
    "training": {"max_steps": 16, "learning_rate": 3e-3, "warmup_steps": 1, "eval_every": 8, "checkpoint_every": 0, "progress_bar": False},
}


@pytest.fixture(scope="module")
def pairs():
    return toy_pairs_frame(96, 32)


def _train(pairs, tmp_path, **override):
    params = RewardParams.from_dict(deep_merge(BASE, override))
    drop = not params.soft_targets
    train, _ = select_pairs(pairs, "train", params, None, drop)
    val, _ = select_pairs(pairs, "val", params, None, drop)
    return params, train_reward_model(train, val, fit_tokenizer(train, params), params, tmp_path, "test")


def test_params_fail_before_training_naming_the_key():
    with pytest.raises(ValueError, match=r"unknown key reward\.lr\b"):
        RewardParams.from_dict({"lr": 1})
    with pytest.raises(ValueError, match=r"head='linear' is not one of \('scalar', 'gpm', 'gpm_fixed_gate'\)"):
        RewardParams.from_dict({"head": {"head": "linear"}})
    with pytest.raises(ValueError, match=r"unknown key training\.steps\b"):
        RewardParams.from_dict({"training": {"steps": 3}})


@pytest.mark.parametrize("head", ["scalar", "gpm"])
def test_no_pairs_score_to_an_empty_array(pairs, head):
    """Empty input (a selection of 0 pairs) is an empty result, not a TypeError from a GPM gate left
    None (issue 23 item 9c)."""
    from prefalign.core.models.backbone import build_backbone
    from prefalign.core.reward.model import RewardModel

    params = RewardParams.from_dict(deep_merge(BASE, {"head": {"head": head, "gpm_k": 2}}))
    tokenizer = fit_tokenizer(pairs, params)
    model = RewardModel(build_backbone(params.model, tokenizer), params.head_config())
    z = pair_logits(model, tokenizer, [], [], [])
    assert isinstance(z, np.ndarray) and z.shape == (0,)
    assert pair_logits(model, tokenizer, ["Hi?"], ["Hello."], ["Go."]).shape == (1,)
    with pytest.raises(ValueError, match="lengths differ"):
        pair_logits(model, tokenizer, [], ["Hello."], [])


def test_ties_dropped_for_bt_kept_for_mmpo(pairs):
    ties = int((pairs.filter(pairs["split"] == "train")["p_chosen"] == 0.5).sum())
    assert ties > 0
    hard, soft = registry.get("reward_bt"), registry.get("reward_mmpo")
    bt_params, mmpo_params = hard.parse({}), soft.parse({})
    assert hard.drops_ties(bt_params) and not soft.drops_ties(mmpo_params)  # the one tie flag
    bt, counts = select_pairs(pairs, "train", bt_params, None, hard.drops_ties(bt_params))
    mmpo, _ = select_pairs(pairs, "train", mmpo_params, None, soft.drops_ties(mmpo_params))
    assert counts["train_ties_dropped"] == ties and bt.height == 96 - ties and mmpo.height == 96
    margin, mcounts = select_pairs(pairs, "train", RewardParams(margin_offset=True), None, True)
    assert mcounts["train_null_margin_dropped"] > 0 and margin["margin"].null_count() == 0


@pytest.mark.parametrize("soft_targets,head", [(False, "scalar"), (True, "gpm")])
def test_tiny_training_learns_and_round_trips_through_the_catalog(pairs, tmp_path: Path, soft_targets, head):
    params, out = _train(pairs, tmp_path / "train", soft_targets=soft_targets, head={"head": head, "gpm_k": 2})
    vals = out.training_curve["val_loss"].drop_nulls().to_list()
    assert vals[-1] < vals[0]
    assert out.metrics["train_accuracy"] > 0.75 and out.metrics["val_accuracy"] > 0.75
    assert out.metrics["truncation"]["sequences"] == 2 * (out.metrics["train_pairs"] + out.metrics["val_pairs"])

    ds = ModelCheckpointDataset(filepath=str(tmp_path / "reward" / "model"), version=Version(None, None))
    ds.save(out.bundle)
    saved = Path(ds.list_versions()[0])
    # scalar: a standard AutoModelForSequenceClassification dir (the head is its `score`); GPM: backbone + head file
    files = {"head_config.json", "model.safetensors", "tokenizer.json"} | ({"head.safetensors"} if head == "gpm" else set())
    assert files <= {p.name for p in saved.iterdir()}
    assert ("head.safetensors" in {p.name for p in saved.iterdir()}) == (head == "gpm")
    loaded: ModelBundle = ds.load()
    val = pairs.filter(pairs["split"] == "val")
    x, w, l = val["prompt"].to_list(), val["chosen"].to_list(), val["rejected"].to_list()
    before = pair_logits(out.bundle.model, out.bundle.tokenizer, x, w, l, batch_size=7)
    after = pair_logits(loaded.model, loaded.tokenizer, x, w, l, batch_size=32)
    np.testing.assert_allclose(before, after, atol=1e-5)  # batch size and reload do not change scores
    assert (after > 0).mean() > 0.75

    responses = w[:2] + l[:2]
    matrix = preference_matrix(loaded.model, loaded.tokenizer, x[0], responses)
    np.testing.assert_allclose(matrix, -matrix.T, atol=1e-6)
    assert np.all(np.diag(matrix) == 0)
    if head == "scalar":
        r = response_rewards(loaded.model, loaded.tokenizer, [x[0]] * 4, responses)
        np.testing.assert_allclose(matrix, r[:, None] - r[None, :], atol=1e-6)
        with pytest.raises(ValueError, match="GPM"):
            response_embeddings(loaded.model, loaded.tokenizer, x[:1], w[:1])
    else:
        v, gate = response_embeddings(loaded.model, loaded.tokenizer, [x[0]] * 4, responses)
        assert v.shape == (4, 4) and gate.shape == (4, 2)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(gate, np.repeat(gate[:1], 4, 0), atol=1e-5)  # same prompt, same gate
        pair = pair_logits(loaded.model, loaded.tokenizer, [x[0]], [responses[0]], [responses[2]])
        assert matrix[0, 2] == pytest.approx(float(pair[0]), abs=1e-4)
        with pytest.raises(ValueError, match="scalar"):
            response_rewards(loaded.model, loaded.tokenizer, x[:1], w[:1])


def test_empty_train_split_fails_naming_the_counts(pairs):
    from prefalign.core.config_utils import sub_block_of
    from prefalign.pipelines.reward.nodes import select_training_pairs

    # the node reads reward.defaults as conf/ writes it: data keys under data
    defaults = {k: v for k, v in BASE.items() if sub_block_of(k) is None}
    defaults["data"] = {k: v for k, v in BASE.items() if sub_block_of(k) == "data"}
    only_val = pairs.filter(pairs["split"] == "val")
    with pytest.raises(ValueError, match=r"no train pairs left for reward_bt \(\{'train_rows': 0"):
        select_training_pairs(only_val, defaults, {}, namespace="reward_bt")
    train, val, counts = select_training_pairs(pairs, defaults, {}, namespace="reward_mmpo")
    assert train.height + val.height == pairs.height  # mmpo keeps every row, ties included
