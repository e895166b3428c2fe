#!/usr/bin/env bash
# Integration run against a real ComfyUI on this (CPU) machine, with ../shared/tools/comfyui-host:
#   bash scripts/integration.sh [pytest args]
# Sets a host up (ComfyUI a125cd84 from ../shared/vendor, its own venv), starts it with this pack
# on a free port, runs tests/integration (nodes, workflows, the headless client end to end) and,
# when Chromium and the playwright package are present, the browser check of the layer viewer.
# The server is stopped however the run ends.
#   COMFYUI_HOST_DIR=DIR   reuse a host folder (setup is skipped when DIR holds one); default: a
#                          new temporary folder, removed afterwards, so nothing stale can pass a run
#   COMFYUI_SRC=SRC        set the host up from SRC (a ComfyUI git dir, checkout or .tar.gz)
#   VERA_SCREENSHOT=FILE   where the browser check's screenshot goes (out/vera_layer_viewer.png)
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${COMFYUI_HOST:-../shared/tools/comfyui-host}
[ -x "$HOST" ] || { echo "integration: $HOST not found (it comes with ../shared)" >&2; exit 2; }
HOST=$(cd "$(dirname "$HOST")" && pwd)/$(basename "$HOST")
PY=${VERA_VENV:-.venv}/bin/python
if [ -z "${COMFYUI_HOST_DIR:-}" ]; then
  COMFYUI_HOST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vera-comfyui-host.XXXXXX")
  OWN_HOST_DIR=1
fi
export COMFYUI_HOST_DIR
now() { date +%s; }
timed() { echo "[integration] $1: $(( $(now) - $2 )) s"; }

cleanup() {
  "$HOST" stop >/dev/null 2>&1 || true
  if [ -n "${OWN_HOST_DIR:-}" ]; then rm -rf "$COMFYUI_HOST_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t=$(now)
bash scripts/bootstrap.sh
"$PY" -m pip install -q -r requirements-integration.txt
if [ ! -f "$COMFYUI_HOST_DIR/ComfyUI/main.py" ] || [ -n "${COMFYUI_SRC:-}" ]; then
  "$HOST" setup ${COMFYUI_SRC:+"$COMFYUI_SRC"}
fi
timed "host setup" "$t"

PORT=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0))
print(s.getsockname()[1])")
t=$(now)
"$HOST" start "$PWD" "$PORT"
timed "server start (port $PORT)" "$t"
export VERA_COMFYUI_URL="http://127.0.0.1:$PORT" COMFYUI_DIR="$COMFYUI_HOST_DIR/ComfyUI"
export COMFYUI_PYTHON="$COMFYUI_HOST_DIR/venv/bin/python" COMFYUI_LOG="$COMFYUI_HOST_DIR/server.log"
export PYTHONPATH="$COMFYUI_HOST_DIR/shim${PYTHONPATH:+:$PYTHONPATH}"  # the host's torchvision shim

t=$(now)
rc=0
"$PY" -m pytest -q -s -rA -p no:cacheprovider tests/integration "$@" || rc=$?
timed "integration tests" "$t"

t=$(now)
if [ "$rc" -ne 0 ]; then
  echo "[integration] browser check skipped: the integration tests failed"
elif [ -x /usr/bin/chromium ] && "$PY" -c "import playwright" 2>/dev/null; then
  report=$COMFYUI_HOST_DIR/browser-check.json
  "$PY" scripts/browser_check.py --server "$VERA_COMFYUI_URL" \
    --screenshot "${VERA_SCREENSHOT:-out/vera_layer_viewer.png}" >"$report" || rc=1
  "$PY" - "$report" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("[integration] browser check:", "ok" if not r["pack_problems"] else r["pack_problems"],
      f"(workflow ran in {r.get('run_seconds')} s, viewer frames {r.get('viewer_frames')})")
EOF
  timed "browser check" "$t"
else
  echo "[integration] browser check skipped: needs /usr/bin/chromium (apt install chromium)" \
       "and the playwright package (pip install -r requirements-integration.txt)"
fi
exit "$rc"
