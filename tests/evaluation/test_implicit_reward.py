"""Policies as implicit rewards: beta * (log pi - log pi_ref) summed over response tokens."""

from functools import partial

import numpy as np
import polars as pl
import pytest
import torch

from prefalign.core.evaluation import pair_scorers
from prefalign.core.models.backbone import build_causal_lm
from prefalign.core.models.tokenizer import build_tokenizer
from prefalign.core.synthetic import SyntheticConfig, generate_scalar

TINY = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def models():
    pairs = generate_scalar(SyntheticConfig(n_prompts=4, max_pairs_per_prompt=2))
    tokenizer = build_tokenizer({"vocab_size": 300}, pairs["prompt"].to_list() + pairs["chosen"].to_list())
    reference = build_causal_lm({**TINY, "seed": 0}, tokenizer)
    policy = build_causal_lm({**TINY, "seed": 1}, tokenizer)
    return pairs, tokenizer, policy, reference


def _logp_by_hand(model, tokenizer, prompt, response):
    prompt_ids = [tokenizer.bos_token_id] * (tokenizer.bos_token_id is not None) + tokenizer(
        prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    return float(sum(logp[t - 1, targets[t - 1]] for t in range(len(prompt_ids), ids.shape[1])))


def test_implicit_reward_is_beta_times_the_log_ratio_difference(models):
    pairs, tokenizer, policy, reference = models
    texts = pair_scorers.pairs_to_score(pairs.head(3))
    pol = pair_scorers.pair_logprob_table(policy, tokenizer, texts, batch_size=4)
    ref = pair_scorers.pair_logprob_table(reference, tokenizer, texts, batch_size=4)
    row = pairs.row(0, named=True)
    by_hand = {name: {r: _logp_by_hand(m, tokenizer, row["prompt"], row[r]) for r in ("chosen", "rejected")}
               for name, m in (("pi", policy), ("ref", reference))}
    expected = 0.1 * ((by_hand["pi"]["chosen"] - by_hand["ref"]["chosen"])
                      - (by_hand["pi"]["rejected"] - by_hand["ref"]["rejected"]))
    logits = pair_scorers.implicit_reward_scorer(pol, ref, beta=0.1)([row["prompt"]], [row["chosen"]], [row["rejected"]])
    assert logits[0] == pytest.approx(expected, abs=1e-4)
    swapped = pair_scorers.implicit_reward_scorer(pol, ref, beta=0.1)([row["prompt"]], [row["rejected"]], [row["chosen"]])
    assert swapped[0] == -logits[0]  # the other orientation of the same pair


def test_a_policy_equal_to_its_reference_scores_every_pair_a_tie(models):
    pairs, tokenizer, _, reference = models
    texts = pair_scorers.pairs_to_score(pairs)
    ref = pair_scorers.pair_logprob_table(reference, tokenizer, texts, batch_size=8)
    scored = pair_scorers.score_pairs(pairs, pair_scorers.implicit_reward_scorer(ref, ref, beta=0.5))
    assert np.all(scored["logit"].to_numpy() == 0.0)


def test_missing_logprob_names_the_fix(models):
    pairs, _, _, _ = models
    empty = pair_scorers.pair_logprob_table(None, None, pair_scorers.pairs_to_score())
    with pytest.raises(ValueError, match="pair_logprob_table"):
        pair_scorers.implicit_reward_scorer(empty, empty, 0.1)(["p"], ["a"], ["b"])


def test_policy_node_on_tiny_models_identical_policy_is_a_tie_with_zero_kl(models):
    from prefalign.core.models.checkpoint import ModelBundle
    from prefalign.core.synthetic import cyclic_pairs, generate_cyclic
    from prefalign.pipelines.evaluation import nodes

    pairs, tokenizer, policy, reference = models
    config = SyntheticConfig(n_triples=2)
    triples = generate_cyclic(config)
    test_pairs = pl.concat([pairs.head(6), cyclic_pairs(triples, config)])
    rb = pairs.head(2).select("prompt", "chosen", "rejected").with_columns(subset=pl.lit("pandalm_easy"))
    heldout = pairs.slice(6, 4)
    params = {"n_bins": 10, "implicit_reward_beta": 0.1, "rewardbench": {"sections": {"Chat": ["pandalm_easy"]}},
              "bootstrap": {"resamples": 20},
              "generation": {"max_prompts": 2, "sampling": {"samples_per_prompt": 2, "max_new_tokens": 4}}}
    data = {"max_length": 128, "max_prompt_length": 64, "eval_batch_size": 8}
    ref_bundle = ModelBundle(reference, tokenizer, {"objective": "sft"})
    ref_logps = nodes.reference_logprobs(ref_bundle, test_pairs, heldout, rb, triples, data, params)
    prompts = nodes.generation_prompts(test_pairs, params)
    ref_samples = nodes.reference_samples(ref_bundle, prompts, params, data)
    curve = pl.DataFrame({"step": [1, 2], "loss": [0.7, 0.6]})
    run = partial(nodes.evaluate_policy, namespace="policy_same")
    same = run(ModelBundle(reference, tokenizer, {"beta": 0.1}), ref_bundle, ref_logps, ref_samples, curve,
               test_pairs, heldout, rb, triples, {"weights": config.weights}, params, data)
    assert same["pairs"]["accuracy"] == 0.0  # every implicit-reward gap is exactly 0: a tie, wrong
    assert same["heldout"]["accuracy"] == 0.0 and same["description"].count("beta=") == 1  # named once
    assert same["truncation"]["pairs"]["sequences"] == 2 * test_pairs.height
    assert same["generation"]["win_rate"] == 0.5 and same["generation"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert same["training_curve"] == [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}]
    other = run(ModelBundle(policy, tokenizer, {"beta": 0.1}), ref_bundle, ref_logps, ref_samples, curve,
                test_pairs, heldout, rb, triples, {"weights": config.weights}, params, data)
    assert set(other) >= {"pairs", "heldout", "rewardbench", "cyclic", "generation"}
    assert 0.0 <= other["generation"]["win_rate_low"] <= other["generation"]["win_rate_high"] <= 1.0


def test_policy_win_rates_judged_by_a_reward_model_on_capped_pairs(models):
    """evaluation.generation.judge: a reward checkpoint judges policy vs reference samples (named in the
    metrics); evaluation.policy_max_pairs_per_source: every policy and the reference are scored on the
    same seeded subset, at most that many pairs per source."""
    from prefalign.core.models.backbone import build_backbone
    from prefalign.core.models.checkpoint import ModelBundle
    from prefalign.core.reward.model import RewardModel
    from prefalign.pipelines.evaluation import nodes

    pairs, tokenizer, policy, reference = models
    test_pairs = pairs.head(8).with_columns(source=pl.Series(["a", "b"] * 4))
    empty = pairs.head(0)
    rb = pairs.head(0).select("prompt", "chosen", "rejected").with_columns(subset=pl.lit("x"))
    params = {"n_bins": 10, "implicit_reward_beta": 0.1, "policy_max_pairs_per_source": 2, "bootstrap": {"resamples": 20},
              "rewardbench": {"sections": {}},
              "generation": {"judge": "reward_bt", "prompt_sources": ["a"], "max_prompts": 2,
                             "sampling": {"samples_per_prompt": 2, "max_new_tokens": 4}}}
    data = {"max_length": 128, "max_prompt_length": 64, "eval_batch_size": 8}
    ref_bundle = ModelBundle(reference, tokenizer, {"objective": "sft"})
    ref_logps = nodes.reference_logprobs(ref_bundle, test_pairs, empty, rb, pl.DataFrame(), data, params)
    assert ref_logps.height == 4  # 2 per source
    prompts = nodes.generation_prompts(test_pairs, params)
    assert set(prompts["prompt"]) <= set(test_pairs.filter(pl.col("source") == "a")["prompt"])
    ref_samples = nodes.reference_samples(ref_bundle, prompts, params, data)
    judge = ModelBundle(RewardModel(build_backbone({"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                     "intermediate_size": 64}, tokenizer), {"head": "scalar"}).eval(),
                        tokenizer, {"objective": "bt", "checkpoint": "data/06_models/cpu_chat/reward_bt/model/V/model"})
    out = nodes.evaluate_policy(ModelBundle(policy, tokenizer, {"beta": 0.1}), ref_bundle, ref_logps,
                                ref_samples, pl.DataFrame({"step": [1], "loss": [0.5]}), test_pairs, empty,
                                rb, pl.DataFrame(), judge, params, data, namespace="policy_x")
    assert out["pairs"]["pairs"] == 4  # 2 of each source, the same pairs the reference was scored on
    assert out["generation"]["judge"].startswith("reward model reward_bt (data/06_models/cpu_chat/reward_bt/model/V/model)")
    assert 0.0 <= out["generation"]["win_rate"] <= 1.0
