"""The generated docs pages, in one place: the CLI reference (gen_cli), the file-format references (gen_schemas),
the tables the code owns (gen_tables) and the results pages (gen_results).

`mkdocs build` runs them through docs/gen/mkdocs_hooks.py, which adds the pages to the build in memory (nothing
generated is written into docs/ or committed). `python docs/gen/generate.py OUT` writes the same files into OUT,
for a look at them or for tests/unit/test_docs.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gen_cli
import gen_results
import gen_schemas
import gen_tables

GENERATORS = (gen_cli, gen_schemas, gen_tables, gen_results)


def pages() -> dict[str, str | bytes]:
    """Docs-relative path → page text (Markdown) or figure bytes (PNG)."""
    out: dict[str, str | bytes] = {}
    for generator in GENERATORS:
        produced = generator.pages()
        clash = sorted(set(out) & set(produced))
        if clash:
            raise ValueError(f"two generators write {clash}")
        out.update(produced)
    return out


def write(out_dir: Path) -> list[Path]:
    written = []
    for name, content in pages().items():
        path = Path(out_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python docs/gen/generate.py OUT_DIR", file=sys.stderr)
        return 2
    for path in write(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
