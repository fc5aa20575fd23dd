"""JSON Schemas of the files mi2v reads back (the export manifest, the bench report, the release index and the
release plan) and the one validator.

The schemas are the documentation of record for these formats (`*.schema.json` beside this file, shipped in the
package); every reader calls `validate` before it trusts a field, so a malformed file is refused in one line that
names the field, e.g. `components[0].runs[0].samples_ms: '987' is not of type 'array'`.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import BadInputError

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest"
BENCH_REPORT = "bench-report"
RELEASE = "release"  # release.json of `mi2v release merge`
RELEASE_PLAN = "release-plan"


def schema_path(name: str) -> Path:
    return HERE / f"{name}.schema.json"


@cache
def _validator(name: str):
    import jsonschema

    schema = json.loads(schema_path(name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(data: Any, name: str, what: str) -> None:
    """BadInputError naming the first offending field unless `data` matches schema `name`."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(name).iter_errors(data))
    if error is None:
        return
    where = error.json_path.removeprefix("$").removeprefix(".") or "top level"
    message = error.message
    if error.validator == "pattern" and isinstance(error.schema, dict) and error.schema.get("description"):
        message = f"{error.instance!r} is not {error.schema['description']}"  # not the regex itself
    message = message if len(message) <= 200 else message[:200] + "…"
    raise BadInputError(f"{what}: {where}: {message}")
