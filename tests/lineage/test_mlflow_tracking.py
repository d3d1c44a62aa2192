"""Experiment tracking: the trained ci run (kedro-mlflow installed) is read back from the local
MLflow store: parameters, training curves per step, final metrics, model catalog versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefalign.hooks import MlflowTrackingHooks, comparison_metrics, curve_rows, final_metrics, flat_metrics


def test_flat_metrics_keeps_finite_numbers_only():
    assert flat_metrics({"val": {"accuracy": 0.5, "n": 3, "ok": True, "nan": float("nan")}, "name": "x"}, "reward_bt") == \
        {"reward_bt.val.accuracy": 0.5, "reward_bt.val.n": 3.0}
    assert curve_rows([{"step": 1}]) == [{"step": 1}]


def test_only_what_a_person_compares_becomes_a_metric():
    """Final numbers of a training node (top level only) and the comparison table's values, without
    interval bounds; 8,150 metrics per ci run before (issue 23 item 13)."""
    import polars as pl

    assert final_metrics({"val_accuracy": 0.75, "steps": 8, "truncation": {"sequences": 40}, "objective": "bt"},
                         "reward_bt") == {"reward_bt.val_accuracy": 0.75, "reward_bt.steps": 8.0}
    table = pl.DataFrame({"set": ["pairs", "heldout"], "model": ["reward_bt", "reward_bt"], "kind": ["reward model"] * 2,
                          "accuracy": [0.6, 0.55], "accuracy_low": [0.5, 0.4], "accuracy_high": [0.7, 0.7],
                          "rb_Chat Hard": [0.5, None]})
    assert comparison_metrics(table) == {"evaluation.pairs.reward_bt.accuracy": 0.6, "evaluation.pairs.reward_bt.rb_Chat Hard": 0.5,
                                         "evaluation.heldout.reward_bt.accuracy": 0.55}


def test_without_mlflow_the_hook_does_nothing(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    hooks = MlflowTrackingHooks()
    assert hooks.enabled is False
    hooks.after_node_run(node=None, outputs={"reward_bt.metrics": {"val_accuracy": 0.5}})  # no error, no mlflow call


def test_the_run_is_read_back_from_the_local_store(trained_project: Path):
    pytest.importorskip("kedro_mlflow")
    from mlflow.tracking import MlflowClient

    store = trained_project / "mlruns" / "mlflow.db"
    assert store.is_file(), "conf/base/mlflow.yml points kedro-mlflow at mlruns/mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("prefalign")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    run = runs[0]
    assert run.info.status == "FINISHED"
    import mlflow

    assert mlflow.active_run() is None, "the run (in this process) was left open after the pipeline"
    # parameters of every training node (kedro-mlflow, flattened)
    assert run.data.params["reward.defaults.training.max_steps"] == "8"
    assert run.data.params["reward.gpm.head.gpm_k"] == "2"
    for name in ("reward_bt", "reward_mmpo", "reward_gpm", "reward_gpm_synthetic"):
        assert 0.0 <= run.data.metrics[f"{name}.val_accuracy"] <= 1.0  # final metrics
        curve = client.get_metric_history(run.info.run_id, f"{name}.curve.train_loss")
        assert sorted(m.step for m in curve) == list(range(1, 9))  # one point per step
        tag = run.data.tags[f"catalog.{name}.model"]  # the checkpoint, by catalog version
        assert f"06_models/{name}/model/" in tag and Path(tag).is_dir()


def test_evaluation_and_policy_outputs_are_logged(tmp_path: Path):
    """The hook on a policy curve (a polars frame), the evaluation metrics and the comparison
    table, in a run of a throwaway local store."""
    pytest.importorskip("kedro_mlflow")
    import mlflow
    import polars as pl
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    hooks = MlflowTrackingHooks()
    with mlflow.start_run(experiment_id=experiment) as run:
        hooks.after_node_run(node=None, outputs={
            "policy_dpo.training_curve": pl.DataFrame({"step": [1, 2], "train_loss": [0.7, 0.6], "val_loss": [None, 0.65]}),
            "policy_dpo.metrics": {"val_implicit_accuracy": 0.7, "policy": {"val": {"implicit_accuracy": 0.7}}},
            "evaluation_metrics": {"reward_bt": {"accuracy": 0.6, "rewardbench": {"Chat Hard": 0.5}}},
            "evaluation_reward_bt_metrics": {"pairs": {"accuracy": 0.6}},
            "evaluation_comparison": pl.DataFrame({"set": ["pairs"], "model": ["reward_bt"], "accuracy": [0.6],
                                                   "accuracy_low": [0.5]}),
        })
    client = MlflowClient(tracking_uri=uri)
    data = client.get_run(run.info.run_id).data
    assert sorted(data.metrics) == ["evaluation.pairs.reward_bt.accuracy", "policy_dpo.curve.train_loss",
                                    "policy_dpo.curve.val_loss", "policy_dpo.val_implicit_accuracy"]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "policy_dpo.curve.train_loss")] == [(1, 0.7), (2, 0.6)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "policy_dpo.curve.val_loss")] == [2]
    artifact = Path(client.download_artifacts(run.info.run_id, "evaluation_comparison.json", str(tmp_path)))
    assert artifact.read_text().count("reward_bt") == 1
    table = Path(client.download_artifacts(run.info.run_id, "evaluation_comparison.csv", str(tmp_path)))
    assert table.read_text().splitlines() == ["set,model,accuracy,accuracy_low", "pairs,reward_bt,0.6,0.5"]
    mlflow.set_tracking_uri("")
