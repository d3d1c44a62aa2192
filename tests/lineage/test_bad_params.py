"""Bad `--params` values fail with a message that names the key (and the allowed values where
there is a list), before any model is trained. One or two typical mistakes per pipeline.

Runs on a private copy of the trained project: a bad value that is NOT caught would otherwise
write a new version of the shared outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# (pipeline, runtime params, run kwargs, text the error must contain)
CASES = [
    pytest.param("feedback", {"feedback": {"sources": {"ultrafeedback": {"signal": "score_gapp"}}}}, {},
                 ["score_gapp", "score_gap, judge_prob, votes, binary"], id="feedback-signal"),
    pytest.param("feedback", {"feedback": {"split": {"ratios": {"train": 0.9, "val": 0.3, "test": 0.1}}}}, {},
                 ["split ratios", "sum to 1"], id="feedback-split-ratios"),
    pytest.param("feedback", {"feedback": {"sources": {"ultrafeedback": {"gamma": -1}}}}, {},
                 ["gamma"], id="feedback-negative-gamma"),
    pytest.param("feedback", {"feedback": {"sources": {"hh_rlhf": {"feedback": "robot"}}}}, {},
                 ["feedback", "robot"], id="feedback-kind"),
    pytest.param("validation", {"validation": {"max_quarantine_fraction": {"overall": 1.5}}}, {},
                 ["validation.max_quarantine_fraction.overall", "1.5"], id="validation-fraction"),
    pytest.param("reward", {"reward": {"defaults": {"training": {"lr_schedule": "triangle"}}}},
                 {"namespaces": ["reward_bt"]}, ["training.lr_schedule", "constant", "cosine"], id="reward-lr-schedule"),
    pytest.param("reward", {"reward": {"defaults": {"training": {"max_steps": 0}}}},
                 {"namespaces": ["reward_bt"]}, ["training.max_steps"], id="reward-max-steps"),
    pytest.param("reward", {"reward": {"gpm": {"head": {"head": "gpx"}}}},
                 {"namespaces": ["reward_gpm"]}, ["head='gpx'", "scalar", "gpm"], id="reward-head"),
    pytest.param("reward", {"reward": {"bt": {"objective_name": "btx"}}},  # `objective` is the loss sub-block now
                 {"namespaces": ["reward_bt"]}, ["reward.objective_name", "did you mean reward.objective?"], id="reward-objective"),
    pytest.param("policy", {"policy": {"sft": {"training": {"mixed_precision": "fp17"}}}},
                 {"namespaces": ["policy_sft"]}, ["training.mixed_precision", "bf16"], id="policy-mixed-precision"),
    pytest.param("policy", {"policy": {"defaults": {"data": {"max_lenght": 10}}}},
                 {"namespaces": ["policy_sft"]}, ["max_lenght", "max_length"], id="policy-unknown-key"),
    pytest.param("policy", {"policy": {"defaults": {"data": {"batch_size": 0}}}},
                 {"namespaces": ["policy_sft"]}, ["batch_size"], id="policy-batch-size"),
    pytest.param("evaluation", {"evaluation": {"splits": ["tset"]}}, {"node_names": ["select_test_pairs"]},
                 ["evaluation.splits", "tset"], id="evaluation-splits"),
    # used to pass the check and fail in the evaluation node, after every model was trained
    pytest.param("evaluation", {"evaluation": {"n_bins": 5}}, {"node_names": ["select_test_pairs"]},
                 ["evaluation.n_bins=5", "10-15"], id="evaluation-n-bins"),
    # MMPO is defined by soft targets: an explicit contradiction fails (defaults may not switch it off either)
    pytest.param("reward", {"reward": {"mmpo": {"objective": {"soft_targets": False}}}}, {"namespaces": ["reward_mmpo"]},
                 ["reward.mmpo.objective.soft_targets=False", "contradicts", "reward.bt"], id="reward-mmpo-contradiction"),
    # a judge that looks like a reward model but is none (the old check only asked for the "reward_" prefix)
    pytest.param("evaluation", {"evaluation": {"generation": {"judge": "reward_btt"}}}, {"node_names": ["select_test_pairs"]},
                 ["evaluation.generation.judge='reward_btt'", "is not a registered reward model", "reward_bt"],
                 id="evaluation-judge"),
    # a missing accelerate config used to pass the check and fail in the training node, after two nodes ran
    pytest.param("reward", {"reward": {"defaults": {"num_processes": 2, "accelerate_config": "conf/accelerate/fsdp2.yaml"}}},
                 {"namespaces": ["reward_bt"]},
                 ["reward.defaults.accelerate_config='conf/accelerate/fsdp2.yaml' does not exist", "conf/accelerate/fsdp.yaml"],
                 id="reward-accelerate-config"),
]


@pytest.fixture(scope="module")
def scratch_project(trained_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("bad_params") / "project"
    shutil.copytree(trained_project, copy, ignore=shutil.ignore_patterns("build", "notebooks"))
    return copy


@pytest.mark.parametrize(("pipeline_name", "params", "run_kwargs", "expected"), CASES)
def test_bad_parameter_is_named_in_the_error(scratch_project: Path, pipeline_name, params, run_kwargs, expected,
                                             monkeypatch: pytest.MonkeyPatch):
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    monkeypatch.chdir(scratch_project)
    bootstrap_project(scratch_project)
    models_before = sorted(p for p in (scratch_project / "data" / "06_models").rglob("*.safetensors"))
    with pytest.raises(Exception) as raised:
        with KedroSession.create(project_path=scratch_project, env="ci", runtime_params=params) as session:
            try:
                session.run(pipeline_names=[pipeline_name], **run_kwargs)
            finally:
                pipelines.set_requested(None)  # the run left Kedro's lazy registry filtered to one pipeline
    message = str(raised.value)
    for text in expected:
        assert text in message, f"the error does not name {text!r}: {type(raised.value).__name__}: {message[:500]}"
    # Failing on configuration means no checkpoint was written.
    assert sorted((scratch_project / "data" / "06_models").rglob("*.safetensors")) == models_before
