#!/usr/bin/env bash
# GPU check (docs/performance.md): reward + DPO on the real SmolLM2-135M-Instruct weights when their
# directory is carried (data/06_models/pretrained/SmolLM2-135M-Instruct), else a Qwen2.5-0.5B-shaped
# model from config (--model smollm2|qwen|DIR to choose); padded vs packed vs prompt-shared, bf16,
# tokens/s, MFU vs the measured bf16 matmul peak, peak GPU memory, TRL on the same batches when trl
# is importable, and one FSDP checkpoint save + reload. About 4-6 minutes on one H100/H200.
#
#   scripts/gpu_check.sh export      # here, on the CPU side (polars): writes scripts/gpu_data/pairs.jsonl
#                                    # (+ pairs_smollm2.jsonl and smollm2_config.json when SmolLM2 is fetched)
#   scripts/gpu_check.sh             # on the GPU machine (torch, transformers>=5, accelerate; no polars/kedro/trl);
#                                    # with 2+ GPUs it adds the FSDP2 2-process check (docs/distributed.md)
#   scripts/gpu_check.sh --dry-run   # any CPU, tiny sizes (< 1 minute)
#
# The device machine's transformers may be older than 5.x (packed log-probs use the boolean
# logits_to_keep of transformers 5; older versions fall back to full logits). If so, carry the
# wheels named in docs/performance.md (.whl, see the device README).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [[ "${1:-}" == "export" ]]; then
  shift
  exec "$PY" scripts/gpu_check.py export "$@"
fi
if [[ ! -f scripts/gpu_data/pairs.jsonl && " $* " != *" --data "* ]]; then
  echo "scripts/gpu_data/pairs.jsonl is missing: run 'scripts/gpu_check.sh export' on the CPU side first" >&2
  exit 2
fi
exec timeout 600 "$PY" scripts/gpu_check.py run "$@"
