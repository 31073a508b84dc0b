"""apply_patches.sh: applies the series to an overlay, is idempotent, refuses another version
or modified sources (naming both versions), and never edits the installed package."""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
from pathlib import Path

from lmdeploy_testing import NEEDS_LMDEPLOY, REPO, run_apply

pytestmark = NEEDS_LMDEPLOY
PATCHED = [
    "lmdeploy/pytorch/paging/scheduler.py",
    "lmdeploy/pytorch/paging/block_trie.py",
    "lmdeploy/pytorch/paging/eviction_helper/recompute_eviction_helper.py",
    "lmdeploy/pytorch/distributed.py",
]


def _installed_root() -> Path:
    """site-packages of the installed wheel (not the overlay, which may be on sys.path)."""
    return Path(importlib.metadata.distribution("lmdeploy").locate_file(""))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_series_applies_to_overlay_only(patched_overlay):
    stamp = (patched_overlay / "SAGELLM_PATCHES").read_text().splitlines()
    assert [s[:4] for s in stamp[1:]] == ["0001", "0002", "0003", "0004"]
    sums_text = (REPO / "third_party/lmdeploy/SHA256SUMS").read_text()
    sums = {path: digest for digest, path in (line.split() for line in sums_text.splitlines())}
    for rel in PATCHED:
        assert not (patched_overlay / rel).is_symlink()
        assert "sagellm 000" in (patched_overlay / rel).read_text()
        assert _sha(_installed_root() / rel) == sums[rel]  # site-packages untouched
    # everything else is the installed file, linked
    assert (patched_overlay / "lmdeploy/pytorch/messages.py").is_symlink()


def test_apply_twice_is_a_no_op(patched_overlay):
    before = {rel: (patched_overlay / rel).stat().st_mtime_ns for rel in PATCHED}
    r = run_apply(patched_overlay)
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stdout
    assert {rel: (patched_overlay / rel).stat().st_mtime_ns for rel in PATCHED} == before


def _copy_sources(tmp_path: Path) -> Path:
    """The pristine files of the installed package the script checks, as a fake install."""
    src = tmp_path / "site" / "lmdeploy"
    root = _installed_root()
    for rel in [*PATCHED, "lmdeploy/version.py"]:
        (tmp_path / "site" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, tmp_path / "site" / rel)
    return src


def test_refuses_another_version_naming_both(tmp_path):
    src = _copy_sources(tmp_path)
    v = src / "version.py"
    v.write_text(v.read_text().replace("__version__ = '0.11.0'", "__version__ = '0.10.2'"))
    r = run_apply(tmp_path / "overlay", LMDEPLOY_SRC=str(src))
    assert r.returncode == 2
    assert "0.10.2" in r.stderr and "0.11.0" in r.stderr
    assert not (tmp_path / "overlay").exists()


def test_refuses_modified_sources(tmp_path):
    src = _copy_sources(tmp_path)
    trie = src / "pytorch/paging/block_trie.py"
    trie.write_text(trie.read_text() + "\n# local edit\n")
    r = run_apply(tmp_path / "overlay", LMDEPLOY_SRC=str(src))
    assert r.returncode == 3
    assert "SHA256SUMS" in r.stderr
    assert not (tmp_path / "overlay").exists()
