"""Destinations checked before the work: every command that writes asks here first, and fails in one line.

An export, a generation or a benchmark can take minutes to hours; finding only at the end that `--out` is on a
read-only mount, that a parent is a file or that the disk is full loses all of it. So the commands call
`check_folder` / `check_file` while they parse their flags. The probe really creates (and removes) a file, since
permission bits say nothing for root or a read-only file system. A measurement that cannot be written after all
(the disk filled up meanwhile) is kept by `write_or_keep` in the temporary folder and named in the error.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import BadInputError
from .files import FILE_MODE

MIB = 1 << 20


def _nearest_existing(path: Path, flag: str) -> Path:
    """The deepest existing folder on the way to `path`; BadInputError when a part of the way is a file."""
    probe = path
    try:
        while not probe.exists():
            if probe.is_symlink():
                raise BadInputError(f"{flag} {path}: {probe} is a dangling symlink")
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as exc:  # a folder on the way that this user may not enter (EACCES)
        raise BadInputError(f"{flag} {path}: cannot look into {probe.parent} ({exc.strerror or exc})") from None
    if not is_dir:
        where = "is a file, not a folder" if probe == path else f"cannot be created: {probe} is a file"
        raise BadInputError(f"{flag} {path}: {where}")
    return probe


def _probe_writable(folder: Path, flag: str, target: Path) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".mi2v-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        reason = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        raise BadInputError(f"{flag} {target}: cannot write in {folder} ({reason})") from None


def _check_space(folder: Path, flag: str, target: Path, need_bytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise BadInputError(f"{flag} {target}: needs about {need_bytes / MIB:,.0f} MiB, {folder} has "
                            f"{free / MIB:,.0f} MiB free")


def check_folder(path: str | os.PathLike, flag: str, need_bytes: int = 0) -> Path:
    """`path` can be (or become) a writable folder with `need_bytes` free; BadInputError (exit 2) otherwise.
    Nothing is created."""
    path = Path(path).absolute()
    base = _nearest_existing(path, flag)
    _probe_writable(base, flag, path)
    _check_space(base, flag, path, need_bytes)
    return path


def check_file(path: str | os.PathLike, flag: str, need_bytes: int = 0) -> Path:
    """`path` can be written as a file (not a folder; its folder exists or can be made, is writable, has room)."""
    path = Path(path).absolute()
    if path.is_dir():
        raise BadInputError(f"{flag} {path}: is a folder; name a file")
    base = _nearest_existing(path.parent, flag)
    _probe_writable(base, flag, path)
    _check_space(base, flag, path, need_bytes)
    return path


def write_or_keep(path: str | os.PathLike, write: Callable[[Path], object], what: str) -> Path:
    """`write(path)`; when that fails with an OSError (a full disk, a folder that went read-only), `write` is
    called again on a file in the temporary folder and the BadInputError names both, so the measurement is kept."""
    path = Path(path)
    try:
        write(path)
        return path
    except OSError as exc:
        reason = exc.strerror or str(exc)
    keep = Path(tempfile.gettempdir()) / f"mi2v-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{path.name}"
    try:
        write(keep)
        os.chmod(keep, FILE_MODE)
    except OSError as exc:
        raise BadInputError(f"cannot write the {what} {path} ({reason}) nor keep it in {keep.parent} "
                            f"({exc.strerror or exc})") from None
    raise BadInputError(f"cannot write the {what} {path} ({reason}); it was kept at {keep}")
