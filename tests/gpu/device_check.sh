#!/usr/bin/env bash
# The one prepared device check: every `gpu` test on the lent GPU machine, under the image's own
# python3 (torch, triton, transformers preinstalled) with tests/gpu/bundle carried
# (device_bundle.sh). Run from the repository root; logs under ${OUT:-/tmp}/gpu.
#   1. environment (python, torch, triton, GPU), written first;
#   2. the native engine on CUDA (tests/gpu except LMDeploy's, and the NCCL collectives, which
#      skip with fewer than 2 GPUs);
#   3. LMDeploy 0.11.0's PyTorch engine with the sagellm patch series applied to an overlay of
#      the bundled package and every hook on (tests/gpu/test_lmdeploy_gpu.py).
#   4. (only when STAGES names "cpukernels") the C++ CPU kernels' unit tests on the device host's
#      CPU, which has AVX-512 where this project's CI machines have AVX2 only: the AVX-512
#      attention, GEMM and row loops run nowhere else.
# Each stage has its own time limit, so a hang in one still returns the others' logs;
# STAGES (default "native lmdeploy") picks stages 2-4.
set -uo pipefail
BUNDLE="tests/gpu/bundle"
LOG="${OUT:-/tmp}/gpu"
PY="${PYTHON:-python3}"
mkdir -p "$LOG"
command -v patch >/dev/null || export PATH="$PATH:$PWD/$BUNDLE/bin"
export PYTHONPATH="$PWD/$BUNDLE/site:$PWD" PYTHONUNBUFFERED=1 SAGELLM_KERNEL_DIR=/tmp/sagellm_kernels
PYTEST=("$PY" -m pytest -q -rA -p no:cacheprovider -o addopts= --timeout=170)
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    "$PY" -c 'import sys, torch, triton, transformers; print(sys.version, torch.__version__, triton.__version__, transformers.__version__, torch.cuda.is_available())'
} 2>&1 | tee "$LOG/env.txt"
STAGES="${STAGES:-native lmdeploy}"
if [[ " $STAGES " == *" cpukernels "* ]]; then
    lscpu | grep -o 'avx512[a-z_0-9]*' | sort -u | tr '\n' ' ' | tee "$LOG/cpu_flags.txt"
    timeout 400 "${PYTEST[@]}" tests/unit/engines/native/test_*kernel*.py \
        tests/unit/engines/native/test_paged_attention_bf16.py \
        tests/unit/engines/native/test_attention_cascade.py 2>&1 | tee "$LOG/cpukernels.txt"
fi
[[ " $STAGES " == *" native "* ]] && timeout 180 "${PYTEST[@]}" tests/gpu --ignore=tests/gpu/test_lmdeploy_gpu.py \
    tests/unit/comm_backend/test_comm_shm_collectives.py -m gpu 2>&1 | tee "$LOG/native.txt"
[[ " $STAGES " == *" lmdeploy "* ]] || exit 0
LMDEPLOY_SRC="$BUNDLE/site/lmdeploy" PYTHON="$PY" third_party/apply_patches.sh /tmp/lmdeploy_overlay \
    2>&1 | tee "$LOG/apply.txt"
SAGELLM_LMDEPLOY_OVERLAY=/tmp/lmdeploy_overlay timeout 240 "${PYTEST[@]}" \
    tests/gpu/test_lmdeploy_gpu.py 2>&1 | tee "$LOG/lmdeploy.txt"
