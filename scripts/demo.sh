#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the whole edit path on a real clip. Extra arguments go to `python -m vera demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${VERA_VENV:-.venv}/bin/python" -m vera demo "$@"
