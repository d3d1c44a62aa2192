"""Pipeline slices: real Kedro sessions in the `ci` environment on a tiny validated_pairs table."""

from __future__ import annotations

import polars as pl
import pytest

from tests.policy.conftest import make_pairs


def _save_pairs(kedro_project) -> pl.DataFrame:
    from kedro.framework.session import KedroSession

    pairs = make_pairs(n_prompts=40)
    with KedroSession.create(project_path=kedro_project, env="ci") as session:
        session.load_context().catalog.save("validated_pairs", pairs)
    return pairs


def _load(kedro_project, name: str):
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=kedro_project, env="ci") as session:
        return session.load_context().catalog.load(name)


@pytest.mark.slow
def test_sft_then_dpo_and_mmpo_namespaces(run_kedro, kedro_project):
    _save_pairs(kedro_project)
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
