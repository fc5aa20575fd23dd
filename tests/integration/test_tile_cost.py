"""benchmarks/tile_cost.py (issue 24): what a tile costs in compute, counted on the meta device with the export's
own stages, fields and candidates, at the tiny preset; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "tile_cost.py"


def _run(tmp_path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--preset", "tiny", "--resolution", "128x192", "--frames", "9",
                           *flags, "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("component", ["decoder", "encoder"])
def test_shares_work_and_estimates_hold_together(tmp_path, component):
    tiled = tmp_path / "tiled.json"  # a measured run in the layout benchmarks/tiled_vae.py writes
    tiled.write_text(json.dumps({"forms": [{"form": "untiled"}, {"form": "t", "stage_tiles": [[64, 64]] * 4,
                                                                  "time_ratio_vs_untiled": 2.0}]}))
    proc = _run(tmp_path, "--component", component, "--measured", str(tiled))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "r.json").read_text())
    stages = data["stages"]
    assert len(stages) >= 2 and sum(s["share"] for s in stages) == pytest.approx(1, abs=1e-3)
    assert all(s["gmac"] > 0 and s["field_units"] > 0 for s in stages)
    for k in range(len(stages)):
        rows = [c for c in data["candidates"] if c["stage"] == k]
        assert rows[0]["windows"] == 1 and rows[0]["work"] == 1.0 and rows[0]["estimate"] == 1.0
        works = [c["work"] for c in rows]
        assert works == sorted(works)  # a smaller window always recomputes more
        for c in rows:  # only that stage is tiled: 1 + its share of the extra work
            assert c["estimate"] == pytest.approx(1 + stages[k]["share"] * (c["work"] - 1), abs=2e-3)
    (measured,) = data["measured"]  # the untiled form has no tiles: not estimated
    if len(stages) == 4:
        assert measured["estimate"] > 1 and measured["measured"] == 2.0
    else:
        assert measured["estimate"] is None and "stages" in measured["why_not"]


@pytest.mark.parametrize("flags,message", [(["--measured", "/nonexistent.json"], "no such file"),
                                           (["--frames", "4"], "frames 4 is not 8k+1")])
def test_bad_input_is_one_line(tmp_path, flags, message):
    proc = _run(tmp_path, *flags)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1] and not (tmp_path / "r.json").exists()
