"""Print the latest feedback_summary.json as a table: python scripts/print_feedback_summary.py [path]"""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "data/08_reporting/feedback_summary.json")
path = max(root.glob("*/feedback_summary.json")) if root.is_dir() else root
summary = json.loads(path.read_text())


def _conflicts(s: dict) -> int:
    """Contradicting comparisons this source took part in (within the source + across sources)."""
    c = s.get("conflicts", {})
    return sum(c.get(scope, {}).get("comparisons", 0) for scope in ("within_source", "across_sources"))


# ties = p_chosen == 0.5 rows among the pair rows; tie_p = ties in the final pairs (dropped by every
# hard-label objective: BT, margin, DPO, IPO, cDPO; kept by MMPO). confl = contradicting comparisons,
# c.rm = judgments removed by their resolution (feedback.conflicts).
print(f"{path}\n{'source':15} {'read':>6} {'rej':>5} {'used':>6} {'cand':>7} {'capped':>7} {'ties':>5} {'ident':>5} {'dup':>5} {'confl':>5} {'c.rm':>5} {'pairs':>6} {'tie_p':>5}  p_chosen mean [min q25 q50 q75 max] ties share")
for name, s in summary["sources"].items():
    p = s["p_chosen"]
    dist = f"{p['mean']:.3f} [{p['min']:.2f} {p['q25']:.2f} {p['q50']:.2f} {p['q75']:.2f} {p['max']:.2f}] {p['share_ties']:.2f}" if p["n"] else "-"
    print(f"{name:15} {s['records_read']:>6} {s['records_rejected']:>5} {s['records_used']:>6} {s['candidate_pairs']:>7} {s['capped_dropped']:>7} "
          f"{s['ties']:>5} {s['identical_dropped']:>5} {s['duplicates_dropped']:>5} "
          f"{_conflicts(s):>5} {s.get('conflict_rows_removed', 0):>5} {s['pairs']:>6} {s.get('ties_in_pairs', 0):>5}  {dist}")
print("total", summary["total"])
for name, s in summary["sources"].items():
    if _conflicts(s):
        print(name, "conflicts", s["conflicts"])
for name, s in summary["sources"].items():
    if s["rejected_by_reason"]:
        print(name, s["rejected_by_reason"])
