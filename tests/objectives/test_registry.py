"""The registry and the one soft-target switch (docs/methods.md s2, s4)."""

from __future__ import annotations

import dataclasses

import math

import pytest
import torch

from prefalign.core.objectives import registry
from prefalign.core.policy.objectives import PairLogprobs

PAIRWISE = registry.objectives(family="policy", trainer="pairwise")
# objectives whose switch is free (MMPO is DEFINED by soft_targets: true, so it cannot be switched off)
SWITCHABLE = [spec for spec in PAIRWISE if "soft_targets" not in spec.defining]


def batch(p: list[float]) -> PairLogprobs:
    # summed log-probs of 3 pairs, their token counts, the reference's log-probs
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return PairLogprobs(t(-4.0, -6.0, -3.0), t(-9.0, -5.0, -3.5), t(2, 3, 1), t(3, 2, 2), t(*p),
                        t(-5.0, -6.5, -2.0), t(-8.0, -5.5, -4.0))


def test_names_and_namespaces_are_unique_and_the_reference_is_one_policy():
    namespaces = [s.namespace for s in registry.REGISTRY]
    assert len(set(namespaces)) == len(namespaces)
    assert registry.reference_policy().trainer == "supervised"
    for spec in registry.objectives(trainer="on_policy"):
        assert registry.get(f"{spec.preference_model}").family == "reward"
    with pytest.raises(KeyError, match="registered"):
        registry.get("policy_ppo")


@pytest.mark.parametrize("spec", SWITCHABLE, ids=lambda s: s.namespace)
def test_soft_switch_with_p_one_equals_the_hard_objective_exactly(spec):
    hard = spec.parse({"soft_targets": False})
    soft = spec.parse({"soft_targets": True})
    ones = batch([1.0, 1.0, 1.0])
    assert spec.loss(ones, soft)[0].item() == spec.loss(ones, hard)[0].item()
    # and the switch matters once p < 1
    mixed = batch([0.6, 0.9, 0.5])
    assert spec.loss(mixed, soft)[0].item() != pytest.approx(spec.loss(mixed, hard)[0].item())


def test_policy_mmpo_is_dpo_with_the_switch_on():
    dpo, mmpo = registry.get("policy_dpo"), registry.get("policy_mmpo")
    assert mmpo.loss is dpo.loss and mmpo.config is dpo.config
    b = batch([0.6, 0.9, 0.5])
    soft_dpo = dataclasses.replace(dpo.parse({"beta": 0.5}), soft_targets=True)  # DPO's config with the switch on
    assert mmpo.loss(b, mmpo.parse({"beta": 0.5}))[0].item() == dpo.loss(b, soft_dpo)[0].item()
    # hand case, pair 1 alone: h = (-4 + 5) - (-9 + 8) = 2, z = 1, p = 0.6: log(1 + e^-1) + 0.4 * 1
    one = PairLogprobs(*(torch.tensor([v], dtype=torch.float64) for v in (-4.0, -9.0, 2, 3, 0.6, -5.0, -8.0)))
    assert mmpo.loss(one, mmpo.parse({"beta": 0.5}))[0].item() == pytest.approx(math.log1p(math.exp(-1.0)) + 0.4)


def test_the_tie_flag_follows_the_switch():
    for spec in registry.REGISTRY:
        if spec.data != "pairs":
            assert not spec.drops_ties(None)  # SFT and on-policy samples have no pair labels
            continue
        defined = spec.defining.get("soft_targets")  # MMPO: soft by definition; BT and DPO: hard
        if defined is not None:
            assert spec.drops_ties(spec.parse({})) is (not defined)
            continue
        assert spec.drops_ties(spec.parse({"soft_targets": True})) is False
        assert spec.drops_ties(spec.parse({"soft_targets": False})) is True


def test_reward_head_type_comes_from_the_registry():
    assert registry.get("reward_gpm").parse({}).head_config().head == "gpm"
    assert registry.get("reward_bt").parse({}).head_config().head == "scalar"
    with pytest.raises(ValueError, match="contradicts"):
        registry.get("reward_bt").parse({"head": {"head": "gpm"}})


