"""Check an artifacts tree written by `make artifacts`: every manifest parses, every file is there with the
recorded sha256 (test vectors included), every artifact carries test vectors, and every artifact that has a runtime
here passed its parity gate. Exit 1 otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

from mi2v_export import runtimes
from mi2v_export.files import tree_digest
from mi2v_export.manifest import read_manifest


def main(root: str) -> int:
    problems, checked = [], 0
    folders = sorted(p.parent for p in Path(root).rglob("manifest.json"))
    if not folders:
        print(f"error: no manifest.json under {root}")
        return 1
    for folder in folders:
        manifest = read_manifest(folder)
        for entry in manifest.components:
            path = folder / entry.file
            if not path.exists():
                problems.append(f"{path}: missing")
                continue
            sha, _ = tree_digest(path)
            if sha != entry.sha256:
                problems.append(f"{path}: sha256 differs from the manifest")
            if runtimes.runnable(entry) is not None and not entry.verified:
                problems.append(f"{path}: not verified ({entry.parity})")
            for extra in entry.extra_files:
                xp = folder / extra.file
                if not xp.exists() or tree_digest(xp)[0] != extra.sha256:
                    problems.append(f"{xp}: missing or sha256 differs from the manifest")
            if not entry.test_vectors:
                problems.append(f"{path}: no test vectors")
            if not (entry.structure or {}).get("ok", True):
                problems.append(f"{path}: structural check failed")
            checked += 1
            print(f"ok {path} target={entry.target} delegate={entry.delegate} "
                  f"verified_on={','.join(r.get('runtime', '?') for r in entry.verified_on) or '-'} "
                  f"rel_l2={entry.parity.get('rel_l2')}")
    for p in problems:
        print(f"error: {p}")
    print(f"{checked} artifacts checked in {len(folders)} folders, {len(problems)} problems")
    return 1 if problems or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "artifacts"))
