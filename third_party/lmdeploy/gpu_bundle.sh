#!/usr/bin/env bash
# Pack LMDeploy's PyTorch engine for a machine that reaches no package registry (the lent GPU
# machine: torch and triton preinstalled, a 64 MiB copy of the working tree travels).
# Usage: third_party/lmdeploy/gpu_bundle.sh [OUT]   (default third_party/lmdeploy/gpu_bundle)
#
# OUT/site holds lmdeploy (without lmdeploy/lib: TurboMind's and xgrammar's shared libraries,
# ~370 MB, which the PyTorch engine does not load) and the packages its PyTorch engine imports
# that the GPU machine lacks (mmengine-lite, shortuuid, xgrammar, tvm_ffi; built for this
# Python, 3.11), copied from the interpreter $PYTHON; ~35 MB. On the GPU machine (carry OUT):
#   LMDEPLOY_SRC=OUT/site/lmdeploy third_party/apply_patches.sh OUT/overlay
#   PYTHONPATH=OUT/site:. SAGELLM_LMDEPLOY_OVERLAY=OUT/overlay python -m pytest tests/gpu/test_lmdeploy_gpu.py
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/gpu_bundle}"
PYTHON="${PYTHON:-python3}"
SITE="$(cd / && "$PYTHON" -c 'import importlib.util, os; print(os.path.dirname(os.path.dirname(importlib.util.find_spec("lmdeploy").origin)))')"
rm -rf "$OUT"
mkdir -p "$OUT/site"
for pkg in lmdeploy mmengine shortuuid xgrammar tvm_ffi; do
    if [[ ! -d "$SITE/$pkg" ]]; then
        echo "gpu_bundle: $pkg is not installed in $SITE (make lmdeploy)" >&2
        exit 2
    fi
    tar -C "$SITE" --exclude=__pycache__ --exclude="lmdeploy/lib" -cf - "$pkg" | tar -C "$OUT/site" -xf -
done
du -sh "$OUT"
