"""minisir.atomic: a file or directory appears whole or not at all, and leaves nothing behind."""

from __future__ import annotations

import stat

import pytest

from minisir.atomic import atomic_dir, atomic_file


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.json.")
        tmp.write_text("one")
    assert target.read_text() == "one" and stat.S_IMODE(target.stat().st_mode) == 0o644
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "one"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_whole_directory_only_on_success(tmp_path):
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and not list(tmp.iterdir()) and tmp.name.startswith(".adapter.")
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    with atomic_dir(target) as tmp:  # an existing directory is replaced, not merged
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "c.txt").write_text("half")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary or moved-aside copy left
