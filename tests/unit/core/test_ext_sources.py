"""Extension sources are built from copies in the build folder: two checkouts with the same
sources give the extension loader the same paths (so neither rebuilds the other's build)."""

import os

from sagellm.core.ext_sources import stage_sources


def checkout(root, text):
    root.mkdir()
    (root / "k.cpp").write_text(text)
    (root / "k.h").write_text("// header\n")
    return [root / "k.cpp", root / "k.h"]


def test_same_sources_from_two_checkouts_share_paths_and_mtimes(tmp_path):
    build = tmp_path / "build"
    a = stage_sources(checkout(tmp_path / "a", "int f();\n"), build)
    os.utime(a[0], (1, 1))  # a later rewrite would be visible as a newer mtime
    b = stage_sources(checkout(tmp_path / "b", "int f();\n"), build)
    assert a == b == [build / "src" / "k.cpp", build / "src" / "k.h"]
    assert a[0].stat().st_mtime == 1  # not rewritten: ninja sees nothing new
    assert a[0].read_text() == "int f();\n"


def test_changed_source_is_rewritten(tmp_path):
    build = tmp_path / "build"
    stage_sources(checkout(tmp_path / "a", "int f();\n"), build)
    out = stage_sources(checkout(tmp_path / "b", "int g();\n"), build)
    assert out[0].read_text() == "int g();\n"
