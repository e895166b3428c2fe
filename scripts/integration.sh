#!/usr/bin/env bash
# Integration run against a real ComfyUI on this (CPU) machine, with ../shared/tools/comfyui-host:
#   [COMFYUI_SRC=<git dir or checkout of Comfy-Org/ComfyUI>] bash scripts/integration.sh [pytest args]
# Sets the host up, starts it with this pack, runs tests/integration and, when Chromium and the
# playwright package are present, the browser check of the layer viewer. Not part of CI (no ComfyUI there).
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${COMFYUI_HOST:-../shared/tools/comfyui-host}
HOST_DIR=${COMFYUI_HOST_DIR:-/tmp/comfyui-host}
PORT=${VERA_PORT:-8188}
bash scripts/bootstrap.sh
[ -n "${COMFYUI_SRC:-}" ] && "$HOST" setup "$COMFYUI_SRC"
"$HOST" stop >/dev/null 2>&1 || true
"$HOST" start "$PWD" "$PORT"
trap '"$HOST" stop >/dev/null 2>&1 || true' EXIT
export VERA_COMFYUI_URL="http://127.0.0.1:$PORT" COMFYUI_DIR="$HOST_DIR/ComfyUI" COMFYUI_PYTHON="$HOST_DIR/venv/bin/python"
export PYTHONPATH="$HOST_DIR/shim${PYTHONPATH:+:$PYTHONPATH}"   # the host's torchvision shim, for its Python
.venv/bin/python -m pytest -q -s -rA tests/integration "$@"
if [ -x /usr/bin/chromium ] && .venv/bin/python -c "import playwright" 2>/dev/null; then
  .venv/bin/python scripts/browser_check.py --server "$VERA_COMFYUI_URL" --screenshot "${VERA_SCREENSHOT:-out/vera_layer_viewer.png}"
else
  echo "browser check skipped: needs /usr/bin/chromium (apt install chromium) and pip install -r requirements-integration.txt"
fi
