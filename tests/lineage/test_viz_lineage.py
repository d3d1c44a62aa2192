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
    "reward_gpm.model": "JSONPreview",
    "raw_ultrafeedback": "TablePreview",
    "raw_arena_judgments": "TablePreview",
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


def _backward_edges(main: dict) -> list[tuple[str, str]]:
    """(upstream dataset, downstream dataset) pairs whose layers run against LAYER_ORDER: the cause of a layer cycle."""
    nodes = {n["id"]: n for n in main["nodes"]}
    children: dict[str, set[str]] = {}
    for edge in main["edges"]:
        children.setdefault(edge["source"], set()).add(edge["target"])
    rank = {layer: i for i, layer in enumerate(LAYER_ORDER)}
    backward = []
    for start, node in nodes.items():
        if node.get("layer") not in rank:
            continue
        stack, seen = list(children.get(start, ())), set()
        while stack:  # walk through unlayered nodes (tasks) to the next layered datasets
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            layer = nodes[current].get("layer")
            if layer in rank:
                if rank[layer] < rank[node["layer"]]:
                    backward.append((f"{node['name']} ({node['layer']})", f"{nodes[current]['name']} ({layer})"))
            else:
                stack.extend(children.get(current, ()))
    return sorted(backward)


def test_every_pipeline_and_training_namespace_is_in_the_lineage(viz_build: Path):
    main = _main(viz_build)
    assert PIPELINES <= {p["id"] for p in main["pipelines"]}
    groups = main["modular_pipelines"]
    assert NAMESPACES <= set(groups), f"missing groups: {NAMESPACES - set(groups)}"
    # A group collapses its own training nodes; its checkpoint is what comes out of it.
    nodes = {n["id"]: n for n in main["nodes"]}
    for group in NAMESPACES:
        inside = {nodes[c["id"]].get("full_name") or nodes[c["id"]]["name"] for c in groups[group]["children"]}
        assert any(name.startswith(f"{group}.") for name in inside), f"{group} collapses none of its nodes: {inside}"
        assert f"{group}.model" in {nodes[i]["name"] for i in groups[group]["outputs"]}, f"{group}.model is not an output of its group"


def test_every_dataset_has_a_layer_and_the_layers_are_in_flow_order(viz_build: Path):
    main = _main(viz_build)
    data = {n["name"]: n for n in main["nodes"] if n["type"] == "data"}
    for name, layer in KEY_DATASETS.items():
        assert name in data, f"{name} is not in the exported lineage"
        assert data[name]["layer"] == layer, f"{name}: layer {data[name]['layer']!r}, expected {layer!r}"
    # Every dataset, in-memory hand-overs included (conf/base/catalog_lineage.yml gives those their layer).
    missing = sorted(name for name, node in data.items() if not node["layer"])
    assert not missing, f"datasets without a kedro-viz layer (declare them in conf/base/catalog_lineage.yml): {missing}"
    # An empty list here means kedro-viz found a cycle among the layers and shows no bands at all.
    layers = main["layers"]
    assert layers and not _backward_edges(main), (
        f"layers run against the flow (kedro-viz then shows no bands): {_backward_edges(main)[:8]}")
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


def test_every_saved_dataset_has_a_json_safe_preview(viz_build: Path, trained_project: Path):
    """Read back from the built files (kedro-viz exits 0 even when a preview fails to serialise):
    every dataset that is not in-memory and has data on disk exports a non-empty preview."""
    main = _main(viz_build)
    checked, missing = [], []
    for entry in (n for n in main["nodes"] if n["type"] == "data"):
        node = json.loads((viz_build / "nodes" / entry["id"]).read_text())
        filepath = node.get("filepath")
        if "MemoryDataset" in str(node.get("type")) or not filepath or not (trained_project / filepath).exists():
            continue
        checked.append(entry["name"])
        if not node.get("preview") or not node.get("preview_type"):
            missing.append(entry["name"])
    assert len(checked) >= 25, checked
    assert not missing, f"saved datasets without a preview in the build: {missing}"
    checkpoint = json.loads(json.loads((viz_build / "nodes" / next(
        n["id"] for n in main["nodes"] if n["name"] == "reward_gpm.model")).read_text())["preview"])
    assert checkpoint["kind"] == "reward_model" and checkpoint["metadata"]["head"] == "gpm"
    assert any(name.endswith(".safetensors") for name in checkpoint["files"])


def test_the_run_left_row_counts_and_run_events_for_viz(viz_build: Path, trained_project: Path):
    stats = json.loads((trained_project / ".viz" / "stats.json").read_text())
    assert stats["pairs"]["rows"] > 0 and stats["pairs"]["columns"] >= 12, stats.get("pairs")
    assert stats["validated_pairs"]["rows"] > 0 and stats["validated_pairs"].get("file_size", 0) > 0
    assert (trained_project / ".viz" / "kedro_pipeline_events.json").is_file()
