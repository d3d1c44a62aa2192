"""Pipeline slices: real Kedro sessions in the `ci` environment on a tiny validated_pairs table."""

from __future__ import annotations

import polars as pl
import pytest

from tests.policy.conftest import make_pairs, tiny_reward_bundle


def _save_inputs(kedro_project) -> pl.DataFrame:
    """validated_pairs and the two reward checkpoints GPO reads, saved through the catalog."""
    from kedro.framework.session import KedroSession

    pairs = make_pairs(n_prompts=40)
    with KedroSession.create(project_path=kedro_project, env="ci") as session:
        catalog = session.load_context().catalog
        catalog.save("validated_pairs", pairs)
        catalog.save("reward_gpm.model", tiny_reward_bundle(pairs, "gpm"))
        catalog.save("reward_bt.model", tiny_reward_bundle(pairs, "scalar"))
    return pairs


def _load(kedro_project, name: str):
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=kedro_project, env="ci") as session:
        return session.load_context().catalog.load(name)


@pytest.mark.slow
def test_sft_then_each_namespace_alone(run_kedro, kedro_project):
    _save_inputs(kedro_project)
    run_kedro("policy", namespaces=["policy_sft"])
    run_kedro("policy", namespaces=["policy_dpo", "policy_mmpo"])
    for ns in ("policy_dpo", "policy_mmpo"):
        metrics = _load(kedro_project, f"{ns}.metrics")
        policy, reference = metrics["policy"]["train"], metrics["reference"]["train"]
        # the reference's implicit reward is 0 for every pair (accuracy 0, ties count wrong)
        assert policy["implicit_accuracy"] > max(reference["implicit_accuracy"], 0.5), (ns, metrics)
        assert policy["pairs"] == 30
        table = _load(kedro_project, f"{ns}.reference_logprobs")
        assert table.height == 40 and set(table.columns) == {"pair_id", "ref_chosen_logp", "ref_rejected_logp"}
        bundle = _load(kedro_project, f"{ns}.model")
        assert bundle.metadata["objective"] == ns.removeprefix("policy_")
        assert _load(kedro_project, f"{ns}.training_curve").height == 12
    # every checkpoint is a versioned directory
    versions = list((kedro_project / "data/06_models/policy_sft/model").iterdir())
    assert len(versions) == 1 and (versions[0] / "model" / "config.json").exists()

    # GPO with the GPM and (baseline) the BT reward model: one iteration each in ci
    run_kedro("policy", namespaces=["policy_gpo", "policy_gpo_bt"])
    for ns, scorer in (("policy_gpo", "reward_gpm.model"), ("policy_gpo_bt", "reward_bt.model")):
        generations = _load(kedro_project, f"{ns}.generations")
        assert generations.height == 4 * 3  # ci: 4 prompts x K = 3
        assert generations["response"].dtype == pl.String and generations["score"].is_not_null().all()
        assert generations.group_by("prompt_index").agg(pl.col("score").sum())["score"].abs().max() < 1e-9
        iterations = _load(kedro_project, f"{ns}.iteration_models")
        assert list(iterations) == ["iteration_1"]
        assert iterations["iteration_1"]().metadata["preference_model"] == scorer
        metrics = _load(kedro_project, f"{ns}.metrics")
        assert metrics["preference_model"] == scorer and metrics["iterations"][0]["responses"] == 12
