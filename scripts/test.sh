#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${VERA_VENV:-.venv}/bin/python" -m pytest -q "$@"
