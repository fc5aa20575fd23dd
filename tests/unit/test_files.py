"""mi2v_export.files: one permission policy for written files, atomic replacement of files and folders, digests,
and one-line errors for unreadable JSON."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from mi2v_export import files
from mi2v_export.errors import BadInputError

pytestmark = pytest.mark.unit


def test_atomic_writes_get_0644_whatever_the_umask(tmp_path):
    old = os.umask(0o077)  # a umask that would leave 0600
    try:
        path = files.write_json_atomic(tmp_path / "a" / "r.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == files.FILE_MODE == 0o644
    assert path.read_text() == '{\n  "x": 1\n}\n' and [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = files.write_text_atomic(tmp_path / "r.txt", "old")
    with pytest.raises(RuntimeError), files.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_digests(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "b.bin").write_bytes(b"b" * 10)
    (tmp_path / "pkg" / "a.bin").write_bytes(b"a" * 5)
    assert files.sha256_file(tmp_path / "pkg" / "a.bin") == hashlib.sha256(b"a" * 5).hexdigest()
    digest, size = files.tree_digest(tmp_path / "pkg")
    lines = b"".join(f"{n}\0{hashlib.sha256(d).hexdigest()}\n".encode()
                     for n, d in (("a.bin", b"a" * 5), ("sub/b.bin", b"b" * 10)))
    assert (digest, size) == (hashlib.sha256(lines).hexdigest(), 15)


def test_replace_folder_swaps_and_restores(tmp_path, monkeypatch):
    new, dst = tmp_path / ".new", tmp_path / "out"
    for folder, text in ((new, "new"), (dst, "old")):
        folder.mkdir()
        (folder / "f").write_text(text)
    files.replace_folder(new, dst)
    assert (dst / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / ".again").mkdir()
    real = os.replace

    def fail_second(src, target):
        if str(src).endswith(".again"):
            raise OSError("cross-device link")
        return real(src, target)

    monkeypatch.setattr(files.os, "replace", fail_second)
    with pytest.raises(OSError):
        files.replace_folder(tmp_path / ".again", dst)
    assert (dst / "f").read_text() == "new"  # the old folder was put back


def test_read_json_errors_are_one_line(tmp_path):
    with pytest.raises(BadInputError, match=r"cannot read bench report .*nope.json"):
        files.read_json(tmp_path / "nope.json", "bench report")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BadInputError, match=r"manifest .*bad.json is not valid JSON"):
        files.read_json(tmp_path / "bad.json", "manifest")
