"""Containment: a path read from a file (a manifest, a release index, a plan, a report) stays inside its folder.

Job folders are downloaded CI artifacts and release folders are shared between teams, so every name such a file
holds is hostile until checked: no absolute path, no `..` part, no drive or backslash tricks, and no symlink on the
way that leads out of the folder. The JSON Schemas in `mi2v_export/schemas/` reject such values with the pattern
`RELATIVE_PATH_PATTERN`; the readers check again here, where the folder is known (a symlink cannot be seen by a
schema). Names pushed to a phone pass `safe_name` first, so a remote path is built only from checked parts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from .errors import BadInputError

# For the JSON Schemas: a relative POSIX path of plain parts (no leading '/', no '..' or '.' part, no backslash,
# no NUL, no drive letter). Kept in step with `check_relative` by tests/e2e/test_release_hostile.py.
RELATIVE_PATH_PATTERN = r"^(?![A-Za-z]:)(?!/)(?!.*\\)(?!.*\x00)(?!(.*/)?\.\.?(/|$))[^/]+(/[^/]+)*$"
_RELATIVE = re.compile(RELATIVE_PATH_PATTERN)
# One path part that is safe as a file or folder name on every OS and on a phone's shell.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=@,-]{0,199}$")


def check_relative(value: object, what: str) -> str:
    """`value` as a relative path of plain parts; BadInputError naming `what` otherwise (no file system access)."""
    if not isinstance(value, str) or not value or not _RELATIVE.match(value):
        raise BadInputError(f"{what}: {value!r} is not a relative path inside its folder (absolute paths and "
                            "'..' are refused)")
    return value


def contained(folder: str | os.PathLike, value: object, what: str) -> Path:
    """`folder / value`, checked: a relative path of plain parts whose resolved location (symlinks followed) is
    inside the resolved `folder`. BadInputError (exit 2) naming `what` otherwise."""
    rel = check_relative(value, what)
    root = Path(folder).resolve()
    path = Path(folder) / PurePosixPath(rel)
    if not is_within(path, root):
        raise BadInputError(f"{what}: {rel!r} leads outside {folder} (through a symlink); refused")
    return path


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path`, with every symlink resolved, lies inside `root` (resolved too)."""
    resolved = Path(path).resolve()
    base = Path(root).resolve()
    return resolved == base or base in resolved.parents


def safe_name(value: object, what: str) -> str:
    """One path part safe for a file name here and in a phone's shell (letters, digits, `_.+=@,-`)."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise BadInputError(f"{what}: {value!r} is not a plain file or folder name")
    return value


def confine(base: str | os.PathLike, value: str | os.PathLike, what: str) -> Path:
    """A user-facing folder read from a file (a plan's `out`): relative paths are taken inside `base`, and the
    result must stay inside it (absolute paths, `..` and symlinks out are refused)."""
    text = os.fspath(value)
    if os.path.isabs(text):
        raise BadInputError(f"{what}: {text!r} is absolute; a plan's folders stay inside {base} (name the folder "
                            "on the command line to write elsewhere)")
    text = text.rstrip("/")
    if text in ("", "."):
        return Path(base)
    return contained(base, text.removeprefix("./"), what)


def escape_below(folder: str | os.PathLike, root: str | os.PathLike) -> Path | None:
    """The first entry under `folder` whose resolved location is outside `root`, following symlinked folders the
    way hashing and copying do (each real folder visited once, so a symlink loop ends); None when all stay in."""
    seen: set[str] = set()
    for below, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(below)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        for inner in dirs + files:
            if not is_within(Path(below) / inner, root):
                return Path(below) / inner
    return None
