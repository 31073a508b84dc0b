"""Sources of a C++ extension copied into its build folder, so the build is content-addressed.

``torch.utils.cpp_extension.load`` rebuilds when its ``build.ninja`` changes, and that file names
the sources by absolute path. Two checkouts with the same sources (the gate's baseline tree,
extracted to a fresh temporary folder, and the working tree) would share a build folder keyed by
the sources' hash yet rewrite each other's ``build.ninja`` and rebuild at every load (measured:
~30 s of compiling per gate worker process). Loading the copies under ``<build>/src`` gives every
checkout with those sources the same paths: one build, then none.

Invariant: a staged file is rewritten only when its bytes differ (its mtime, which ninja also
reads, stays put otherwise); writes are atomic, so processes staging at once are safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sagellm.core.io import atomic_write_bytes


def stage_sources(files: Sequence[Path], build_dir: Path) -> list[Path]:
    """Copy ``files`` (sources and the headers they include by relative name) into
    ``build_dir/src``; returns the copies' paths in the same order."""
    out = []
    for f in files:
        dst = build_dir / "src" / f.name
        data = f.read_bytes()
        if not dst.exists() or dst.read_bytes() != data:
            atomic_write_bytes(dst, data)
        out.append(dst)
    return out
