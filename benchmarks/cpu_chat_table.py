"""The table of a `kedro run --env cpu_chat` run, from its own outputs (no model is run here).

For BT, MMPO, GPM and every policy: held-out-source accuracy with its 95% interval next to
pick-the-longer on the same pairs, the paired test against pick-the-longer, in-distribution
accuracy, ECE (reward models), win rate against SFT with its interval and the judge (policies),
training time and tokens/s. Reads the newest versions under data/08_reporting/<env folder>/.

    python benchmarks/cpu_chat_table.py [--env-folder cpu_chat]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def newest(pattern: str) -> dict:
    found = sorted(ROOT.glob(pattern))
    if not found:
        raise FileNotFoundError(f"nothing matches {pattern}: run `kedro run --env cpu_chat` first")
    return json.loads(found[-1].read_text())


def fmt(value, low=None, high=None) -> str:
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-folder", default="cpu_chat")
    folder = parser.parse_args().env_folder.strip("/")
    metrics = newest(f"data/08_reporting/{folder}/evaluation_metrics.json/*/evaluation_metrics.json")
    rows = {(r["set"], r["model"]): r for r in metrics["comparison"]}
    tests = {(t["set"], t["a"], t["b"], t["metric"]): t for t in metrics["paired_tests"]}
    models = [name for name in metrics["models"] if name.startswith(("reward_", "policy_"))]
    print("| model | held-out acc [95%] | pick-the-longer (the set's pairs) | vs longer: diff, p | in-dist acc [95%] "
          "| ECE held-out / in-dist | win rate vs SFT [95%] (judge) | train s | tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in models:
        held, test, longer = rows.get(("heldout", name), {}), rows.get(("pairs", name), {}), rows.get(("heldout", "baseline_longer"), {})
        paired = tests.get(("heldout", name, "baseline_longer", "accuracy")) or {}
        vs = (f"{paired['difference']:+.3f}, p={paired.get('p_holm', paired['p_value']):.3f}"
              + (" significant" if paired.get("significant_holm", paired.get("significant")) else "")) if paired else "-"
        ece = (f"{fmt(held.get('ece_p_chosen'))} / {fmt(test.get('ece_p_chosen'))}" if name.startswith("reward_") else "-")
        generation = metrics["models"][name].get("generation") or {}
        win = (f"{fmt(generation.get('win_rate'), generation.get('win_rate_low'), generation.get('win_rate_high'))} "
               f"({generation.get('judge', '').split(' (')[0]})") if generation else "-"
        trained = newest(f"data/08_reporting/{folder}/{name}/metrics.json/*/metrics.json")
        seconds = trained.get("train_seconds")
        print(f"| {name} | {fmt(held.get('accuracy'), held.get('accuracy_low'), held.get('accuracy_high'))} "
              f"| {fmt(longer.get('accuracy'), longer.get('accuracy_low'), longer.get('accuracy_high'))} | {vs} "
              f"| {fmt(test.get('accuracy'), test.get('accuracy_low'), test.get('accuracy_high'))} | {ece} | {win} "
              f"| {'-' if seconds is None else f'{seconds:.0f}'} | {trained.get('tokens_per_second') or 0:.0f} |")
    print(f"\nheld-out pairs: {rows.get(('heldout', 'baseline_longer'), {}).get('pairs')}, "
          f"in-distribution pairs: {rows.get(('pairs', 'baseline_longer'), {}).get('pairs')}")


if __name__ == "__main__":
    main()
