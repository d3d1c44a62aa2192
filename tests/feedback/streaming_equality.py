"""Both feedback engines end to end through the pipeline's own nodes (feedback and validation),
for the equality test on the shipped samples and benchmarks/streaming_equality.py on full files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog

from prefalign.datasets.parquet_parts import ParquetPartsDataset
from prefalign.pipelines.feedback import nodes as feedback
from prefalign.pipelines.feedback.pipeline import GENERATED_SOURCES, RAW_SOURCES
from prefalign.pipelines.validation import nodes as validation
from prefalign.settings import CONFIG_LOADER_ARGS

ROOT = Path(__file__).resolve().parents[2]


def load_config(raw_dir: str, env: str) -> tuple[dict[str, Any], DataCatalog]:
    """The project's parameters in ``env`` and a catalog of the raw datasets under ``raw_dir``."""
    loader = OmegaConfigLoader(str(ROOT / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": env},
                               runtime_params={"raw_data_dir": raw_dir})
    raw = {name: body for name, body in loader["catalog"].items() if name.startswith("raw_")}
    return loader["parameters"], DataCatalog.from_config(raw)


def run_engine(engine: str, params: dict[str, Any], catalog: DataCatalog, work: Path, chunk_records: int = 20_000,
               batch_rows: int = 100_000) -> dict[str, Any]:
    """Every output of the feedback and validation pipelines with ``feedback.engine = engine``,
    collected (pairs, rejected, resolution, summary, results, quarantined, validated, report)."""
    t0 = time.perf_counter()
    fb = {**params["feedback"], "engine": engine,
          "streaming": {"chunk_records": chunk_records, "parts_dir": str(work / engine / "parts")}}
    outs = []
    for source, roles in RAW_SOURCES.items():
        outs.append(feedback.ingest_raw_source(fb["sources"][source], fb["max_rejected_fraction_per_file"], fb,
                                               source=source, **{role: catalog.load(name) for role, name in roles.items()}))
    for source, generate in GENERATED_SOURCES.items():
        outs.append(feedback.generate_source(fb["sources"][source], source=source, generate=generate))
    outs.append(feedback.ingest_tables(fb["sources"], fb["max_rejected_fraction_per_file"], catalog.load("raw_tables")))
    pairs, resolution = feedback.build_pairs(fb, *[o[0] for o in outs])
    if isinstance(pairs, pl.LazyFrame):  # what the streaming env's catalog does: sink, then scan
        dataset = ParquetPartsDataset(filepath=str(work / engine / "pairs"))
        dataset.save(pairs)
        pairs = dataset.load()
    rejected = feedback.collect_rejected(*[o[1] for o in outs])
    summary = feedback.summarise_feedback(pairs, resolution, *[o[2] for o in outs])
    val = {**params["validation"], "batch_rows": batch_rows}
    checked, results = validation.check_pairs(pairs, val, fb["sources"])
    quarantined, passed = validation.quarantine_pairs(checked)
    report, _ = validation.write_report(checked, results)
    validated = validation.gate_validated_pairs(passed, results, report, quarantined)
    collect = lambda f: f.collect(engine="streaming") if isinstance(f, pl.LazyFrame) else f  # noqa: E731
    return {"pairs": collect(pairs), "rejected": rejected, "resolution": resolution, "summary": summary,
            "results": results, "quarantined": quarantined, "validated": collect(validated), "report": report,
            "seconds": time.perf_counter() - t0}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two engines' outputs (tables compared row for row after sorting by pair_id)."""
    out = []
    for key in ("pairs", "quarantined", "validated"):
        if not a[key].sort("pair_id", nulls_last=True).equals(b[key].sort("pair_id", nulls_last=True)):
            out.append(f"{key}: {a[key].height} vs {b[key].height} rows, or different values")
    if not a["rejected"].equals(b["rejected"]):
        out.append(f"rejected: {a['rejected'].height} vs {b['rejected'].height} rows, or different values")
    for key in ("resolution", "summary", "report"):
        if a[key] != b[key]:
            out.append(f"{key} differs")
    for key in ("passed", "failures", "rows", "quarantined_fraction", "sources"):
        if a["results"][key] != b["results"][key]:
            out.append(f"results.{key} differs")
    ea = [(e["name"], e["success"], e["unexpected_count"]) for e in a["results"]["expectations"]]
    eb = [(e["name"], e["success"], e["unexpected_count"]) for e in b["results"]["expectations"]]
    if ea != eb:
        out.append("results.expectations differ")
    return out
