#!/usr/bin/env bash
# The 8-row table of issue 24: reward and DPO on SmolLM2-135M-Instruct, fp32 and bf16, full and LoRA r=16,
# ours (prompt-shared layout) vs TRL 1.16, alternating the sides (ours, TRL, ours, TRL), the median of the
# measured steps after one warm-up step, the 1-min load average recorded before and after every process.
#   bash benchmarks/smollm2_vs_trl_table.sh [LOG]      # default log: benchmarks/results/smollm2_vs_trl.log
# Sized for a shared 2-core CPU (~60 min at load 8-10): batch 2 pairs, sequences cut to 256 tokens (prompt >= 128),
# 2 steps (1 warm-up + 1 measured), 2 rounds, the same 6 real pairs on both sides, 1 thread per side.
# Override with ARGS="--batch 4 --max-length 1024 ..." (appended last, so it wins).
set -u
cd "$(dirname "$0")/.."
LOG=${1:-benchmarks/results/smollm2_vs_trl.log}
mkdir -p "$(dirname "$LOG")"
PY=${PY:-python}
PAIRS=${PAIRS:-benchmarks/results/smollm2_pairs6.jsonl}  # the first 6 of common.real_pairs, saved once: no data ingest per process
if [[ ! -f "$PAIRS" ]]; then
  $PY -c "import sys, json; sys.path.insert(0, 'benchmarks'); from common import real_pairs; open('$PAIRS', 'w').write(''.join(json.dumps(r) + '\\n' for r in real_pairs(6)))"
fi
COMMON="--batch 2 --max-length 256 --steps 2 --warmup-steps 1 --rounds 2 --n-pairs 6 --pairs $PAIRS --layouts shared ${ARGS:-}"
for script in reward dpo; do
  for lora in 0 16; do
    for precision in fp32 bf16; do
      echo "=== $script precision=$precision lora=$lora $(date -u +%H:%M:%S) loadavg: $(cat /proc/loadavg)" >> "$LOG"
      $PY benchmarks/${script}_vs_trl.py --precision $precision --lora $lora $COMMON >> "$LOG" 2>&1
      echo "=== end $(date -u +%H:%M:%S) loadavg: $(cat /proc/loadavg)" >> "$LOG"
    done
  done
done
