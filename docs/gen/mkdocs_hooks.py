"""mkdocs hook (mkdocs.yml `hooks:`): adds the generated pages and figures (docs/gen/generate.py) to the build as
in-memory files, so they are made fresh by every `mkdocs build` and never stored in docs/."""

from __future__ import annotations

from mkdocs.structure.files import File, Files

import generate


def on_files(files: Files, config) -> Files:
    for name, content in generate.pages().items():
        files.append(File.generated(config, name, content=content))
    return files
