"""The phone apps' tile loop (apps/android/app/src/main/kotlin/org/mi2v/bench/TileLoop.kt) with the host as its oracle.

Real tiny-preset tiled ONNX components (exported by the project's exporters, `--tile 32x32`: several windows per
stage; exact, and with `--halo 32` so that some decoder stages are blended) run on this host through the runtime
layer (`open_session` → `TiledSession`, mi2v_export/runtimes/sessions.py), recording every window each stage model is
given and returns, and each stage's stitched output (`tiling.run_tiled`'s own result). Those go to a case folder as
raw little-endian float32 files. The Kotlin loop, compiled with a real kotlinc and run with java
(apps/android/app/src/test/kotlin/org/mi2v/bench/TileLoopOracle.kt), runs over the same whole input with a runner
that requires each window it cuts to be the host's window k and hands back the host's output for it; its stitched
outputs must equal the host's (the driver allows 1e-6 where a stage is blended, for runtimes whose float64 sums may
differ; on the JVM the test requires every value bit for bit). A copy of a case with one window off by one ulp must
fail, so the comparison is not vacuous.
The Swift copy (apps/ios/Sources/Mi2vBench/TileLoop.swift) is not compiled here (no Swift toolchain).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mi2v_export import streaming
from mi2v_export.manifest import read_manifest
from mi2v_export.runtimes import registry
from mi2v_export.runtimes import sessions
from mi2v_export.runtimes.sessions import (STAGE_INPUT, STAGE_OUTPUT, TiledSession, open_session, stage_windows,
                                           stream_groups)

from mi2v_export.exporters.orchestrate import ExportRequest, run_export
from tests import cache
from tests.e2e.kotlin_jvm import MAIN, TEST, compile_kotlin, require_kotlin, run_java, write_raw

KOTLIN = [MAIN / "TileLoop.kt", MAIN / "StreamLoop.kt",
          MAIN / "ChunkLoop.kt", MAIN / "BenchCore.kt", TEST / "TileLoopOracle.kt",
          TEST / "OracleCases.kt"]
TILE = "32x32"
# components, --tile, --halo, --stream-rows, --time-chunk, --frames
EXPORTS = {"exact": ("encoder,decoder", TILE, None, None, None, None), "blended": ("decoder", TILE, 32, None, None, None),
           "streamed": ("decoder", None, None, 32, None, None), "chunked": ("decoder", "64x64", None, None, 8, 41)}
CASES = (("encoder", "exact"), ("decoder", "exact"), ("decoder", "blended"), ("decoder", "streamed"),
         ("decoder", "chunked"))


def _exports(request) -> dict[str, Path]:
    """The tiny preset's encoder / decoder for onnx tiled 32x32 (exact), the decoder with a 32 px halo (blended)
    and streamed in 32-row bands, built once per source version in pytest's cache (tests/cache.py)."""
    def build(components: str, tile: str | None, halo: int | None, stream_rows: int | None, time_chunk: int | None,
              frames: int | None):
        return lambda out: run_export(ExportRequest(target="onnx", out_dir=out, preset="tiny", components=components,
                                                    tile=tile, halo=halo, stream_rows=stream_rows, verify=False,
                                                    test_vectors=False, time_chunk=time_chunk, frames=frames))
    return {kind: cache.cached(request.config, f"tile-loop-{kind}", build(*spec), TILE, repr(spec))
            for kind, spec in EXPORTS.items()}


class _RecordingRuntime:
    """The real runtime; each stage model it loads keeps every window it is given and returns (TiledSession loads
    its stage models with `runtime.load` and runs each window with `session.run`)."""

    def __init__(self, runtime, log: dict[str, list]):
        self._runtime, self.name, self.log = runtime, runtime.name, log

    def load(self, path, entry=None, **options):
        return _RecordingSession(self._runtime.load(path, entry, **options), self.log.setdefault(Path(path).name, []))


class _RecordingSession:
    def __init__(self, inner, windows: list):
        self._inner, self._windows = inner, windows

    def run(self, inputs):
        out = self._inner.run(inputs)
        self._windows.append((np.array(inputs[STAGE_INPUT], copy=True), np.array(out[STAGE_OUTPUT], copy=True)))
        return out

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _write_case(export: Path, component: str, kind: str, folder: Path, monkeypatch) -> dict:
    """Run the component on the host, recording its windows and stitched stage outputs, into `folder`."""
    manifest = read_manifest(export)
    entry = manifest.find(component, "onnx")
    runtime = registry.get("onnxruntime")
    if runtime.available() is not None:
        pytest.skip(runtime.available())
    log: dict[str, list] = {}
    stitched: list[np.ndarray] = []  # each group's whole output (a streamed group's last stage's)

    def recorded(run):
        def call(*args, **kwargs):
            stitched.append(run(*args, **kwargs))
            return stitched[-1]
        return call

    x = np.random.default_rng(7).standard_normal(entry.inputs[0].shape).astype(np.float32)
    with monkeypatch.context() as patch:
        patch.setattr(sessions, "run_stage", recorded(sessions.run_stage))
        patch.setattr(streaming, "run_streamed", recorded(streaming.run_streamed))
        with open_session(_RecordingRuntime(runtime, log), manifest.path_of(entry), entry) as session:
            assert isinstance(session, TiledSession)
            y = session.run({entry.inputs[0].name: x})[entry.outputs[0].name]
    record = entry.tiling
    ends = [group[-1] for group in stream_groups(record["stages"])]
    assert len(stitched) == len(ends) and np.array_equal(stitched[-1], y)
    outputs = dict(zip(ends, stitched))
    folder.mkdir(parents=True)
    stages = []
    for k, stage in enumerate(record["stages"]):
        windows = log[Path(stage["file"]).name]
        assert len(windows) == stage_windows(stage)
        stages.append({"output": write_raw(folder, f"s{k}.out.bin", outputs[k]) if k in outputs else None,
                       "windows": [{"input": write_raw(folder, f"s{k}.w{j}.in.bin", a),
                                    "output": write_raw(folder, f"s{k}.w{j}.out.bin", b)}
                                   for j, (a, b) in enumerate(windows)]})
    case = {"name": f"{component}-{kind}", "tiling": record, "input": write_raw(folder, "input.bin", x),
            "output": write_raw(folder, "output.bin", y), "stages": stages}
    (folder / "case.json").write_text(json.dumps(case))
    return case


