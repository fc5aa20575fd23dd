"""CPU lists and masks: the sysfs cpufreq loop a phone answers, the cores worth pinning to, and the taskset-style
hex masks and `/proc` core lists `--cpu-mask` and the shell's cpuset speak (host and phone alike)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

CPU_LOOP = ('for c in /sys/devices/system/cpu/cpu[0-9]*; do f=$c/cpufreq; echo "${c##*/} '
            '$(cat $f/cpuinfo_max_freq 2>/dev/null || echo -) $(cat $f/scaling_governor 2>/dev/null || echo -) '
            '$(cat $f/scaling_cur_freq 2>/dev/null || echo -)"; done')


def parse_cpu_loop(text: str) -> list[dict[str, Any]]:
    cpus = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4 or not re.fullmatch(r"cpu\d+", parts[0]):
            continue
        cpus.append({
            "id": int(parts[0][3:]),
            "max_khz": int(parts[1]) if parts[1].isdigit() else None,
            "governor": parts[2] if parts[2] != "-" else None,
            "cur_khz": int(parts[3]) if parts[3].isdigit() else None,
        })
    return sorted(cpus, key=lambda c: c["id"])


def big_core_mask(cpus: Sequence[dict[str, Any]]) -> tuple[int | None, str]:
    """The cores worth pinning to, from their max frequencies, and the rule used.

    One frequency cluster: no pinning (every core is alike). Two: the faster one. Three or more (little / big /
    prime): every core but the slowest cluster, so a single prime core does not become the whole budget."""
    freqs = {c["id"]: c["max_khz"] for c in cpus if c.get("max_khz")}
    if not freqs:
        return None, "cpuinfo_max_freq unreadable: not pinned"
    clusters = sorted(set(freqs.values()))
    if len(clusters) == 1:
        return None, "all cores have the same max frequency: not pinned"
    floor = clusters[0]
    keep = [i for i, f in freqs.items() if f > floor]
    mask = 0
    for i in keep:
        mask |= 1 << i
    rule = "fastest cluster" if len(clusters) == 2 else "all but the slowest cluster"
    return mask, f"{rule} by cpuinfo_max_freq ({len(keep)} of {len(freqs)} cores)"


def parse_mask(text: str) -> int:
    """A taskset-style hex mask ("f0", "0xF0")."""
    t = text.strip().lower()
    t = t[2:] if t.startswith("0x") else t
    if not re.fullmatch(r"[0-9a-f]{1,32}", t) or int(t, 16) == 0:
        raise ValueError(f"--cpu-mask {text!r} is not a non-zero hex mask such as f0")
    return int(t, 16)


def cpu_list(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def format_list(ids: Sequence[int]) -> str:
    """[0,1,2,5] → "0-2,5" (the /proc Cpus_allowed_list form)."""
    out, ids = [], sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def parse_list(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.strip().split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            ids += range(int(a), int(b) + 1)
        elif part.strip():
            ids.append(int(part))
    return ids