def test_process_count_is_checked_once_for_reward_and_policy():
    from prefalign.core.reward.train_reward import RewardParams
    from prefalign.core.training.launch import check_num_processes

    with pytest.raises(ValueError, match=r"reward num_processes=3 must be >= 1 and <= the batch size \(2\)"):
        RewardParams.from_dict({"num_processes": 3, "batch_size": 2})
    with pytest.raises(ValueError, match=r"policy.defaults.num_processes=0"):
        check_num_processes(0, 8, "policy.defaults.num_processes")
    assert check_num_processes("2", 8, "k") == 2


# ---------------------------------------------------------------------------------------------
# Precedence: class defaults < family `defaults` < the objective's own block < its defining settings
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("namespace", ["reward_mmpo", "policy_mmpo"])
def test_defaults_cannot_turn_mmpo_into_bt(namespace):
    spec = registry.get(namespace)
    # reward.defaults.soft_targets: false with an empty reward.mmpo used to train plain BT under MMPO's name
    config = spec.parse({}, defaults={"soft_targets": False})
    assert config.soft_targets is True and not spec.drops_ties(config)
    assert spec.parse(None, defaults={"soft_targets": False}).soft_targets is True
    assert spec.parse({"soft_targets": True}, defaults={"soft_targets": False}).soft_targets is True  # agreeing is fine


def test_an_own_block_contradicting_the_objective_is_an_error_naming_key_and_fix():
    with pytest.raises(ValueError) as raised:
        registry.get("reward_mmpo").parse({"soft_targets": False}, defaults={"soft_targets": True})
    message = str(raised.value)
    # RewardParams is flat; the key is named where the block writes it (conf: reward.mmpo.objective)
    assert "reward.mmpo.objective.soft_targets=False contradicts the objective" in message
    assert "remove reward.mmpo.objective.soft_targets" in message and "use reward.bt" in message
    with pytest.raises(ValueError, match=r"policy\.mmpo\.objective\.soft_targets=False .* use policy\.dpo"):
        registry.get("policy_mmpo").parse({"soft_targets": False})


def test_defaults_still_reach_every_key_an_objective_does_not_define():
    bt, mmpo = registry.get("reward_bt"), registry.get("reward_mmpo")
    defaults = {"soft_targets": True, "batch_size": 4, "training": {"max_steps": 7, "learning_rate": 0.01}}
    # BT is defined by hard labels: a soft_targets: true in the defaults (meant for GPM) leaves it BT
    assert bt.parse({}, defaults=defaults).soft_targets is False
    assert registry.get("reward_gpm").parse({}, defaults=defaults).soft_targets is True
    merged = mmpo.parse({"training": {"max_steps": 3}}, defaults=defaults)
    assert merged.batch_size == 4 and merged.training == {"max_steps": 3, "learning_rate": 0.01}  # deep merge


def test_the_parameter_check_and_the_nodes_agree_on_precedence():
    from prefalign.pipelines.parameter_checks import check_reward
    from prefalign.pipelines.reward.nodes import select_training_pairs

    params = {"reward": {"defaults": {"objective": {"soft_targets": False}}, "mmpo": {}}}
    check_reward(params)  # defaults may say false: MMPO's definition wins, no error
    with pytest.raises(ValueError, match="contradicts the objective"):
        check_reward({"reward": {"defaults": {}, "mmpo": {"objective": {"soft_targets": False}}}})
    # the node's own parse gives MMPO soft targets under the same parameters (select_training_pairs keeps ties)
    import polars as pl
    from tests.policy.conftest import make_pairs

    pairs = make_pairs(8).with_columns(p_chosen=pl.lit(0.5))
    train, _, counts = select_training_pairs(pairs, {"objective": {"soft_targets": False}}, {}, namespace="reward_mmpo")
    assert train.height == pairs.filter(pl.col("split") == "train").height and "train_ties_dropped" not in counts


@pytest.mark.parametrize(("namespace", "soft", "other"), [("reward_bt", True, "reward.mmpo"), ("policy_dpo", True, "policy.mmpo")])
def test_bt_and_dpo_are_defined_by_hard_labels(namespace, soft, other):
    """A soft_targets: true written in BT's / DPO's own block is a contradiction that points to MMPO."""
    spec = registry.get(namespace)
    with pytest.raises(ValueError, match=rf"{spec.block_key.replace('.', '[.]')}.*soft_targets=True contradicts the "
                                         rf"objective.*use {other.replace('.', '[.]')} for soft_targets: True"):
        spec.parse({"soft_targets": soft})  # the reward block as lifted, the policy objective block as is
    assert spec.parse({}, defaults={"soft_targets": True}).soft_targets is False
