#!/usr/bin/env bash
# The one device check for LMDeploy (run on the lent GPU machine from the repository root, with
# third_party/lmdeploy/gpu_bundle carried; see gpu_bundle.sh): patch an overlay of the bundled
# lmdeploy, then run the GPU test with the hooks on. Logs under ${OUT:-/tmp}/lmdeploy_gpu.
set -uo pipefail
BUNDLE="third_party/lmdeploy/gpu_bundle"
LOG="${OUT:-/tmp}/lmdeploy_gpu"
mkdir -p "$LOG"
python -c 'import sys, torch, triton; print(sys.version, torch.__version__, triton.__version__, torch.cuda.is_available())' | tee "$LOG/env.txt"
LMDEPLOY_SRC="$BUNDLE/site/lmdeploy" PYTHON=python third_party/apply_patches.sh /tmp/lmdeploy_overlay 2>&1 | tee "$LOG/apply.txt"
PYTHONPATH="$BUNDLE/site:." SAGELLM_LMDEPLOY_OVERLAY=/tmp/lmdeploy_overlay \
    python -m pytest -q -rA tests/gpu/test_lmdeploy_gpu.py 2>&1 | tee "$LOG/pytest.txt"
