import math

import pytest
import numpy as np
import torch

from prefalign.core.reward.heads import GPMHead, RewardOutput, gather_rows, gpm_score


def unit(*xs):
    return torch.nn.functional.normalize(torch.tensor([xs], dtype=torch.float32), dim=-1)


def test_k1_by_hand():
    # v_i = (1, 0), v_j = (cos t, sin t), lambda = 1: s = 1 * sin t - 0 * cos t = sin t
    t = 0.3
    s = gpm_score(unit(1.0, 0.0), unit(math.cos(t), math.sin(t)), torch.ones(1, 1))
    assert s.item() == pytest.approx(math.sin(t))


def test_antisymmetry_and_zero_diagonal():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    gate = torch.softmax(torch.randn(6, 4), -1)
    w, l = v[:3], v[3:]
    assert torch.allclose(gpm_score(w, l, gate[:3]), -gpm_score(l, w, gate[:3]))
    assert torch.equal(gpm_score(v, v, gate), torch.zeros(6))


def test_gate_weights_the_blocks():
    v_i = torch.tensor([[1.0, 0.0, 1.0, 0.0]]) / math.sqrt(2)
    v_j = torch.tensor([[0.0, 1.0, 0.0, -1.0]]) / math.sqrt(2)
    # block 1 contributes +1/2, block 2 -1/2: the gate decides the sign
    assert gpm_score(v_i, v_j, torch.tensor([[0.9, 0.1]])).item() == pytest.approx(0.5 * 0.9 - 0.5 * 0.1)
    assert gpm_score(v_i, v_j, torch.tensor([[0.1, 0.9]])).item() == pytest.approx(0.5 * 0.1 - 0.5 * 0.9)


def test_head_normalises_and_gates_from_the_last_prompt_token():
    torch.manual_seed(0)
    head = GPMHead(hidden_size=8, k=2)
    hidden = torch.randn(2, 5, 8)
    last, last_prompt = torch.tensor([4, 3]), torch.tensor([1, 1])

    def head(hidden, last, last_prompt, _head=head):
        return _head(gather_rows(hidden, last), gather_rows(hidden, last_prompt))

    v, gate = head(hidden, last, last_prompt)
    assert v.shape == (2, 4) and gate.shape == (2, 2)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2))
    assert torch.allclose(gate.sum(-1), torch.ones(2)) and (gate >= 0).all()
    changed = hidden.clone()
    changed[:, 1] += 5.0  # only the last prompt token's state moves: the gate changes, v does not
    v2, gate2 = head(changed, last, last_prompt)
    assert torch.allclose(v, v2) and not torch.allclose(gate, gate2)


def test_pair_logits_scalar_and_gpm():
    out = RewardOutput(rewards=torch.tensor([2.0, 1.0, 0.5, 1.5]))
    assert out.pair_logits(2).tolist() == [1.5, -0.5]
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gpm = RewardOutput(embeddings=v, gate=torch.ones(2, 1), tau=0.1)
    assert gpm.pair_logits(1).item() == pytest.approx(1.0 / 0.1)


def test_a_head_registered_here_runs_through_the_model_and_scoring_unchanged():
    """The model and the scoring API ask the head (``reads_prompt``, ``scalar_reward``, ``outputs``),
    never its name: a head registered in this test trains, scores and refuses exports as its
    interface says, with no change to model.py or scoring.py."""
    from prefalign.core.models import build_backbone
    from prefalign.core.reward.heads import HEADS, ScalarHead, register_head
    from prefalign.core.reward.model import HeadConfig, RewardModel
    from prefalign.core.reward.scoring import pair_logits, response_rewards
    from tests.reward.helpers import TINY_MODEL, toy_pairs, toy_tokenizer

    @register_head
    class PromptMinusResponse(ScalarHead):
        """r = w . (h(x, y) - h(x)): reads the prompt, one reward per response."""

        name = "test_prompt_minus_response"
        reads_prompt = True

        def outputs(self, pooled, prompt_pooled, tau):
            return RewardOutput(rewards=self(pooled - prompt_pooled), tau=tau)

    try:
        prompts, chosen, rejected = toy_pairs(4)
        tok = toy_tokenizer()
        backbone = build_backbone({**TINY_MODEL, "seed": 0}, tok)
        model = RewardModel(backbone, HeadConfig.from_dict({"head": "test_prompt_minus_response"}))
        assert model.has_scalar_reward and isinstance(model.head, PromptMinusResponse)
        rewards = response_rewards(model, tok, prompts, chosen)
        # by hand: the same backbone's pooled states, through the head's own map
        from prefalign.core.training.batching import collate_sequences, tokenize_groups
        seqs = [g[0] for g in tokenize_groups(tok, prompts, [[c] for c in chosen], 256, 128)]
        batch = collate_sequences(seqs, tok.pad_token_id)
        with torch.no_grad():
            hidden = model.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            expected = model.head(gather_rows(hidden, batch.last_index) - gather_rows(hidden, batch.last_prompt_index))
        assert rewards == pytest.approx(expected.double().numpy(), abs=1e-5)
        logits = pair_logits(model, tok, prompts, chosen, rejected)
        assert logits == pytest.approx(rewards - response_rewards(model, tok, prompts, rejected), abs=1e-5)
    finally:
        HEADS.pop("test_prompt_minus_response")


