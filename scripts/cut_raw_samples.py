"""Cut the small real samples in data/01_raw/ from the full raw files, reproducibly.

    python scripts/cut_raw_samples.py --src data/raw_full --dst data/01_raw

Every sample keeps its source's ORIGINAL format and file names: JSON-lines files keep their
selected lines byte for byte, JSON-array files are re-written as an array of the selected
records (same keys and values, indent 2), gzip stays gzip. Which prompts are kept is decided by
a stable hash of the prompt/question id (not by file order), so the sample spans the dataset's
categories and is the same on every machine. Upstream LICENSE files are copied beside the data.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
from pathlib import Path


def _rank(key: object) -> str:
    return hashlib.blake2b(str(key).encode(), digest_size=8).hexdigest()


def _pick(keys: list, n: int) -> set:
    return set(sorted(set(keys), key=_rank)[:n])


def _write_json_array(records: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _filter_lines(src: Path, dst: Path, keep) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    kept = [line for line in src.read_bytes().splitlines(keepends=True) if line.strip() and keep(json.loads(line))]
    dst.write_bytes(b"".join(kept))
    return len(kept)


def _license(src: Path, dst: Path) -> None:
    if (src / "LICENSE").exists():
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "LICENSE", dst / "LICENSE")


def cut(src: Path, dst: Path) -> None:
    # UltraFeedback (binarized sample): the first 300 train and 60 eval lines.
    uf = dst / "ultrafeedback_sample"
    uf.mkdir(parents=True, exist_ok=True)
    for name, n in [("train_clean.jsonl", 300), ("eval_clean.jsonl", 60)]:
        lines = (src / "ultrafeedback_sample" / name).read_bytes().splitlines(keepends=True)[:n]
        (uf / name).write_bytes(b"".join(lines))

    # Tulu-2 best-of-n: 4 of the 11 sample files, 40 prompts (by id).
    ids = _pick([r["id"] for r in json.loads((src / "tulu2_bon/sample_0.json").read_text())], 40)
    for k in range(4):
        records = json.loads((src / f"tulu2_bon/sample_{k}.json").read_text())
        _write_json_array([r for r in records if r["id"] in ids], dst / f"tulu2_bon/sample_{k}.json")
    _license(src / "tulu2_bon", dst / "tulu2_bon")

    # AlpacaEval: 4 model files, 40 instructions.
    models = ["alpaca-7b", "claude-2", "gpt-3.5-turbo-1106", "vicuna-7b"]
    first = json.loads((src / f"alpaca_eval/{models[0]}.json").read_text())
    instructions = _pick([r["instruction"] for r in first], 40)
    for m in models:
        records = json.loads((src / f"alpaca_eval/{m}.json").read_text())
        _write_json_array([r for r in records if r["instruction"] in instructions], dst / f"alpaca_eval/{m}.json")
    _license(src / "alpaca_eval", dst / "alpaca_eval")

    # Arena-bench v1: 30 questions; answers and GPT-4 judgments of 5 models; the reference answers.
    arena_src, arena_dst = src / "arena_bench_v1", dst / "arena_bench_v1"
    qids = _pick([json.loads(l)["question_id"] for l in (arena_src / "question.jsonl").open()], 30)
    in_sample = lambda r: r["question_id"] in qids  # noqa: E731
    _filter_lines(arena_src / "question.jsonl", arena_dst / "question.jsonl", in_sample)
    _filter_lines(arena_src / "reference_answer/gpt-4.jsonl", arena_dst / "reference_answer/gpt-4.jsonl", in_sample)
    for m in ["claude-1", "gpt-3.5-turbo", "gpt-4-0314", "Llama-2-70b-chat", "vicuna-33b-v1.3"]:
        _filter_lines(arena_src / f"model_answer/{m}.jsonl", arena_dst / f"model_answer/{m}.jsonl", in_sample)
        _filter_lines(arena_src / f"model_judgment/{m}.jsonl", arena_dst / f"model_judgment/{m}.jsonl", in_sample)
    _license(arena_src, arena_dst)

    # Vicuna eval: 30 of the 80 questions, every answer and review file restricted to them.
    vic_src, vic_dst = src / "vicuna_eval", dst / "vicuna_eval"
    vq = _pick([json.loads(l)["question_id"] for l in (vic_src / "question.jsonl").open()], 30)
    for f in sorted(vic_src.rglob("*.jsonl")):
        rel = f.relative_to(vic_src)
        if rel.name in ("model.jsonl", "prompt.jsonl", "reviewer.jsonl"):
            (vic_dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, vic_dst / rel)
        else:
            _filter_lines(f, vic_dst / rel, lambda r: r["question_id"] in vq)
    _license(vic_src, vic_dst)

    # Prometheus: 25 instructions (idx) of each benchmark file, all their rated responses.
    for name in ["mt_bench_eval.json", "vicuna_eval.json"]:
        records = json.loads((src / "prometheus_ratings" / name).read_text())
        idx = _pick([r["idx"] for r in records], 25)
        _write_json_array([r for r in records if r["idx"] in idx], dst / "prometheus_ratings" / name)
    _license(src / "prometheus_ratings", dst / "prometheus_ratings")

    # hh-rlhf harmless-base test: the first 300 lines, still gzipped (mtime 0: same bytes every run).
    lines = gzip.open(src / "hh_rlhf/harmless_base_test.jsonl.gz").read().splitlines(keepends=True)[:300]
    (dst / "hh_rlhf").mkdir(parents=True, exist_ok=True)
    with open(dst / "hh_rlhf/harmless_base_test.jsonl.gz", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(b"".join(lines))
    _license(src / "hh_rlhf", dst / "hh_rlhf")

    # PandaLM: idx 0..299 of the human test set and of both AI judges' predictions.
    for name in ["testset-v1.json", "gpt-3.5-turbo-testset-v1.json", "pandalm-7b-testset-v1.json"]:
        records = json.loads((src / "pandalm" / name).read_text())
        _write_json_array([r for r in records if r["idx"] < 300], dst / "pandalm" / name)
    _license(src / "pandalm", dst / "pandalm")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="the full raw files (scripts/download_raw_data.py --dest data/raw_full)")
    parser.add_argument("--dst", type=Path, default=Path("data/01_raw"))
    args = parser.parse_args()
    cut(args.src, args.dst)
