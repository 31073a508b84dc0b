#!/usr/bin/env bash
# Pack what the lent GPU machine lacks for the `gpu` tests (it reaches no package registry; its
# image has torch, triton, transformers and ~200 packages, Python 3.12; a 64 MiB copy of the
# working tree travels). Usage: `make gpu-bundle`, or tests/gpu/device_bundle.sh [OUT] (default
# tests/gpu/bundle, git-ignored). Then on the device machine, carrying OUT: tests/gpu/device_check.sh
#
# OUT/site is one folder for PYTHONPATH, ~35 MB:
#  - pure-Python packages copied from this .venv: sagellm's own imports the image lacks
#    (pydantic, annotated_types, typing_inspection, gguf) and LMDeploy's PyTorch engine with its
#    pure imports (lmdeploy without lmdeploy/lib: TurboMind's and xgrammar's shared libraries,
#    ~370 MB, which the PyTorch engine does not load; mmengine-lite, shortuuid, addict,
#    termcolor, yapf, platformdirs);
#  - compiled packages unpacked from wheels for the target's Python (TARGET_PY, default 3.12):
#    pydantic_core, xgrammar, apache-tvm-ffi, pyzmq, at the versions installed here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/bundle}"
PYTHON="${PYTHON:-python3}"
TARGET_PY="${TARGET_PY:-3.12}"
SITE="$(cd / && "$PYTHON" -c 'import importlib.util, os; print(os.path.dirname(os.path.dirname(importlib.util.find_spec("pydantic").origin)))')"
rm -rf "$OUT"
mkdir -p "$OUT/site" "$OUT/wheels"
for pkg in pydantic annotated_types typing_inspection gguf lmdeploy mmengine shortuuid addict \
    termcolor yapf yapf_third_party platformdirs; do
    if [[ ! -d "$SITE/$pkg" ]]; then
        echo "device_bundle: $pkg is not installed in $SITE (make lmdeploy)" >&2
        exit 2
    fi
    tar -C "$SITE" --exclude=__pycache__ --exclude="lmdeploy/lib" -cf - "$pkg" | tar -C "$OUT/site" -xf -
done
# their metadata too (importlib.metadata.version answers for them there)
for dist in pydantic annotated_types typing_inspection gguf lmdeploy mmengine_lite shortuuid \
    addict termcolor yapf platformdirs; do
    cp -r "$SITE/$dist"-[0-9]*.dist-info "$OUT/site/"
done
version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }
wheels=()
for dist in pydantic-core xgrammar apache-tvm-ffi pyzmq; do
    wheels+=("$dist==$(version "$dist")")
done
plats=()
for n in 17 24 27 28 31 34; do plats+=(--platform "manylinux_2_${n}_x86_64"); done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" \
    --implementation cp "${plats[@]}" --platform manylinux2014_x86_64 -d "$OUT/wheels" "${wheels[@]}"
for whl in "$OUT"/wheels/*.whl; do
    "$PYTHON" -m zipfile -e "$whl" "$OUT/site"
done
rm -rf "$OUT/wheels"
# GNU patch for apply_patches.sh, in case the image lacks it (it needs only libc)
mkdir -p "$OUT/bin"
cp "$(command -v patch)" "$OUT/bin/"
du -sh "$OUT"
