"""`kedro viz build` on the trained tiny project: the exported lineage has every pipeline, the
namespaced training pipelines as collapsible groups, every catalog dataset with its layer, layers in
flow order, and previews for the pairs, the validation report and the metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .project_copy import subprocess_env

PIPELINES = {"__default__", "feedback", "validation", "reward", "policy", "evaluation"}
NAMESPACES = {"reward_bt", "reward_mmpo", "reward_gpm",
              "policy_sft", "policy_dpo", "policy_mmpo", "policy_ipo", "policy_gpo", "policy_gpo_bt"}
# The flow a reader should see, top to bottom (kedro-viz drops every band when the layers form a cycle).
LAYER_ORDER = ["raw", "intermediate", "primary", "model_input", "models", "model_output", "reporting"]
KEY_DATASETS = {
    "raw_ultrafeedback": "raw",
    "pairs": "primary",
    "validated_pairs": "model_input",
    "rejected_feedback_records": "intermediate",
    "pair_rows_ultrafeedback": "intermediate",
    "quarantined_pairs": "primary",
    "validation_report": "primary",
    "validation_plot": "reporting",
    "reward_gpm.model": "models",
    "reward_bt.metrics": "reporting",
    "policy_sft.model": "models",
    "policy_dpo.reference_logprobs": "models",
    "policy_dpo.training_curve": "model_output",
    "evaluation_metrics": "reporting",
}
# dataset -> the kedro-viz preview type it must export once the data exists
PREVIEWS = {
    "pairs": "TablePreview",
    "validated_pairs": "TablePreview",
    "quarantined_pairs": "TablePreview",
    "validation_results": "JSONPreview",
    "validation_report": "HTMLPreview",
    "validation_plot": "ImagePreview",
    "feedback_summary": "JSONPreview",
    "reward_gpm.metrics": "JSONPreview",
}


@pytest.fixture(scope="module")
def viz_build(trained_project: Path) -> Path:
    """Runs the real CLI command headless, in the project, once for this module."""
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build", "--include-previews"],
        cwd=trained_project, env=subprocess_env(KEDRO_ENV="ci"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    api = trained_project / "build" / "api"
    assert (api / "main").is_file(), f"kedro viz build wrote no build/api/main: {result.stdout[-2000:]}"
    return api


def _main(api: Path) -> dict:
    return json.loads((api / "main").read_text())


def test_every_pipeline_and_training_namespace_is_in_the_lineage(viz_build: Path):
    main = _main(viz_build)
    assert PIPELINES <= {p["id"] for p in main["pipelines"]}
    groups = main["modular_pipelines"]
    assert NAMESPACES <= set(groups), f"missing groups: {NAMESPACES - set(groups)}"
    # A group collapses its own nodes: the GPM model lives inside reward_gpm.
    by_id = {n["id"]: n["name"] for n in main["nodes"]}
    children = {by_id.get(c["id"]) for c in groups["reward_gpm"]["children"]}
    assert "reward_gpm.train_reward_model" in children or any("train_reward_model" in str(c) for c in children)


def test_every_catalog_dataset_has_a_layer_and_the_layers_are_in_flow_order(viz_build: Path):
    main = _main(viz_build)
    data = {n["name"]: n for n in main["nodes"] if n["type"] == "data"}
    for name, layer in KEY_DATASETS.items():
        assert name in data, f"{name} is not in the exported lineage"
        assert data[name]["layer"] == layer, f"{name}: layer {data[name]['layer']!r}, expected {layer!r}"
    # Datasets declared in the catalog files (not the in-memory hand-overs) all carry a layer.
    undeclared = {n for n, d in data.items() if d["dataset_type"].endswith("MemoryDataset")}
    missing = sorted(n for n, d in data.items() if n not in undeclared and not n.startswith("params:") and not d["layer"]
                     and d["type"] == "data" and not n.startswith("parameters"))
    assert not missing, f"catalog datasets without a kedro-viz layer: {missing}"
    # An empty list here means kedro-viz found a cycle among the layers and shows no bands at all.
    layers = main["layers"]
    assert layers, "kedro-viz exported no layers: some dataset's layer contradicts the flow (a layer cycle)"
    assert [layer for layer in LAYER_ORDER if layer in layers] == [layer for layer in layers if layer in LAYER_ORDER]


def test_previews_for_the_pairs_the_validation_report_and_the_metrics(viz_build: Path):
    main = _main(viz_build)
    ids = {n["name"]: n["id"] for n in main["nodes"] if n["type"] == "data"}
    for name, preview_type in PREVIEWS.items():
        node = json.loads((viz_build / "nodes" / ids[name]).read_text())
        assert node.get("preview_type") == preview_type, f"{name}: preview_type {node.get('preview_type')!r}"
        assert node.get("preview"), f"{name}: empty preview"
    pairs = json.loads((viz_build / "nodes" / ids["pairs"]).read_text())["preview"]
    assert "p_chosen" in pairs["columns"] and len(pairs["data"]) >= 5
    report = json.loads((viz_build / "nodes" / ids["validation_report"]).read_text())["preview"]
    assert "Validation report" in report and "<table" in report
