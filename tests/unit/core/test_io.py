"""Atomic file writes (core.io): whole files only, readable by others, temp files cleaned up."""

import os
import stat

import pytest

from sagellm.core.io import atomic_write_bytes, atomic_write_json


def test_write_replaces_whole_file_with_umask_mode(tmp_path):
    p = tmp_path / "sub" / "m.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert p.read_text().strip().endswith("}") and '"a": 2' in p.read_text()
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    assert [q.name for q in p.parent.iterdir()] == ["m.json"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "m.bin"
    atomic_write_bytes(p, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(p, object())  # not bytes: the write fails midway
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["m.bin"]
