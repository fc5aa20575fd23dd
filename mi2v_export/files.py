"""File utilities with one policy each: sha256 of a file or folder, atomic writes, atomic folder replacement.

Atomic writes go to a temporary file in the destination's folder (same file system) and are renamed over the
destination only when complete, so a reader never sees half a file and Ctrl-C or a full disk leave the old one.
Every file mi2v writes gets mode FILE_MODE (0644): artifacts, manifests, reports and videos are meant to be read
by other users and tools (mkstemp alone would leave 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import BadInputError
from .interrupts import cleanup_on_forced_exit

FILE_MODE = 0o644
CHUNK = 1 << 22


def file_digest(path: str | os.PathLike) -> tuple[str, int]:
    """sha256 (hex) and size in bytes of one file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def sha256_file(path: str | os.PathLike) -> str:
    return file_digest(path)[0]


def tree_digest(path: str | os.PathLike) -> tuple[str, int]:
    """sha256 and total bytes of a file, or of a folder (.mlpackage): the hash of every file's relative POSIX path,
    a NUL, its own sha256 and a newline, in sorted path order."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    total = 0
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        digest, size = file_digest(p)
        h.update(p.relative_to(path).as_posix().encode() + b"\0" + digest.encode() + b"\n")
        total += size
    return h.hexdigest(), total


@contextlib.contextmanager
def atomic_path(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `out` (same suffix, so writers pick the right format); on success it gets
    FILE_MODE and is renamed to `out`; on any failure (including Ctrl-C) it is deleted and `out` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".partial{out.suffix}", dir=out.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with cleanup_on_forced_exit(tmp_path):
            yield tmp_path
            os.chmod(tmp_path, FILE_MODE)
            os.replace(tmp_path, out)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically, flushed to disk before the rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return path


def replace_folder(new: str | os.PathLike, dst: str | os.PathLike, aside_prefix: str = ".") -> Path:
    """Move a finished folder `new` to `dst` (same file system) by renames: an existing `dst` is set aside first
    (as `<aside_prefix><name>.replaced-<pid>`, a name scans of the parent skip), put back if the move fails, and
    deleted only once `new` is in place."""
    new, dst = Path(new), Path(dst)
    old = None
    if dst.exists():
        old = dst.with_name(f"{aside_prefix}{dst.name}.replaced-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    try:
        os.replace(new, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; BadInputError in one line naming `what` when it is unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise BadInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{what} {path} is not valid JSON ({exc})") from None


def write_json_atomic(path: str | os.PathLike, data: Any, *, allow_nan: bool = True) -> Path:
    """JSON (indent 2, trailing newline) written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n")
