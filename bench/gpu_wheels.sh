#!/usr/bin/env bash
# What bench/gpu_check.sh's ComfyUI step needs on a bare GPU machine (Python 3.12 with torch, but no
# PyAV, torchsde, diffusers or kornia, and no ComfyUI source): run it HERE, where pip reaches the
# registry, before asking for the device; then carry the folder with the run:
#   bash bench/gpu_wheels.sh [DIR]          (default .whl, which .gitignore already ignores)
#   run: carry [".whl"], command "bash bench/gpu_check.sh"
# gpu_check.sh installs DIR/*.whl into a scratch folder (pip --no-index --no-deps) and unpacks the
# ComfyUI tarball copied beside them. Versions: those the pack's tests pass with here (.venv), and
# ComfyUI's torchsde. The whole working tree travels within 64 MiB: the total is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
WHEELS=(av==18.1.0 torchsde==0.2.6 trampoline==0.1.2 diffusers==0.42.1 importlib_metadata==10.2.0
        kornia==0.9.0 kornia_rs==0.2.0)
mkdir -p "$DIR"
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DIR" "${WHEELS[@]}"
tarball=
for t in ../shared/vendor/comfyui-*.tar.gz shared/vendor/comfyui-*.tar.gz; do
  [[ -f $t ]] && { tarball=$t; break; }
done
if [[ -n $tarball ]]; then
  cp -n "$tarball" "$DIR/"
else
  echo "gpu_wheels: no ComfyUI tarball in ../shared/vendor or shared/vendor; set COMFYUI_DIR there"
fi
ls -la "$DIR"
tree_kb=$(git ls-files -z | du -ck --files0-from=- | tail -1 | cut -f1)
carry_kb=$(du -sk "$DIR" | cut -f1)
echo "gpu_wheels: $DIR $((carry_kb / 1024)) MiB + tracked files $((tree_kb / 1024)) MiB" \
     "(the limit is 64 MiB together)"
