#!/usr/bin/env bash
# Apply the sagellm patch series to an overlay of the installed lmdeploy (site-packages is never
# edited). Usage: third_party/apply_patches.sh [OVERLAY_DIR]   (default third_party/lmdeploy/overlay)
#
# The overlay mirrors the installed package as symlinks, except the files the series patches,
# which are real copies; putting OVERLAY_DIR first on sys.path (sagellm.engines.lmdeploy does)
# imports the patched sources and everything else (TurboMind's .so included) from the install.
#
# Order of checks: installed version == third_party/lmdeploy/VERSION (else refuse, naming both);
# the pristine files match third_party/lmdeploy/SHA256SUMS; then, if the overlay's stamp equals
# the hash of this series, nothing is done (idempotent); else it is rebuilt from scratch and
# swapped in. Env: PYTHON (interpreter whose lmdeploy is patched), LMDEPLOY_SRC (package dir;
# default: found by that interpreter). Exit codes: 2 wrong version, 3 checksum, 4 patch failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OVERLAY="${1:-$HERE/lmdeploy/overlay}"
PYTHON="${PYTHON:-python3}"
WANT="$(tr -d '[:space:]' < "$HERE/lmdeploy/VERSION")"
SUMS="$HERE/lmdeploy/SHA256SUMS"
PATCHES=("$HERE"/patches/lmdeploy/[0-9][0-9][0-9][0-9]-*.patch)

if [[ -z "${LMDEPLOY_SRC:-}" ]]; then
    LMDEPLOY_SRC="$(cd / && env -u PYTHONPATH "$PYTHON" -c \
        'import importlib.util, os; s = importlib.util.find_spec("lmdeploy"); print(os.path.dirname(s.origin) if s else "")')"
fi
if [[ -z "$LMDEPLOY_SRC" || ! -f "$LMDEPLOY_SRC/version.py" ]]; then
    echo "apply_patches: lmdeploy is not installed for $PYTHON; run 'make lmdeploy'" >&2
    exit 2
fi
LMDEPLOY_SRC="$(cd "$LMDEPLOY_SRC" && pwd)"
HAVE="$(sed -n "s/^__version__ = ['\"]\([^'\"]*\)['\"].*/\1/p" "$LMDEPLOY_SRC/version.py")"
if [[ "$HAVE" != "$WANT" ]]; then
    echo "apply_patches: refusing: lmdeploy $HAVE is installed at $LMDEPLOY_SRC, but the patch" \
         "series is for lmdeploy $WANT (third_party/lmdeploy/VERSION)" >&2
    exit 2
fi
ROOT="$(dirname "$LMDEPLOY_SRC")"
if ! (cd "$ROOT" && sha256sum --quiet -c "$SUMS" >&2); then
    echo "apply_patches: refusing: files of lmdeploy $HAVE at $LMDEPLOY_SRC differ from the" \
         "pristine $WANT wheel (third_party/lmdeploy/SHA256SUMS)" >&2
    exit 3
fi

STAMP="$(cat "$HERE/lmdeploy/VERSION" "$SUMS" "${PATCHES[@]}" | sha256sum | cut -d' ' -f1) $LMDEPLOY_SRC"
if [[ -f "$OVERLAY/SAGELLM_PATCHES" && "$(head -n1 "$OVERLAY/SAGELLM_PATCHES")" == "$STAMP" ]]; then
    echo "apply_patches: $OVERLAY already has this series (${#PATCHES[@]} patches); nothing to do"
    exit 0
fi

TMP="$OVERLAY.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP"
cp -as "$LMDEPLOY_SRC" "$TMP/lmdeploy"
find "$TMP" -name __pycache__ -prune -exec rm -rf {} +
while read -r _ path; do  # patched files become real copies, so patch never writes through a link
    rm "$TMP/$path"
    cp "$ROOT/$path" "$TMP/$path"
done < "$SUMS"
for p in "${PATCHES[@]}"; do
    if ! patch -p1 --forward --batch --quiet -d "$TMP" < "$p"; then
        echo "apply_patches: $(basename "$p") does not apply to lmdeploy $HAVE" >&2
        exit 4
    fi
    echo "apply_patches: applied $(basename "$p")"
done
{ echo "$STAMP"; for p in "${PATCHES[@]}"; do basename "$p"; done; } > "$TMP/SAGELLM_PATCHES"
rm -rf "$OVERLAY"
mkdir -p "$(dirname "$OVERLAY")"
mv "$TMP" "$OVERLAY"
trap - EXIT
echo "apply_patches: overlay ready at $OVERLAY (lmdeploy $HAVE + ${#PATCHES[@]} patches)"
