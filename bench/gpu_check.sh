#!/usr/bin/env bash
# Every check that needs a GPU, in one place; run it on a lent device from the repo root:
#   bash bench/gpu_check.sh [OUT_DIR]        (default $OUT, else out/gpu)
#   bash bench/gpu_check.sh --dry-run [DIR]  (no GPU: the script's own paths, gpu_step.py --dry-run,
#                                             the ComfyUI step's command printed, not run)
# 1. attention: xformers vs SDPA vs ComfyUI's dispatch against the naive reference, bf16
# 2. block swap: the swapped model's velocity equals the all-resident one (bf16 and fp8)
# 3. one Vera-1.3B step at 49 x 832x480 (random full-size weights): bf16 and fp8, CFG batched and
#    not, and with block swap; time, peak VRAM and the planner's estimate beside it
# 4. speed: eager vs compiled blocks vs a step-cache skip at that size, bf16 and fp8; ComfyUI's fp8
#    fast matmul (`--fast`) against our FP8Linear where the GPU has fp8 compute
# 5. long shots: vera-tiny streamed in context windows on CUDA at 129 and 513 frames (peak memory set
#    by the window, untouched pixels bit-exact; bench/long_shot.py gpu)
# 6. several GPUs (when 2 or more are visible): vera-tiny edits under torchrun with --parallel cfg,
#    sequence (and --shard-weights), branch on 3 GPUs, against the single-GPU run (bench/parallel.py
#    gpu); FSDP training through accelerate on 2 GPUs (tests/test_fsdp_training.py)
# 7. the shipped Wan-1.3B workflows in a real ComfyUI on a card capped at VERA_VRAM_GB (default 12:
#    a consumer card; --reserve-vram plus an allocator cap, see scripts/wan_workflow_check.py),
#    synthetic full-size files: umT5 fp16 + Wan VAE + Vera sharing the card through its manager,
#    with Load Vera Model's compile on (compiled blocks under partial loading; a fallback would say
#    "Vera compile:" in comfyui_server.log)
# ComfyUI source, first found: $COMFYUI_DIR; comfyui-host's ($COMFYUI_HOST_DIR, /tmp/comfyui-host);
# a comfyui-*.tar.gz in $COMFYUI_TARBALL, shared/vendor, ../shared/vendor or .whl (unpacked into
# the scratch folder). On a bare device machine, first run bench/gpu_wheels.sh here and carry .whl:
# its wheels (PyAV, torchsde, diffusers, kornia) are installed into the scratch folder.
# Results: one JSON line per check in OUT_DIR/gpu_check.jsonl (paste into BENCHMARKS.md); the
# console in gpu_check.log, the ComfyUI server's log in comfyui_server.log. Big files (models, the
# unpacked ComfyUI) go to $VERA_SCRATCH (default /tmp/vera-gpu-check), never into OUT_DIR.
# Whole run: at most about VERA_GPU_BUDGET_S seconds (default 480; keep it under the run's
# timeout): each check is cut to what is left, and the ComfyUI step, last, gets all that is left.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=()
[[ ${1:-} == --dry-run ]] && { DRY=(--dry-run); shift; }
OUT_DIR=${1:-${OUT:-out/gpu}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
SCRATCH=${VERA_SCRATCH:-/tmp/vera-gpu-check}
BUDGET=${VERA_GPU_BUDGET_S:-480}
mkdir -p "$SCRATCH"
log=$OUT_DIR/gpu_check.jsonl
: >"$log"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
TEE=$!
trap 'exec >&- 2>&-; wait "$TEE"' EXIT  # the log complete before the machine goes back
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

jline() {  # jline CHECK KEY VALUE: one JSON line into the results
  "$PY" -c 'import json, sys; print(json.dumps({"check": sys.argv[1], sys.argv[2]: sys.argv[3]}))' \
    "$@" | tee -a "$log"
}

check() {  # check NAME SECONDS COMMAND...: its JSON line into the results, and why when it failed
  local name=$1 limit=$2 rc out=$SCRATCH/check.out left=$((BUDGET - SECONDS)); shift 2
  if ((left < 20)); then
    jline "$name" skipped "the ${BUDGET}s budget is spent (VERA_GPU_BUDGET_S)"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (at most ${limit}s; ${SECONDS}s gone)"
  timeout -k 30 "$limit" "$@" >"$out"
  rc=$?
  grep '^{' "$out" | tee -a "$log"
  grep -v '^{' "$out"
  if ((rc == 124 || rc == 137)); then
    jline "$name" error "timed out after ${limit}s"
  elif ((rc != 0)); then
    jline "$name" error "exit $rc: a failed comparison or a crash, see gpu_check.log"
  fi
}

if ((${#DRY[@]} == 0)); then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | tee "$OUT_DIR/gpu.txt"
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { jline setup error "no CUDA device: nothing to check"; exit 2; }
fi

# Carried wheels (bench/gpu_wheels.sh): installed once per machine into the scratch folder.
if compgen -G ".whl/*.whl" >/dev/null; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SCRATCH/site" .whl/*.whl; then
    export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check: installing .whl/*.whl failed; going on without them"
  fi
fi

find_comfyui() {  # prints a ComfyUI source folder; on stderr, what was tried
  local d t
  if [[ -n ${COMFYUI_DIR:-} ]]; then
    [[ -f $COMFYUI_DIR/main.py ]] && { echo "$COMFYUI_DIR"; return; }
    echo "gpu_check: COMFYUI_DIR=$COMFYUI_DIR has no main.py; looking further" >&2
  fi
  for d in "${COMFYUI_HOST_DIR:-/tmp/comfyui-host}/ComfyUI" "$SCRATCH/ComfyUI"; do
    [[ -f $d/main.py ]] && { echo "$d"; return; }
  done
  for t in ${COMFYUI_TARBALL:-} shared/vendor/comfyui-*.tar.gz ../shared/vendor/comfyui-*.tar.gz \
      .whl/comfyui-*.tar.gz; do
    [[ -f $t ]] || continue
    echo "gpu_check: unpacking $t into $SCRATCH" >&2
    tar -xzf "$t" -C "$SCRATCH" && [[ -f $SCRATCH/ComfyUI/main.py ]] \
      && { echo "$SCRATCH/ComfyUI"; return; }
  done
  echo "gpu_check: no ComfyUI: set COMFYUI_DIR, or carry a comfyui-*.tar.gz in .whl" >&2
}
COMFY=$(find_comfyui)
CPY=${COMFYUI_PYTHON:-$PY}
echo "gpu_check: ComfyUI source: ${COMFY:-none}; its Python: $CPY"

# What the ComfyUI step imports (ComfyUI's core, the pack, the client): nothing is fetched there.
missing=
if [[ -n $COMFY ]]; then
  missing=$("$CPY" - <<'EOF'
import importlib
names = ("av torchsde einops transformers sentencepiece safetensors aiohttp yarl psutil scipy PIL "
         "yaml tqdm numpy requests diffusers kornia").split()
bad = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - an import that breaks is as missing as an absent one
        bad.append(f"{name} ({type(e).__name__})")
print(", ".join(bad))
EOF
)
fi
models=$SCRATCH/models
if [[ -n $COMFY && -z $missing && ${#DRY[@]} == 0 ]]; then  # big files, made while the GPU works
  nice -n 10 "$CPY" scripts/synthetic_models.py --out "$models" --umt5 fp16 \
    >"$SCRATCH/synthetic.out" 2>&1 &
  synthetic=$!
fi

if [[ -n $COMFY ]]; then
  check attention 180 env PYTHONPATH="$COMFY${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" bench/gpu_step.py attention "${DRY[@]}"
else
  echo "gpu_check: ComfyUI's attention is skipped: no ComfyUI source (see above)"
  check attention 180 "$PY" bench/gpu_step.py attention "${DRY[@]}"
fi
for weights in bf16 fp8; do
  check swap_equal 150 "$PY" bench/gpu_step.py swap-equal --weights "$weights" "${DRY[@]}"
done
for weights in bf16 fp8; do
  for batch in on off; do
    check step 150 "$PY" bench/gpu_step.py step --weights "$weights" --batch-cfg "$batch" \
      "${DRY[@]}"
  done
done
check step 180 "$PY" bench/gpu_step.py step --weights bf16 --batch-cfg off \
  --swap-layers "$( ((${#DRY[@]})) && echo 2 || echo 20)" "${DRY[@]}"
for weights in bf16 fp8; do  # eager vs compiled vs cached (issue 28)
  check speed 180 "$PY" bench/gpu_step.py speed --weights "$weights" "${DRY[@]}"
done
if [[ -n $COMFY ]]; then  # ComfyUI's fp8 fast matmul (--fast) where the GPU has fp8 compute
  check fp8_fast 90 env PYTHONPATH="$COMFY${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" bench/gpu_step.py fp8-fast "${DRY[@]}"
fi

check long_shot 120 "$PY" bench/long_shot.py gpu "${DRY[@]}"

gpus=$( ((${#DRY[@]})) && echo 0 || "$PY" -c "import torch; print(torch.cuda.device_count())")
if ((gpus >= 2)); then  # issue 32: parallel edits and FSDP training
  check parallel_gpu 150 "$PY" bench/parallel.py gpu
  check fsdp_training 150 bash -c "'$PY' -m pytest -q -p no:cacheprovider \
    tests/test_fsdp_training.py && echo '{\"check\": \"fsdp_training\", \"passed\": true}'"
else
  jline parallel_gpu skipped "$gpus GPU(s) visible: the multi-GPU checks need 2 or more"
fi

if [[ -z $COMFY ]]; then
  jline comfyui_capped_run skipped "no ComfyUI source: set COMFYUI_DIR or carry the tarball"
elif [[ -n $missing ]]; then
  jline comfyui_capped_run skipped "$CPY cannot import: $missing (bench/gpu_wheels.sh)"
else
  run=("$PY" scripts/wan_workflow_check.py --comfyui "$COMFY" --python "$CPY" --models "$models"
       --vram-gb "${VERA_VRAM_GB:-12}" --frames 49 --work-size 832x480 --steps 2
       --weight-dtype bf16 --umt5 fp16 --compile --server-log "$OUT_DIR/comfyui_server.log")
  if ((${#DRY[@]})); then
    echo "gpu_check: dry run; would run for at most $((BUDGET - SECONDS))s: ${run[*]}"
  else
    wait "$synthetic" || { cat "$SCRATCH/synthetic.out"; echo "gpu_check: synthetic files failed"; }
    check comfyui_capped_run "$BUDGET" "${run[@]}"
  fi
fi
echo "gpu_check: done in ${SECONDS}s; results in $log"
