"""Reference pages of the file formats, rendered from their JSON Schemas (`mi2v_export/schemas/*.schema.json`).

Every property of every object is one table row: its path, type (with the choices of an enum, the value of a
const, each branch of a oneOf or an if/then/else), whether it is required, its description and its constraints
(pattern, bounds, lengths). A `$defs` entry that is an object with properties gets its own section, linked from
the rows that use it; a scalar `$defs` entry (a path, a sha256) is folded into the rows that refer to it, pattern
included. The schemas are the documentation of record (`mi2v_export/schemas/__init__.py`), so these pages only
format them.
"""

from __future__ import annotations

import json
from pathlib import Path

from gen_common import REPO, code, escape, table

SCHEMAS = REPO / "mi2v_export" / "schemas"
CONSTRAINTS = ("pattern", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "uniqueItems",
               "format")
BRANCHES = ("oneOf", "anyOf", "allOf")


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.glob("*.schema.json"))


def page_name(path: Path) -> str:
    return "reference/schemas/" + path.name.removesuffix(".schema.json") + ".md"


def _def_name(node: dict) -> str | None:
    ref = node.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref.startswith("#/$defs/") else None


def _is_section(node: dict) -> bool:
    """An object schema with properties of its own: documented in its own section."""
    return isinstance(node, dict) and isinstance(node.get("properties"), dict)


def resolve(node: dict, root: dict) -> dict:
    """A `$ref` to `#/$defs/NAME` merged with the keys beside it (which win, e.g. a more specific description)."""
    name = _def_name(node)
    if name is None:
        return node
    merged = dict(resolve(root["$defs"][name], root))
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def type_of(node: dict, root: dict) -> str:
    """A one-line type summary in Markdown (already escaped for a table cell)."""
    name = _def_name(node)
    if name is not None and _is_section(root["$defs"][name]):
        return f"[{escape(name, True)}](#def-{name})"
    node = resolve(node, root)
    if "const" in node:
        return "const " + code(json.dumps(node["const"]))
    if "enum" in node:
        return "one of " + ", ".join(code(json.dumps(v)) for v in node["enum"])
    for key in BRANCHES:
        if key in node:
            return f" {key} ".join(type_of(alt, root) for alt in node[key])
    if "if" in node:
        return (f"{_plain_type(node)}: if {type_of(node['if'], root)} then {type_of(node['then'], root)}, "
                f"else {type_of(node.get('else', {}), root)}")
    if _plain_type(node) == "array" and isinstance(node.get("items"), dict):
        return "array of " + type_of(node["items"], root)
    return _plain_type(node) or "any"


def _plain_type(node: dict) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind is None and "items" in node:
        return "array"
    return kind or ""


def constraints(node: dict, root: dict) -> str:
    node = resolve(node, root)
    parts = [f"{key} {code(json.dumps(node[key]) if key != 'pattern' else node[key])}"
             for key in CONSTRAINTS if key in node]
    if node.get("additionalProperties") is False:
        parts.append("no other keys")
    items = node.get("items")
    if isinstance(items, dict) and _def_name(items) is None and not _is_section(items):
        inner = constraints(items, root)
        if inner:
            parts.append("items: " + inner)
    return "; ".join(parts)


def property_rows(node: dict, root: dict, prefix: str = "") -> list[tuple]:
    """One row per property of `node`, recursing into inline objects and arrays of inline objects."""
    rows = []
    required = set(node.get("required", ()))
    for name, child in node.get("properties", {}).items():
        path = prefix + name
        resolved = resolve(child, root)
        rows.append((code(path), type_of(child, root), "yes" if name in required else "",
                     escape(resolved.get("description", ""), in_table=True), constraints(child, root)))
        rows += _nested_rows(child, root, path)
    return rows


def _nested_rows(child: dict, root: dict, path: str) -> list[tuple]:
    if _def_name(child) is not None:
        return []  # a $defs object has its own section; a scalar $def has no properties
    if _is_section(child):
        return property_rows(child, root, path + ".")
    items = child.get("items")
    if isinstance(items, dict) and _def_name(items) is None and _is_section(items):
        return property_rows(items, root, path + "[].")
    rows = []
    for key in BRANCHES:
        for alt in child.get(key, ()):
            rows += _nested_rows(alt, root, path)
    return rows


HEADER = ["property", "type", "required", "description", "constraints"]


def page(path: Path) -> str:
    root = json.loads(path.read_text())
    title = root.get("title") or path.name
    out = [f"# {escape(title)}\n",
           f"Generated from `mi2v_export/schemas/{path.name}` when the docs are built. Every reader validates the "
           "file against this schema before it trusts a field, so a malformed file is refused in one line that "
           "names the field.\n"]
    if root.get("description"):
        out.append(escape(root["description"]) + "\n")
    out.append("## Top level {#top-level}\n")
    if root.get("additionalProperties") is False:
        out.append("No keys other than these are allowed.\n")
    out.append(table(HEADER, property_rows(root, root)))
    for name, node in root.get("$defs", {}).items():
        if _is_section(node):
            out.append(f"## `{name}` {{#def-{name}}}\n")
            if node.get("description"):
                out.append(escape(node["description"]) + "\n")
            out.append(table(HEADER, property_rows(node, root)))
    return "\n".join(out)


def pages() -> dict[str, str]:
    return {page_name(path): page(path) for path in schema_files()}
