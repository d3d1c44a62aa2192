"""Validation of 1M pairs: time and peak memory, the shipped path against the naive one.

    python benchmarks/validation_1m.py            # 1,000,000 pairs (needs ~4 GB free RAM)
    python benchmarks/validation_1m.py --rows 100000

Each variant runs in its own subprocess (peak RSS is per process), on the same parquet file:
- naive:   the whole pairs frame (texts included) goes to pandas, and GX's own text expectations
           (ExpectColumnValueLengthsToBeBetween, ExpectColumnValuesToNotMatchRegex) check lengths,
           blanks and control characters on the Python strings.
- shipped: prefalign.core.validation.validate_pairs: derived columns (lengths, flags) computed in
           polars, only the named columns cross to pandas, one GX run, the row mask built once.
Prints a table: seconds (with the shipped path's stage breakdown), peak RSS above the loaded
frame, and the naive/shipped ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

SOURCES = ["ultrafeedback", "tulu2_bon", "alpaca_eval", "arena_bench", "vicuna_eval", "prometheus",
           "hh_rlhf", "pandalm_human", "pandalm_gpt35", "pandalm_7b"]


def make_pairs(rows: int, path: Path) -> None:
    """A pairs table shaped like the real one: ~4 pairs per prompt, texts of 50-1200 chars, 0.1% bad rows."""
    import numpy as np
    import polars as pl

    from prefalign.core.schema import PAIRS_SCHEMA, with_prompt_messages

    rng = np.random.default_rng(0)
    filler = ("The quick brown fox jumps over the lazy dog; " * 40)[:1600]
    prompt_index = np.arange(rows) // 4
    source = np.array(SOURCES)[prompt_index % len(SOURCES)]
    binary = source == "hh_rlhf"
    frame = pl.DataFrame(
        {
            "i": np.arange(rows),
            "prompt_index": prompt_index,
            "prompt_len": rng.integers(20, 300, rows),
            "chosen_len": rng.integers(50, 1200, rows),
            "rejected_len": rng.integers(50, 1200, rows),
            "margin": np.where(binary, np.nan, rng.uniform(0, 9, rows)),
            "p_chosen": np.where(binary, 1.0, rng.uniform(0.5, 1.0, rows)),
            "source": source,
            "split": np.array(["train"] * 8 + ["val", "test"])[prompt_index % 10],
        }
    )
    bad = rng.random(rows) < 0.001
    frame = frame.with_columns(
        pl.format("pair{}", "i").alias("pair_id"),
        pl.format("prompt{}", "prompt_index").alias("prompt_id"),
        pl.format("Question {}: {}", "prompt_index", pl.lit(filler).str.slice(0, "prompt_len")).alias("prompt"),
        pl.format("Answer A{} {}", "i", pl.lit(filler).str.slice(0, "chosen_len")).alias("chosen"),
        pl.format("Answer B{} {}", "i", pl.lit(filler).str.slice(0, "rejected_len")).alias("rejected"),
        pl.when(pl.col("margin").is_nan()).then(None).otherwise("margin").alias("margin"),
        pl.when(pl.Series(bad)).then(1.7).otherwise("p_chosen").alias("p_chosen"),
        pl.when(pl.col("source") == "hh_rlhf").then(pl.lit("human")).otherwise(pl.lit("ai")).alias("feedback"),
        pl.when(pl.col("source") == "hh_rlhf").then(pl.lit("binary")).otherwise(pl.lit("score_gap")).alias("signal"),
        pl.lit(None, dtype=pl.Float64).alias("true_p"),
    )
    frame = with_prompt_messages(frame)  # one user turn, as the single-turn sources give
    frame.select([pl.col(c).cast(t) for c, t in PAIRS_SCHEMA.items()]).write_parquet(path)


def config_params() -> dict:
    import yaml

    params = yaml.safe_load((ROOT / "conf/base/parameters_validation.yml").read_text())["validation"]
    params["max_quarantine_fraction"] = {"overall": 0.05, "per_source": 0.2}
    sources = list(yaml.safe_load((ROOT / "conf/base/parameters_feedback.yml").read_text())["feedback"]["sources"])
    for body in params["expectations"].values():  # what the validation node does with `feedback_sources`
        if body and (body.get("kwargs") or {}).get("value_set") == "feedback_sources":
            body["kwargs"]["value_set"] = sources
    return params


class PeakMemory:
    """Peak RSS above the RSS at start, sampled every 5 ms in a thread (polars allocates outside
    tracemalloc's view, and ru_maxrss would include the parquet load's own peak)."""

    def __enter__(self) -> "PeakMemory":
        import psutil

        self._process = psutil.Process()
        self.start_mb = self._process.memory_info().rss / 2**20
        self.peak_mb = self.start_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)

    @property
    def above_start_mb(self) -> float:
        return self.peak_mb - self.start_mb


def run_shipped(path: Path) -> dict:
    import polars as pl

    from prefalign.core.validation import parse_validation_config, validate_pairs
    from prefalign.core.validation import validate as validate_module
    from prefalign.core.validation.checks import split_checked

    pairs = pl.read_parquet(path)
    stages: dict[str, float] = {}

    # Time the stages by wrapping the module's own functions (same code path as the pipeline).
    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    validate_module.check_frame = timed("derive (polars)", validate_module.check_frame)
    validate_module.run_expectations = timed("GX (incl. to_pandas)", validate_module.run_expectations)
    validate_module.failed_expectations_per_row = timed("row mask", validate_module.failed_expectations_per_row)
    with PeakMemory() as memory:
        start = time.perf_counter()
        checked, results = validate_pairs(pairs, parse_validation_config(config_params()))
        validated, quarantined = split_checked(checked)
        total = time.perf_counter() - start
    assert validated.height + quarantined.height == pairs.height
    return {"seconds": total, "peak_mb": memory.above_start_mb, "loaded_mb": memory.start_mb, "stages": stages,
            "quarantined": quarantined.height, "rows": pairs.height}


def run_naive(path: Path) -> dict:
    import polars as pl

    from prefalign.core.validation.checks import check_frame, failed_expectations_per_row
    from prefalign.core.validation.config import ExpectationSpec, parse_validation_config
    from prefalign.core.validation.gx_suite import run_expectations
    from prefalign.core.validation.validate import full_suite

    pairs = pl.read_parquet(path)
    memory = PeakMemory().__enter__()
    start = time.perf_counter()
    config = parse_validation_config(config_params())
    text_specs = [ExpectationSpec("pair_id_present", "ExpectColumnValuesToNotBeNull", {"column": "pair_id"})]
    for text in ("prompt", "chosen", "rejected"):
        text_specs += [
            ExpectationSpec(f"{text}_present", "ExpectColumnValuesToNotBeNull", {"column": text}),
            ExpectationSpec(f"{text}_length", "ExpectColumnValueLengthsToBeBetween", {"column": text, "min_value": 1, "max_value": 32000}),
            ExpectationSpec(f"{text}_not_blank", "ExpectColumnValuesToNotMatchRegex", {"column": text, "regex": r"^\s*$"}),
            ExpectationSpec(f"{text}_printable", "ExpectColumnValuesToNotMatchRegex", {"column": text, "regex": config.control_characters}),
        ]
    replaced = {s.name for s in text_specs}
    suite = [s for s in full_suite(config) if s.name not in replaced] + text_specs
    # What GX cannot express on one frame (pair equality, repeats, leaks) stays derived in polars.
    derived = check_frame(pairs, ["chosen_equals_rejected", "pair_id_is_repeat", "prompt_split_leak"], config.control_characters)
    frame = pl.concat([pairs, derived], how="horizontal")  # every column, texts included, to pandas
    outcomes = run_expectations(frame, suite, config.example_count)
    mask = failed_expectations_per_row(pairs.height, {o.name: o.unexpected_rows for o in outcomes if o.row_level})
    quarantined = int((mask.list.len() > 0).sum())
    seconds = time.perf_counter() - start
    memory.__exit__(None, None, None)
    return {"seconds": seconds, "peak_mb": memory.above_start_mb, "loaded_mb": memory.start_mb, "stages": {},
            "quarantined": quarantined, "rows": pairs.height}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--variant", choices=["naive", "shipped"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one measurement, as JSON on the last line
        result = (run_shipped if args.variant == "shipped" else run_naive)(args.data)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.parquet"
        start = time.perf_counter()
        make_pairs(args.rows, data)
        print(f"generated {args.rows:,} pairs in {time.perf_counter() - start:.1f}s ({data.stat().st_size / 1e6:.0f} MB parquet)")
        results = {}
        for variant in ("naive", "shipped"):
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--data", str(data)],
                capture_output=True, text=True, check=False,
            )
            if out.returncode != 0:
                sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])

    naive, shipped = results["naive"], results["shipped"]
    assert naive["quarantined"] == shipped["quarantined"], "the two paths must quarantine the same rows"
    print(f"\nvalidation of {args.rows:,} pairs ({shipped['quarantined']:,} quarantined by both paths)")
    print(f"{'variant':<10}{'seconds':>10}{'peak MB':>10}   (peak RSS above the loaded frame, {shipped['loaded_mb']:.0f} MB)")
    for name, r in results.items():
        print(f"{name:<10}{r['seconds']:>10.2f}{r['peak_mb']:>10.0f}")
    print(f"{'ratio':<10}{naive['seconds'] / shipped['seconds']:>9.1f}x{naive['peak_mb'] / max(shipped['peak_mb'], 1):>9.1f}x   (naive / shipped)")
    print("\nshipped stages:", ", ".join(f"{k} {v:.2f}s" for k, v in shipped["stages"].items()))


if __name__ == "__main__":
    main()
