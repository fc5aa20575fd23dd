"""The one integrity policy for every command that reads artifacts (`verify`, `bench`, `generate`, `release`).

An artifact whose size or sha256 differs from its manifest entry is refused (exit 2, naming the file): the
manifest's parity, gates and verification records describe other bytes. `--allow-modified` lets a user run it
anyway (a hand-patched graph, say); the command then says so on stderr and records the modified files in what it
writes, and `mi2v verify` never records a pass for such a file. Paths come from `Manifest.path_of` /
`Manifest.file_path`, which keep them inside the artifacts folder (mi2v_export/safepath.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import BadInputError
from .files import tree_digest
from .manifest import ArtifactEntry, Manifest

log = logging.getLogger("mi2v")

ALLOW_MODIFIED_HELP = ("run artifacts whose sha256 or size differs from manifest.json (refused by default); the "
                       "run says so and records it, and verify records no pass for them")


class ModifiedArtifactError(BadInputError):
    """A file differs from the manifest's record of it."""


@dataclass(frozen=True)
class Modified:
    """One file that differs from its manifest record (kept when `--allow-modified`)."""

    component: str
    file: str
    expected_sha256: str
    sha256: str
    expected_bytes: int
    bytes: int

    def to_dict(self) -> dict:
        return {"component": self.component, "file": self.file, "expected_sha256": self.expected_sha256,
                "sha256": self.sha256, "expected_bytes": self.expected_bytes, "bytes": self.bytes}


def _records(entry: ArtifactEntry) -> list[tuple[str, str, int]]:
    return [(entry.file, entry.sha256, entry.bytes)] + [(f.file, f.sha256, f.bytes) for f in entry.extra_files]


REMEDY = "re-export it, or pass --allow-modified to run it anyway"


def check_entry(manifest: Manifest, entry: ArtifactEntry, *, allow_modified: bool,
                remedy: str = REMEDY) -> list[Modified]:
    """Every file of `entry` exists and matches its manifest size and sha256. A mismatch raises
    ModifiedArtifactError unless `allow_modified`; the mismatches are returned (and logged as a warning)."""
    modified = []
    for name, sha, size in _records(entry):
        path = manifest.file_path(name)
        if not path.exists():
            raise BadInputError(f"{path}: listed in {manifest.folder}/manifest.json but missing")
        actual, actual_bytes = tree_digest(path)
        if actual != sha or actual_bytes != size:  # no recorded sha256 counts as a mismatch: nothing vouches
            if not allow_modified:
                raise ModifiedArtifactError(
                    f"{path}: differs from manifest.json ({_what_differs(sha, actual, size, actual_bytes)}; changed "
                    f"after export); refused — {remedy}")
            log.warning(f"{path} differs from manifest.json (--allow-modified: running it anyway, recorded)")
            modified.append(Modified(entry.component, name, sha, actual, size, actual_bytes))
    return modified


def check_entries(manifest: Manifest, entries: Iterable[ArtifactEntry], *, allow_modified: bool,
                  remedy: str = REMEDY) -> list[Modified]:
    """`check_entry` for each entry, the mismatches of all of them."""
    out: list[Modified] = []
    for entry in entries:
        out += check_entry(manifest, entry, allow_modified=allow_modified, remedy=remedy)
    return out


def _what_differs(sha: str, actual: str, size: int, actual_bytes: int) -> str:
    if not sha:
        return "the manifest records no sha256 for it"
    sizes = f"; {actual_bytes:,} bytes, the manifest says {size:,}" if actual_bytes != size else ""
    return f"sha256 {actual[:12]}…, the manifest says {sha[:12]}…{sizes}"
