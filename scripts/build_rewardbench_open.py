"""Build data/01_raw/rewardbench_open/: a small open RewardBench-format file from HUMAN labels.

Rows are (prompt, chosen, rejected, subset, id), one per prompt, as in RewardBench. Subsets:
- `hh_harmless`   (-> Safety): hh-rlhf harmless-base test pairs, crowdworker binary labels.
  Prompt = the dialogue up to and including the last "\\n\\nAssistant:" the two share;
  chosen / rejected = the final assistant turns.
- `pandalm_easy`  (-> Chat): PandaLM test pairs where all 3 human annotators agree on a winner
  and the GPT-3.5 judge agreed with them.
- `pandalm_hard`  (-> Chat Hard): unanimous human pairs that the GPT-3.5 judge got WRONG (a
  pair an AI judge finds hard, as RewardBench's Chat Hard is hard for reward models).
  Prompt = instruction, plus "\\n\\n" + input when there is one.
There is no human-labelled reasoning source among the shipped data, so Reasoning stays empty.

Usage (from the repository root; deterministic under --seed):
    python scripts/build_rewardbench_open.py --raw data/raw_full --per-subset 120
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
from pathlib import Path

HH_SEPARATOR = "\n\nAssistant:"


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(prompt, chosen_turn, rejected_turn), or None when the two do not share a prompt."""
    cut = chosen.rfind(HH_SEPARATOR)
    if cut < 0:
        return None
    prompt = chosen[: cut + len(HH_SEPARATOR)]
    if not rejected.startswith(prompt):
        return None
    chosen_turn, rejected_turn = chosen[len(prompt):].strip(), rejected[len(prompt):].strip()
    if not chosen_turn or not rejected_turn or chosen_turn == rejected_turn:
        return None
    return prompt.strip(), chosen_turn, rejected_turn


def hh_rows(raw: Path) -> list[dict]:
    rows = []
    with gzip.open(raw / "hh_rlhf" / "harmless_base_test.jsonl.gz", "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            record = json.loads(line)
            parts = split_hh_dialogue(record["chosen"], record["rejected"])
            if parts:
                rows.append({"prompt": parts[0], "chosen": parts[1], "rejected": parts[2],
                             "subset": "hh_harmless", "id": f"hh_harmless-{i}"})
    return rows


def pandalm_rows(raw: Path) -> list[dict]:
    folder = raw / "pandalm"
    pairs = json.loads((folder / "testset-v1.json").read_text(encoding="utf-8"))
    judge = {r["idx"]: str(r["gpt_result"]).strip() for r in
             json.loads((folder / "gpt-3.5-turbo-testset-v1.json").read_text(encoding="utf-8"))}
    rows = []
    for record in pairs:
        votes = {record["annotator1"], record["annotator2"], record["annotator3"]}
        if len(votes) != 1 or votes == {0}:
            continue  # split vote or unanimous tie: no clear human winner
        winner = votes.pop()
        texts = (record.get("instruction"), record.get("response1"), record.get("response2"))
        if not all(isinstance(t, str) for t in texts) or not isinstance(record.get("input", ""), str):
            continue  # a few records hold a JSON boolean where a text should be: not a usable pair
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        chosen, rejected = (record["response1"], record["response2"]) if winner == 1 else (
            record["response2"], record["response1"])
        if not chosen.strip() or not rejected.strip() or chosen == rejected:
            continue
        subset = "pandalm_easy" if judge.get(record["idx"]) == str(winner) else "pandalm_hard"
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "subset": subset,
                     "id": f"{subset}-{record['idx']}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True, help="folder of the full raw sources (scripts/download_raw_data.py --dest data/raw_full)")
    parser.add_argument("--out", type=Path, default=Path("data/01_raw/rewardbench_open"))
    parser.add_argument("--per-subset", type=int, default=120, help="rows kept per subset (at most)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    by_subset: dict[str, list[dict]] = {}
    for row in hh_rows(args.raw) + pandalm_rows(args.raw):
        by_subset.setdefault(row["subset"], []).append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    kept = []
    for subset in sorted(by_subset):
        rows = by_subset[subset]
        kept += rng.sample(rows, min(args.per_subset, len(rows)))
        print(f"{subset}: {min(args.per_subset, len(rows))} of {len(rows)} rows")
    with (args.out / "rewardbench_open.jsonl").open("w", encoding="utf-8") as handle:
        for row in kept:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    shutil.copyfile(args.raw / "hh_rlhf" / "LICENSE", args.out / "LICENSE.hh_rlhf")
    shutil.copyfile(args.raw / "pandalm" / "LICENSE", args.out / "LICENSE.pandalm")
    print(f"wrote {len(kept)} rows to {args.out / 'rewardbench_open.jsonl'}")


if __name__ == "__main__":
    main()
