"""Markdown helpers shared by the docs generators (docs/gen/): escaping, tables, number formats, the machine line,
small records and figures.

The generated pages are plain Markdown read by mkdocs (Python-Markdown with the extensions in mkdocs.yml), so text
that comes from code or from JSON files is escaped here once: `<`, `>`, `*` and `|` outside code spans, which
Markdown would otherwise read as HTML, emphasis or a table cell boundary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASH = "–"
_CODE = re.compile(r"(`[^`]*`)")


def escape(text: str, in_table: bool = False) -> str:
    """Text from code or data, safe as Markdown: code spans kept, HTML/emphasis characters escaped elsewhere."""
    parts = _CODE.split(text or "")
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            part = part.replace("\\", "\\\\").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
            part = part.replace("[", "\\[").replace("]", "\\]")
        if in_table and i % 2 == 0:
            part = part.replace("|", "\\|")
        out.append(part)
    text = "".join(out)
    return " ".join(text.split()) if in_table else text


def code(text: object) -> str:
    """`text` as an inline code span (Python-Markdown's tables leave pipes inside code spans alone)."""
    return f"`{text}`"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; cells are used as given (escape them first when they come from data)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(DASH if c is None or c == "" else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def num(value: object, spec: str = ".1f", scale: float = 1.0, unit: str = "") -> str:
    """A number formatted with `spec` after dividing by `scale`, or a dash when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DASH
    return f"{value if scale == 1 else value / scale:{spec}}{unit}"


def mb(value: object) -> str:
    return num(value, ".2f", 1e6, " MB")


def gib(value: object) -> str:
    return num(value, ".2f", 2**30, " GiB")


def _machine_value(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(num(v, ".2f") if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {_machine_value(v)}" for k, v in value.items())
    return str(value)


def machine_lines(data: dict) -> list[str]:
    """The machine a result file recorded (`machine`, `host`, `host_after`: CPU, flags, load, cores, …), one
    Markdown bullet per record, every key as the file has it."""
    lines = []
    for key in ("machine", "host", "host_after"):
        record = data.get(key)
        if isinstance(record, dict) and record:
            items = "; ".join(f"{k}: {_machine_value(v)}" for k, v in record.items())
            lines.append(f"- **{key}** (as recorded): {escape(items)}")
    return lines or ["- **machine**: not recorded in this file"]


def read_json(path: Path) -> object:
    """A results file; text a tool printed before the JSON (a native library's log lines) is skipped."""
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as first_error:
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.lstrip().startswith(("{", "[")):
                try:
                    return json.loads("".join(lines[i:]))
                except json.JSONDecodeError:
                    continue
        raise first_error


def rel(path: Path) -> str:
    """A repository-relative path for display."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.as_posix()


def kv(record: object) -> str:
    """A small record (config, protocol) as `key: value` pairs on one line."""
    if not isinstance(record, dict):
        return escape(str(record))
    return "; ".join(f"{escape(str(k))}: {escape(short(v))}" for k, v in record.items())


def short(value: object) -> str:
    """A value from a results file in a few characters (floats to 4 significant digits, lists and dicts inline)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(short(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {short(v)}" for k, v in value.items()) + "}"
    return str(value)


def figure(images: dict, anchor: str, png: bytes, alt: str) -> str:
    """Keep a figure for the page (`img/<anchor>.png`) and return the Markdown that shows it."""
    images[f"img/{anchor}.png"] = png
    return f"![{escape(alt)}](img/{anchor}.png)\n"


def notes(data: dict, keys=("what", "command", "note", "notes")) -> list[str]:
    """The free-text fields a results file carries about itself, one bullet each."""
    out = []
    for key in keys:
        value = data.get(key)
        for text in value if isinstance(value, list) else [value]:
            if text:
                out.append(f"- **{key}**: {escape(str(text))}")
    return out
