#!/usr/bin/env bash
# The test suite and the Triton kernels' Hopper compile under the GPU machine's PyTorch,
# torchvision and Triton, on this CPU: what would fail there for its versions alone is found
# here, before a lent GPU's minutes are spent on it.
#
#   benchmarks/gpu_versions.sh [VENV] [PYTEST ARGS...]   # VENV default: ../gpu-versions-venv
#
# The versions are those the device machine reported (PyTorch 2.11.0, torchvision 0.26.0,
# Triton 3.6.0 in 2026-11; change GPU_VERSIONS when it moves on). The first call builds VENV
# from the package registry (about 5 GB: PyTorch's CUDA build and its CUDA libraries, which
# run on the CPU); later calls reuse it. The rest of the dependencies come from constraints.txt.
# The package is used from src/, so nothing is written into the tree. Then:
#   1. benchmarks/triton_static.py, compiled for sm_90a by that Triton (its table is printed);
#   2. pytest over tests/ in two processes (GPU tests skip), or over PYTEST ARGS when given.
# The exit status is pytest's, or 1 when the static compile fails.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/../gpu-versions-venv}"
shift || true
GPU_VERSIONS="${GPU_VERSIONS:-torch==2.11.0 torchvision==0.26.0 triton==3.6.0}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    python3 -m venv "$VENV"
    pins="$VENV/constraints.txt"
    grep -v -E '^(torch|torchvision|triton|nvidia-|cuda-)' "$ROOT/constraints.txt" > "$pins"
    printf '%s\n' $GPU_VERSIONS >> "$pins"
    # the project's own requirements and its test extra, read from pyproject.toml
    mapfile -t deps < <("$VENV/bin/python" - "$ROOT/pyproject.toml" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["test"]:
    print(req.split(";")[0].replace(" ", ""))
EOF
)
    PIP_CONSTRAINT="$pins" "$VENV/bin/pip" install -q --disable-pip-version-check $GPU_VERSIONS "${deps[@]}"
fi

export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
"$VENV/bin/python" -c 'import numpy, torch, torchvision, triton
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, triton {triton.__version__}, numpy {numpy.__version__}")'
cd "$ROOT"
"$VENV/bin/python" benchmarks/triton_static.py || { echo "gpu_versions: the Triton kernels did not compile for sm_90a" >&2; exit 1; }
if [ $# -eq 0 ]; then set -- -q -n 2 --dist loadfile; fi
PATH="$VENV/bin:$PATH" exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