def _oracle(cp: str, cases: list[Path]):
    return run_java(cp, "org.mi2v.bench.TileLoopOracle", cases)


@pytest.mark.slow
def test_kotlin_tile_loop_matches_the_host(tmp_path, request, monkeypatch):
    kotlinc = require_kotlin()
    exports = _exports(request)
    folders, cases = [], []
    for component, kind in CASES:
        folders.append(tmp_path / f"{component}-{kind}")
        cases.append(_write_case(exports[kind], component, kind, folders[-1], monkeypatch))
    plans = [s["plan"] for case in cases for s in case["tiling"]["stages"]]
    # the loop is exercised: stages split both ways, exact ones, and blended ones of several windows
    assert any(p["grid"][0] > 1 and p["grid"][1] > 1 and p["exact"] for p in plans)
    assert any(p["grid"][0] > 1 and p["grid"][1] > 1 and not p["exact"] for p in plans)
    assert all(s["plan"]["exact"] for s in cases[1]["tiling"]["stages"])
    assert not cases[2]["tiling"]["exact"]
    streamed = cases[3]["tiling"]  # groups of several steps, each split into several row bands
    assert streamed["format"] == 2 and any(len(g) > 1 for g in stream_groups(streamed["stages"]))
    assert all(s["plan"]["grid"][1] == 1 for s in streamed["stages"])
    assert any(s["plan"]["grid"][0] > 1 for s in streamed["stages"])
    chunked = cases[4]["tiling"]  # stages in several time windows, each in several spatial windows
    assert chunked["format"] == 3 and any(s["time"]["chunks"] > 1 and s["plan"]["grid"][0] * s["plan"]["grid"][1] > 1
                                          for s in chunked["stages"] if "time" in s)

    # TileLoop.kt, BenchCore.kt (its JSON reader and raw-file reader) and the oracle driver
    cp = compile_kotlin(kotlinc, KOTLIN, tmp_path / "classes")
    proc = _oracle(cp, folders)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == len(CASES)
    # stricter than the driver's 1e-6 for blended stages: on the JVM the float64 blend is the host's, bit for bit
    # (the same products and sums in the same order), which float32 accumulation would not be
    assert proc.stdout.count("bit for bit: true") == len(CASES), proc.stdout

    # a host window one ulp off (stage 1's second window of the exact encoder) is caught, bit for bit
    bad = tmp_path / "tampered"
    shutil.copytree(folders[0], bad)
    path = bad / "s1.w1.in.bin"
    window = np.fromfile(path, dtype="<f4")
    window[window.size // 2] = np.nextafter(window[window.size // 2], np.float32(np.inf))
    window.tofile(path)
    proc = _oracle(cp, [bad])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MISMATCH" in proc.stdout and "stage 1 window 1 input" in proc.stdout, proc.stdout

    # the same for a band inside a streamed group (its input is cut from the previous step's bands, never whole)
    k = next(k for k, s in enumerate(streamed["stages"]) if k and s["plan"]["grid"][0] > 1
             and s.get("stream") == streamed["stages"][k - 1].get("stream") is not None)
    bad = tmp_path / "tampered-streamed"
    shutil.copytree(folders[3], bad)
    path = bad / f"s{k}.w1.in.bin"
    band = np.fromfile(path, dtype="<f4")
    band[0] = np.nextafter(band[0], np.float32(np.inf))
    band.tofile(path)
    proc = _oracle(cp, [bad])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MISMATCH" in proc.stdout and f"stage {k} window 1 input" in proc.stdout, proc.stdout

    # and for a window of a later time chunk (its frames are cut from the clip at the chunk's offset)
    k = next(k for k, s in enumerate(chunked["stages"]) if "time" in s)
    j = stage_windows(chunked["stages"][k]) - 1  # the last chunk's last window
    bad = tmp_path / "tampered-chunked"
    shutil.copytree(folders[4], bad)
    path = bad / f"s{k}.w{j}.in.bin"
    window = np.fromfile(path, dtype="<f4")
    window[-1] = np.nextafter(window[-1], np.float32(np.inf))
    window.tofile(path)
    proc = _oracle(cp, [bad])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MISMATCH" in proc.stdout and f"stage {k} window {j} input" in proc.stdout, proc.stdout