def test_fixed_gate_gpm_head_hand_case():
    """reward_gpm_fixed_gate (docs/methods.md s3.1): v = normalise(W h), lambda = softmax(g) for
    every prompt; z = <R v_w, v_l> / tau and the BT loss on it, by hand for k = 1 and k = 2."""
    from prefalign.core.objectives.registry import get
    from prefalign.core.reward.heads import HEADS
    from types import SimpleNamespace

    spec = get("reward_gpm_fixed_gate")
    params = spec.parse({"head": {"gpm_k": 2, "tau": 0.5}})
    assert params.head_config().head == "gpm_fixed_gate" and spec.head_type == "gpm_fixed_gate"
    head = HEADS["gpm_fixed_gate"].build(2, params.head_config())
    assert not head.reads_prompt and not head.scalar_reward
    with torch.no_grad():
        head.embed.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
        head.gate_logits.copy_(torch.tensor([math.log(3.0), 0.0]))  # lambda = (3/4, 1/4)
    # chosen h = (3, 4) -> v = (0.6, 0.8, 0.6, 0.8) / sqrt(2); rejected h = (1, 0) -> v = (1, 0, 1, 0) / sqrt(2)
    pooled = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    out = head.outputs(pooled, None, tau=0.5)
    assert out.gate.flatten().tolist() == pytest.approx([0.75, 0.25, 0.75, 0.25])
    # block l: v_w[2l] v_l[2l+1] - v_w[2l+1] v_l[2l] = (0.6 * 0 - 0.8 * 1) / 2 = -0.4 in both blocks
    # s = 0.75 * -0.4 + 0.25 * -0.4 = -0.4; z = s / tau = -0.8
    z = out.pair_logits(1)
    assert z.item() == pytest.approx(-0.8, abs=1e-6)
    # the registry's loss on it: -log sigmoid(-0.8) = log(1 + e^0.8)

    class Stub(torch.nn.Module):  # a model whose forward is the head's outputs above
        def forward(self, sequences):
            return out

    class OnePair(SimpleNamespace):
        def __len__(self):
            return 1

    loss, metrics = spec.loss(params)(Stub(), OnePair(sequences=None, p_chosen=torch.tensor([1.0]), margin=torch.tensor([0.0])))
    assert loss.item() == pytest.approx(math.log1p(math.exp(0.8)), abs=1e-6)
    assert metrics["accuracy"].item() == 0.0


def test_fixed_gate_gpm_model_saves_and_loads_with_the_same_logits(tmp_path):
    from prefalign.core.models import build_backbone
    from prefalign.core.reward.model import HeadConfig, RewardModel
    from prefalign.core.reward.scoring import pair_logits
    from tests.reward.helpers import TINY_MODEL, toy_pairs, toy_tokenizer

    prompts, chosen, rejected = toy_pairs(4)
    tok = toy_tokenizer()
    model = RewardModel(build_backbone({**TINY_MODEL, "seed": 0}, tok), HeadConfig.from_dict({"head": "gpm_fixed_gate"}))
    with torch.no_grad():
        model.head.gate_logits.copy_(torch.tensor([0.5, -0.5]))
    before = pair_logits(model, tok, prompts, chosen, rejected)
    model.save_pretrained(tmp_path / "m")
    loaded = RewardModel.from_pretrained(tmp_path / "m")
    assert loaded.head_config.head == "gpm_fixed_gate" and loaded.head.gate_logits.tolist() == [0.5, -0.5]
    assert pair_logits(loaded, tok, prompts, chosen, rejected) == pytest.approx(before, abs=1e-6)
    assert np.abs(before).max() > 0  # not trivially zero
