"""Print the latest feedback_summary.json as a table: python scripts/print_feedback_summary.py [path]"""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "data/08_reporting/feedback_summary.json")
path = max(root.glob("*/feedback_summary.json")) if root.is_dir() else root
summary = json.loads(path.read_text())
print(f"{path}\n{'source':15} {'read':>6} {'rej':>5} {'used':>6} {'cand':>7} {'capped':>7} {'ties':>5} {'ident':>5} {'dup':>5} {'pairs':>6}  p_chosen mean [min q25 q50 q75 max] ties share")
for name, s in summary["sources"].items():
    p = s["p_chosen"]
    dist = f"{p['mean']:.3f} [{p['min']:.2f} {p['q25']:.2f} {p['q50']:.2f} {p['q75']:.2f} {p['max']:.2f}] {p['share_ties']:.2f}" if p["n"] else "-"
    print(f"{name:15} {s['records_read']:>6} {s['records_rejected']:>5} {s['records_used']:>6} {s['candidate_pairs']:>7} {s['capped_dropped']:>7} "
          f"{s['ties']:>5} {s['identical_dropped']:>5} {s['duplicates_dropped']:>5} {s['pairs']:>6}  {dist}")
print("total", summary["total"])
for name, s in summary["sources"].items():
    if s["rejected_by_reason"]:
        print(name, s["rejected_by_reason"])
