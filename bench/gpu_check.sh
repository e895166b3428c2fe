#!/usr/bin/env bash
# Every check that needs a GPU, in one place; run it on a lent device from the repo root:
#   bash bench/gpu_check.sh [OUT_DIR]        (default $OUT or out/gpu)
# 1. attention: xformers vs SDPA vs ComfyUI's dispatch against the naive reference, bf16
# 2. one Vera-1.3B step at 49 x 832x480 (random full-size weights): bf16 and fp8, CFG batched and
#    not, and with block swap; time, peak VRAM and the planner's estimate beside it
# 3. with COMFYUI_DIR set: the shipped Wan-1.3B workflow in a real ComfyUI under a VRAM cap
#    (VERA_VRAM_FRACTION, default 0.3 of the card), synthetic full-size files (scripts/
#    synthetic_models.py), umT5 + VAE + Vera sharing the card through ComfyUI's manager
# Results: one JSON line per check in OUT_DIR/gpu_check.jsonl; paste them into BENCHMARKS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-out/gpu}}
mkdir -p "$OUT_DIR"
log="$OUT_DIR/gpu_check.jsonl"
: >"$log"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | tee "$OUT_DIR/gpu.txt"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "no CUDA device: nothing to check"; exit 2; }
"$PY" bench/gpu_step.py attention | tee -a "$log"
for weights in bf16 fp8; do
  for batch in on off; do
    "$PY" bench/gpu_step.py step --weights "$weights" --batch-cfg "$batch" | tee -a "$log"
  done
done
"$PY" bench/gpu_step.py step --weights bf16 --batch-cfg off --swap-layers 20 | tee -a "$log"
if [ -n "${COMFYUI_DIR:-}" ]; then
  "$PY" scripts/wan_workflow_check.py --comfyui "$COMFYUI_DIR" --python "${COMFYUI_PYTHON:-$PY}" \
    --models "$OUT_DIR/models" --vram-fraction "${VERA_VRAM_FRACTION:-0.3}" --frames 49 \
    --work-size 832x480 --steps 2 --weight-dtype bf16 --umt5 fp16 | tee -a "$log"
else
  echo '{"comfyui_capped_run": "skipped: set COMFYUI_DIR to a ComfyUI checkout"}' | tee -a "$log"
fi
