"""Expected peak memory per job, learned from the builds this tool ran (the table the local scheduler and the Ray
executor size jobs by).

The table is a JSON file (`$MI2V_MEMORY_TABLE`, default `~/.cache/mi2v/memory-table.json`):

    {"schema": "mi2v-memory-table", "schema_version": 1,
     "entries": {"denoiser/executorch/xnnpack/fp32/mobilei2v-270m/720x1280x17":
                 {"peak_rss_bytes": …, "last_rss_bytes": …, "samples": 3, "updated_at": …}}}

After every finished job the executor records its peak (the larger of the export process's own high-water mark and
the manifest's per-component `peak_rss_bytes`). `estimate` answers, in order: the measured figure of the same key
(plus a margin); one of the same component/target/precision at another size, scaled by video volume; a default
(tiny preset 1.5 GiB; anything else 6.5 GiB, the largest 720p export measured on the reference machine).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from ..bounds import available_bytes
from .plan import Job

SCHEMA = "mi2v-memory-table"
MARGIN = 1.15  # measured peaks vary a little between runs (allocator, thread pools)
GIB = 1 << 30
DEFAULT_TINY = int(1.5 * GIB)
DEFAULT_FULL = int(6.5 * GIB)


def table_path() -> Path:
    env = os.environ.get("MI2V_MEMORY_TABLE")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mi2v" / "memory-table.json"


def job_key(job: Job) -> str:
    delegate = job.delegate or "-"
    return f"{job.component}/{job.target}/{delegate}/{job.precision_label}/{job.preset}/{job.resolution}x{job.frames}"


def _volume(key: str) -> int:
    h, w, f = (int(v) for v in key.rsplit("/", 1)[1].split("x"))
    return h * w * f


def load_table(path: Path | None = None) -> dict:
    path = path or table_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return dict(data.get("entries") or {}) if isinstance(data, dict) and data.get("schema") == SCHEMA else {}


def estimate(job: Job, table: dict) -> tuple[int, str]:
    """Expected peak bytes of `job` and where the figure comes from (measured | scaled from KEY | default)."""
    key = job_key(job)
    if key in table:
        return int(table[key]["peak_rss_bytes"] * MARGIN), "measured"
    prefix = key.rsplit("/", 2)[0] + "/"
    similar = [k for k in table if k.startswith(prefix)]
    if similar:
        nearest = min(similar, key=lambda k: abs(_volume(k) - _volume(key)))
        scale = max(1.0, _volume(key) / _volume(nearest))  # never assume less than a smaller build measured
        return int(table[nearest]["peak_rss_bytes"] * scale * MARGIN), f"scaled from {nearest}"
    return (DEFAULT_TINY if job.preset == "tiny" else DEFAULT_FULL), "default"


def record(job: Job, peak_bytes: int, path: Path | None = None) -> None:
    """Add one measured peak to the table (read-modify-write under an exclusive lock: several plans may run)."""
    from ..files import write_json_atomic
    from ..manifest import now_iso

    path = path or table_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = load_table(path)
        old = entries.get(job_key(job)) or {}
        entries[job_key(job)] = {"peak_rss_bytes": max(int(peak_bytes), int(old.get("peak_rss_bytes") or 0)),
                                 "last_rss_bytes": int(peak_bytes), "samples": int(old.get("samples") or 0) + 1,
                                 "updated_at": now_iso()}
        write_json_atomic(path, {"schema": SCHEMA, "schema_version": 1, "entries": dict(sorted(entries.items()))})


def available_memory() -> int:
    """What new processes can use (mi2v_export/bounds.py: MemAvailable, lowered to a cgroup's limit)."""
    return available_bytes()
