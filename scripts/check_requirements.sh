#!/usr/bin/env bash
# Would installing requirements.txt touch a user's torch? A dry run into a new venv that holds torch
# (default 2.8.0, a common ComfyUI set-up), all lines at once and each line on its own (as
# ComfyUI-Manager runs them); fails if pip plans to install or replace torch, torchvision,
# torchaudio, xformers, triton or any CUDA wheel (nvidia-*).
#   bash scripts/check_requirements.sh [TORCH_VERSION]
# The venv holds a stand-in record of torch (its metadata only: no GBs to download), which is what
# pip's resolver reads to decide whether torch must change. Uses pip's configured index.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${1:-2.8.0}
PY=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/vera-reqcheck.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
P="$work/venv/bin/python"
"$P" -m pip install -q --upgrade pip >/dev/null
site=$("$P" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
info="$site/torch-$TORCH.dist-info"
mkdir -p "$info"
printf 'Metadata-Version: 2.1\nName: torch\nVersion: %s\n' "$TORCH" >"$info/METADATA"
printf 'pip\n' >"$info/INSTALLER"
: >"$info/RECORD"
torch_version() { "$P" -m pip show torch 2>/dev/null | sed -n 's/^Version: //p'; }
[ "$(torch_version)" = "$TORCH" ] || { echo "stand-in torch $TORCH not seen" >&2; exit 2; }

check() {  # $1: a label; the rest: pip install arguments
  local label=$1; shift
  "$P" -m pip install -q --dry-run --report "$work/report.json" "$@" >/dev/null
  "$P" - "$work/report.json" "$label" <<'EOF'
import json, re, sys
report, label = json.load(open(sys.argv[1])), sys.argv[2]
planned = [(i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"]]
bad = [f"{n}=={v}" for n, v in planned
       if re.match(r"(torch|torchvision|torchaudio|xformers|triton|nvidia-)", n.lower())]
print(f"{label}: would install {len(planned)} package(s)" +
      (f": {', '.join(f'{n}=={v}' for n, v in planned)}" if planned else ""))
if bad:
    print(f"  FAIL: {label} would install {', '.join(bad)}")
    sys.exit(1)
EOF
}

rc=0
check "requirements.txt (all lines)" -r requirements.txt || rc=1
while IFS= read -r line; do
  line=${line%%#*}
  line=$(echo "$line" | xargs)
  [ -z "$line" ] && continue
  check "  line '$line'" "$line" || rc=1
done <requirements.txt
[ "$(torch_version)" = "$TORCH" ] || { echo "FAIL: torch changed" >&2; rc=1; }
[ "$rc" -eq 0 ] && echo "ok: torch $TORCH stays, no CUDA wheel, no xformers"
exit "$rc"
