"""`mi2v bench` end to end: host runs in process, and the adb flow through the real adb client and a private adb
server talking to the simulated phone (real push of real artifacts, real execution by the host runners, parsed
timings in the report), plus every error case of the issue reproduced through that stack.

Artifacts: `standin_artifacts` are small modules with the tiny preset's I/O contract (names and shapes of
`exporters.components`: image 1x3x1x128x192 → latent 1x128x1x4x6; latent 1x128x2x4x6 + timestep + flow_score →
velocity; latent → video 1x3x9x128x192), exported here to ONNX (dynamo, opset 18, external data) and to ExecuTorch
with XNNPACK, with a manifest written through `mi2v_export.manifest.Staging` — quick to build, and enough for
everything bench does with a model. The slow test runs the real tiny preset exported by the project's exporters
(`mi2v export`'s library: ONNX + ExecuTorch XNNPACK, ~6 min on 2 cores). Exports are cached under pytest's cache
folder, keyed by the builder source (and the exporters' / models' source for the slow one) and the torch /
executorch / onnx versions (delete .pytest_cache to rebuild).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest

from mi2v_export.devices.bench import BenchOptions, parse_device, run_bench
from mi2v_export.devices.cpus import big_core_mask, format_list, parse_cpu_loop, parse_list, parse_mask
from mi2v_export.devices.runner_checks import check_runner, diagnose_start, runner_failure
from mi2v_export.devices.selection import select_artifacts
from mi2v_export.devices.elf import inspect_runner
from mi2v_export.devices.report import BenchReport
from mi2v_export.simulator.phone import SimulatedPhone, host_abi
from mi2v_export.errors import BadInputError, DeviceError

from tests import cache
from tests.conftest import private_adb, run_cli


# --------------------------------------------------------------------------------------------------------------------
# artifacts
# --------------------------------------------------------------------------------------------------------------------

TINY = {"resolution": (128, 192), "frames": 9, "latent": (1, 128, 2, 4, 6)}


def _standin_specs():
    """encoder / denoiser / decoder stand-ins with the tiny contract's names and shapes (small, fast to export)."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 32, 8, stride=8)
            self.down = nn.Conv2d(32, 128, 4, stride=4)

        def forward(self, image):
            x = image[:, :, 0]
            return self.down(torch.relu(self.patch(x))).unsqueeze(2)

    class Denoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(128, 96)
            self.qkv = nn.Linear(96, 288)
            self.out = nn.Linear(96, 128)
            self.t = nn.Linear(2, 96)

        def forward(self, latent, timestep, flow_score):
            b, c, t, h, w = latent.shape
            x = self.inp(latent.flatten(2).transpose(1, 2))
            x = x + self.t(torch.stack([timestep / 1000.0, flow_score], dim=-1)).unsqueeze(1)
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            att = torch.softmax(q @ k.transpose(1, 2) / 96 ** 0.5, dim=-1)
            y = self.out(att @ v)
            return y.transpose(1, 2).reshape(b, c, t, h, w)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(128, 48)
            self.up = nn.ConvTranspose2d(48, 3, 32, stride=32)

        def forward(self, latent):
            x = self.proj(latent.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)  # 1x48x2x4x6 → 9 frames (4 + 5) → 9x48x4x6 → 9x3x128x192 → 1x3x9x128x192
            x = torch.cat([x[:, :, :1].expand(-1, -1, 4, -1, -1), x[:, :, 1:].expand(-1, -1, 5, -1, -1)], dim=2)
            y = self.up(x[0].permute(1, 0, 2, 3))
            return y.permute(1, 0, 2, 3).unsqueeze(0)

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    h, w = TINY["resolution"]
    return {
        "encoder": (Encoder().eval(), {"image": torch.rand((1, 3, 1, h, w), generator=g) * 2 - 1}, ("latent",)),
        "denoiser": (Denoiser().eval(), {"latent": torch.randn(TINY["latent"], generator=g),
                                         "timestep": torch.tensor([700.0]), "flow_score": torch.tensor([2.0])},
                     ("velocity",)),
        "decoder": (Decoder().eval(), {"latent": torch.randn(TINY["latent"], generator=g)}, ("video",)),
    }


def _tiny_preset_export(out: Path) -> Path:
    """The real tiny preset, exported by the project's exporters (`mi2v export`'s library): ONNX and ExecuTorch
    XNNPACK, seeded weights, parity checks off (they are the exporters' tests, not these)."""
    from mi2v_export.exporters.orchestrate import ExportRequest, run_export

    for target, delegate in (("onnx", None), ("executorch", "xnnpack")):
        run_export(ExportRequest(target=target, delegate=delegate, out_dir=out, preset="tiny", verify=False))
    return out


def export_artifacts(specs: dict, out: Path, targets=("onnx", "executorch")) -> Path:
    """Export each (module, named inputs, output names) to DIR/<component>.onnx / .pte and write the manifest."""
    import torch

    from mi2v_export import testvectors
    from mi2v_export.exporters.base import get_exporter
    from mi2v_export.files import file_digest, tree_digest
    from mi2v_export.manifest import ArtifactEntry, FileInfo, Manifest, Staging, TensorInfo

    def infos(names, tensors):
        return [TensorInfo(n, tuple(t.shape), str(t.dtype).replace("torch.", "")) for n, t in zip(names, tensors)]

    entries, files = [], []

    def add_test_vectors(entry, staging, inputs, result):
        """The toy's own inputs and PyTorch output as the artifact's test vectors (as `mi2v export` writes them)."""
        sets = testvectors.to_artifact_dtypes([(inputs, {entry.outputs[0].name: result})], entry.inputs,
                                              entry.outputs)
        fmt = get_exporter(entry.target, entry.delegate).test_vector_format
        entry.test_vectors, written = testvectors.write(fmt, entry.component, entry.file, "fp32", sets, staging.path)
        for role, file in written.items():
            entry.extra_files.append(FileInfo(role, file, *tree_digest(staging.path / file)))
            files.append(file)

    with Staging(out) as staging:
        for comp, (module, inputs, outputs) in specs.items():
            args = tuple(inputs.values())
            with torch.no_grad():
                result = module(*args)
            out_infos = infos(outputs, [result])
            if "onnx" in targets:
                name = f"{comp}.onnx"
                torch.onnx.export(module, args, str(staging.path / name), dynamo=True, opset_version=18,
                                  input_names=list(inputs), output_names=list(outputs), external_data=True)
                extra = []
                if (staging.path / f"{name}.data").exists():
                    sha, size = file_digest(staging.path / f"{name}.data")
                    extra.append(FileInfo("external_data", f"{name}.data", sha, size))
                    files.append(f"{name}.data")
                sha, size = file_digest(staging.path / name)
                entries.append(ArtifactEntry(comp, comp, "onnx", None, "fp32", name, sha, size,
                                             infos(inputs, args), out_infos, {}, {}, extra_files=extra))
                files.append(name)
                add_test_vectors(entries[-1], staging, inputs, result)
            if "executorch" in targets:
                from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
                from executorch.exir import to_edge_transform_and_lower

                name = f"{comp}.pte"
                program = to_edge_transform_and_lower(torch.export.export(module, args),
                                                      partitioner=[XnnpackPartitioner()]).to_executorch()
                (staging.path / name).write_bytes(program.buffer)
                sha, size = file_digest(staging.path / name)
                entries.append(ArtifactEntry(comp, comp, "executorch", "xnnpack", "fp32", name, sha, size,
                                             infos(inputs, args), out_infos, {}, {}))
                files.append(name)
                add_test_vectors(entries[-1], staging, inputs, result)
        manifest = Manifest(preset="tiny", resolution=TINY["resolution"], frames=TINY["frames"],
                            latent_shape=TINY["latent"], source={"weights": "seeded", "seed": 0, "checkpoints": []},
                            components=entries)
        staging.commit(manifest, files)
    return out


@pytest.fixture(scope="session")
def standin(request) -> Path:
    sources = [inspect.getsource(_standin_specs), inspect.getsource(export_artifacts)]
    return cache.cached(request.config, "standin", lambda out: export_artifacts(_standin_specs(), out), *sources)


def derive(src: Path, dst: Path, keep=lambda e: True, edit=None) -> Path:
    """A copy of an artifacts folder with a filtered (and optionally edited) manifest."""
    from mi2v_export.manifest import read_manifest

    m = read_manifest(src)
    dst.mkdir(parents=True, exist_ok=True)
    m.components = [e for e in m.components if keep(e)]
    for e in m.components:
        for f in e.files():  # files, and folders such as testdata/<component>
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            if (src / f).is_dir():
                shutil.copytree(src / f, dst / f, dirs_exist_ok=True)
            else:
                shutil.copyfile(src / f, dst / f)
        if edit is not None:
            edit(e, dst)
    (dst / "manifest.json").write_text(json.dumps(m.to_dict(), indent=2))
    return dst


# --------------------------------------------------------------------------------------------------------------------
# running the CLI
# --------------------------------------------------------------------------------------------------------------------

def _adb_args(adb) -> list[str]:
    return ["--adb", adb.path, "--adb-port", str(adb.server_port)]


def _one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------------------------
# units: device strings, selection, ELF checks, masks, failure messages
# --------------------------------------------------------------------------------------------------------------------


def test_parse_device():
    assert parse_device("host") == ("host", None)
    assert parse_device("adb") == ("adb", None)
    assert parse_device("adb:127.0.0.1:5555") == ("adb", "127.0.0.1:5555")
    assert parse_device("ios:00008130-0011223344556677") == ("ios", "00008130-0011223344556677")
    with pytest.raises(BadInputError, match="not host, adb, adb:SERIAL or ios:UDID"):
        parse_device("phone")
    for bare in ("ios", "ios:"):
        with pytest.raises(BadInputError, match="needs the iPhone's UDID"):
            parse_device(bare)


def test_select_artifacts(standin, tmp_path):
    from mi2v_export.manifest import read_manifest

    m = read_manifest(standin)
    auto = select_artifacts(m, "auto", "host")
    assert [(s.component, s.runtime, s.entry.file) for s in auto] == [
        ("encoder", "executorch", "encoder.pte"), ("denoiser", "executorch", "denoiser.pte"),
        ("decoder", "executorch", "decoder.pte")]
    ort = select_artifacts(m, "onnxruntime", "adb")
    assert [s.entry.file for s in ort] == ["encoder.onnx", "denoiser.onnx", "decoder.onnx"]
    # auto takes the runtime that covers every component; without one, each component takes what it has
    no_enc_pte = read_manifest(derive(standin, tmp_path / "a", keep=lambda e: e.file != "encoder.pte"))
    assert {s.runtime for s in select_artifacts(no_enc_pte, "auto", "host")} == {"onnxruntime"}
    mixed = read_manifest(derive(standin, tmp_path / "mixed", keep=lambda e: e.file not in ("encoder.pte",
                                                                                            "decoder.onnx")))
    assert [s.runtime for s in select_artifacts(mixed, "auto", "host")] == ["onnxruntime", "executorch", "executorch"]
    none = select_artifacts(mixed, "executorch", "host")[0]
    assert none.entry is None and "no executorch artifact for the encoder" in none.reason

    # a Vulkan .pte runs on a phone, not here; Core ML runs nowhere we bench
    def vulkan(e, dst):
        e.delegate = "vulkan"

    vk = read_manifest(derive(standin, tmp_path / "vk", keep=lambda e: e.component == "decoder" and e.target ==
                              "executorch", edit=vulkan))
    sel = select_artifacts(vk, "auto", "host")
    assert sel[0].entry is None and "the manifest has no encoder" in sel[0].reason
    assert sel[2].entry is None and "vulkan, which this machine cannot execute" in sel[2].reason
    assert select_artifacts(vk, "auto", "adb")[2].entry.delegate == "vulkan"
    with pytest.raises(BadInputError, match="--runtime"):
        select_artifacts(m, "tflite", "host")


def test_a_device_kind_is_one_registration(standin, tmp_path, monkeypatch):
    """A new device kind is a BenchDevice and one `register(DeviceKind(...))` (devices/registry.py): `--device`, its
    protocol defaults, the artifacts it refuses, its options refused on other kinds, the loop and the table's title
    all come from the registration; nothing else names the kind."""
    from mi2v_export.devices import registry
    from mi2v_export.devices.base import BenchDevice, DeviceFacts
    from mi2v_export.devices.registry import Defaults, DeviceKind
    from mi2v_export.devices.report import RunResult

    monkeypatch.setattr(registry, "_KINDS", registry.all_kinds())  # the registration ends with the test

    class Stopwatch(BenchDevice):
        transport = "watch"

        def __init__(self, opts, serial):
            self.opts, self.serial = opts, serial

        def facts(self):
            return DeviceFacts({"transport": "watch", "serial": self.serial, "simulated_device": False})

        def run(self, sel, comp):
            comp.runs.append(RunResult(load_ms=1.0, samples_ms=[2.0] * self.opts.iterations))
            comp.status = "ok"
            return comp

    registry.register(DeviceKind(
        "watch", open=lambda opts, manifest, serial, *_: [Stopwatch(opts, serial)], spellings=("watch[:NAME]",),
        defaults=Defaults(iterations=3, warmup=0, cooldown=0.0),
        refuses=lambda entry, runtime: "the stopwatch times .onnx only" if runtime == "executorch" else None,
        claims=lambda opts: "--team is the stopwatch's" if opts.team == "stopwatch" else None,
        describe=lambda device, protocol: f"the stopwatch {device.get('serial')}"))
    assert parse_device("watch:one") == ("watch", "one")
    with pytest.raises(BadInputError, match="ios:UDID or watch"):
        parse_device("phone")
    outcome = run_bench(BenchOptions(artifacts=standin, device="watch:one", json_path=tmp_path / "r.json"))
    report = outcome.reports[0][0]
    assert outcome.error is None and report.protocol["iterations"] == 3
    assert [(c.status, c.runtime["name"]) for c in report.components] == [("ok", "onnxruntime")] * 3
    assert registry.describe(report.device, report.protocol) == "the stopwatch one"
    with pytest.raises(BadInputError, match="the stopwatch's"):
        run_bench(BenchOptions(artifacts=standin, device="host", team="stopwatch"))


def test_the_cli_names_only_registered_device_kinds():
    """The central names of device kinds (the CLI's --via choices, the --device help) are the registry's."""
    from mi2v_export.commands.bench import Via, bench
    from mi2v_export.devices.registry import all_kinds, vias

    assert [v.value for v in Via] == list(vias())
    device_help = next(p.default.help for p in inspect.signature(bench).parameters.values()
                       if p.name == "device")
    for kind in all_kinds():
        assert kind.transport in device_help
        assert all(s.split(":")[0] in device_help for s in kind.spellings)


def _elf_stub(path: Path, machine: int = 183, bits: int = 64, interp: str | None = "/system/bin/linker64",
              e_type: int = 3) -> Path:
    """A minimal ELF header (+ a PT_INTERP program header) — enough for the architecture check."""
    assert bits == 64
    phoff, phnum = 64, 1 if interp else 0
    head = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    head += struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, 0, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
    body = b""
    if interp:
        data = interp.encode() + b"\0"
        body = struct.pack("<IIQQQQQQ", 3, 4, 64 + 56, 0, 0, len(data), len(data), 1) + data
    path.write_bytes(head + body)
    path.chmod(0o755)
    return path


def test_runner_checks(tmp_path):
    arm = _elf_stub(tmp_path / "executor_runner")
    info = inspect_runner(arm)
    assert (info.kind, info.elf_class, info.machine, info.abi, info.interpreter) == (
        "elf", 64, "aarch64", "arm64-v8a", "/system/bin/linker64")
    # what a phone has: bionic's linker and the toolbox shell, no desktop loader, no /bin/sh
    phone_has = {"/system/bin/linker64", "/system/bin/sh"}.__contains__
    assert check_runner(arm, "executor_runner", ["arm64-v8a", "armeabi-v7a"], phone_has) == info
    with pytest.raises(DeviceError, match=r"wrong architecture: it is 64-bit aarch64 \(arm64-v8a\) but the device "
                                          r"runs x86_64, x86; rebuild"):
        check_runner(arm, "executor_runner", ["x86_64", "x86"], phone_has)
    glibc = _elf_stub(tmp_path / "glibc_runner", interp="/lib/ld-linux-aarch64.so.1")
    with pytest.raises(DeviceError, match="linked for desktop Linux .*which the device does not have.*Android NDK"):
        check_runner(glibc, "executor_runner", ["arm64-v8a"], phone_has)
    # a device that has that loader (an arm64 Linux board over adb) runs it
    assert check_runner(glibc, "executor_runner", ["arm64-v8a"], {"/lib/ld-linux-aarch64.so.1"}.__contains__)
    lib = _elf_stub(tmp_path / "libonnxruntime.so", interp=None)
    with pytest.raises(DeviceError, match="is a shared library, not an executable"):
        check_runner(lib, "onnxruntime_perf_test", ["arm64-v8a"], phone_has)
    host_python = Path(os.path.realpath(sys.executable))
    assert inspect_runner(host_python).abi == host_abi()  # this machine's own binaries
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    assert check_runner(script, "executor_runner", [host_abi()], os.path.exists).kind == "script"
    with pytest.raises(DeviceError, match="is a script, not a native binary, and the device has no /bin/sh"):
        check_runner(script, "executor_runner", ["arm64-v8a"], phone_has)
    text = tmp_path / "notes.txt"
    text.write_text("not a program")
    with pytest.raises(DeviceError, match=r"is not executable \(neither an ELF binary nor a #! script\)"):
        check_runner(text, "executor_runner", ["arm64-v8a"], phone_has)
    with pytest.raises(DeviceError, match="does not exist: build executor_runner .*--runner PATH"):
        check_runner(tmp_path / "missing", "executor_runner", ["arm64-v8a"], phone_has)


def test_runner_lookup_for_a_real_phone(adb, tmp_path):
    # an arm64 phone (a simulated one with an arm64 profile: it has no runner on its PATH)
    from mi2v_export.devices.android_session import AndroidSession
    from mi2v_export.simulator.phone import DeviceProfile

    with SimulatedPhone(profile=DeviceProfile(abi="arm64-v8a")) as arm_phone:
        adb.connect(arm_phone.serial)
        try:
            session = AndroidSession(adb, adb.pick_device(arm_phone.serial))
            session.fingerprint()
            assert session.abilist == ["arm64-v8a", "armeabi-v7a", "armeabi"]
            with pytest.raises(DeviceError, match=r"no executor_runner for arm64-v8a: build it .*--runner PATH, or "
                                                  r"put it in .*/runners/arm64-v8a/"):
                session.find_runner("executor_runner", [], tmp_path)
            folder = tmp_path / "runners" / "arm64-v8a"
            folder.mkdir(parents=True)
            _elf_stub(folder / "executor_runner")
            _elf_stub(folder / "libqnn_executorch_backend.so", interp=None)
            runner = session.find_runner("executor_runner", [], tmp_path)
            assert runner.source == "artifacts folder" and runner.installed is None
            assert [p.name for p in runner.libs] == ["libqnn_executorch_backend.so"]
            (tmp_path / "build").mkdir()
            ort = _elf_stub(tmp_path / "build" / "onnxruntime_perf_test")
            _elf_stub(tmp_path / "build" / "libonnxruntime.so", interp=None)
            r = session.find_runner("onnxruntime_perf_test", [folder / "executor_runner", ort], tmp_path)
            assert r.local == ort and r.source == "--runner" and [p.name for p in r.libs] == ["libonnxruntime.so"]
        finally:
            adb.disconnect(arm_phone.serial)


def test_cpu_masks_and_failure_messages():
    cpus = parse_cpu_loop("cpu0 1800000 schedutil 300000\ncpu1 1800000 schedutil 300000\ncpu2 2400000 schedutil "
                          "2400000\ncpu3 2400000 schedutil -\ncpu4 3000000 performance 3000000\nnoise\n")
    assert [c["max_khz"] for c in cpus] == [1800000, 1800000, 2400000, 2400000, 3000000]
    assert cpus[3]["cur_khz"] is None and cpus[4]["governor"] == "performance"
    mask, rule = big_core_mask(cpus)  # three clusters: all but the little cores
    assert mask == 0b11100 and "all but the slowest cluster" in rule
    assert big_core_mask(cpus[:4])[0] == 0b1100  # two clusters: the fast one
    assert big_core_mask(cpus[:2]) == (None, "all cores have the same max frequency: not pinned")
    assert parse_mask("0xF0") == 0xF0 and format_list([0, 1, 2, 5]) == "0-2,5" and parse_list("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="not a non-zero hex mask"):
        parse_mask("zz")
    assert "crashed with SIGSEGV (exit 139)" in diagnose_start(139, "", "executor_runner")
    assert diagnose_start(255, "usage: ...", "onnxruntime_perf_test") is None  # exit(-1) is not a signal
    assert "library libonnxruntime.so is missing" in diagnose_start(
        1, 'CANNOT LINK EXECUTABLE "./onnxruntime_perf_test": library "libonnxruntime.so" not found', "ort")
    assert "not executable on the device" in diagnose_start(126, "Permission denied", "executor_runner")
    assert "ELF interpreter or a library is missing" in diagnose_start(127, "not found", "executor_runner")
    msg = runner_failure("executor_runner", 134, "Backend VulkanBackend is not registered.", ["VulkanBackend"], [])
    assert "SIGABRT" in msg and "rebuild executor_runner with -DEXECUTORCH_BUILD_VULKAN=ON" in msg


# --------------------------------------------------------------------------------------------------------------------
# host
# --------------------------------------------------------------------------------------------------------------------


def test_host_bench_both_runtimes_table_plot_and_compare(standin, tmp_path):
    reports = {}
    for rt in ("onnxruntime", "executorch"):
        out = tmp_path / f"{rt}.json"
        args = ["bench", "--artifacts", standin, "--device", "host", "--runtime", rt, "--iterations", "5",
                "--warmup", "2", "--report", out]
        if rt == "executorch":
            args += ["--plot", tmp_path / "host.png", "--steps", "1", "--runs", "2"]
        else:
            args += ["--json"]  # the report on stdout instead of the table
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr
        reports[rt] = json.loads(out.read_text())
        if rt == "executorch":
            assert "per-frame latency, 1 step:" in proc.stdout and "per-frame latency, 2 steps:" in proc.stdout
            assert f"report: {out}" in proc.stdout
        else:
            assert json.loads(proc.stdout) == [reports[rt]]
    ort, et = reports["onnxruntime"], reports["executorch"]
    assert ort["schema"] == "mi2v.bench/1" and ort["status"] == "ok" and ort["error"] is None
    assert ort["device"]["transport"] == "host" and ort["device"]["simulated_device"] is False
    assert ort["artifacts"]["preset"] == "tiny" and ort["frames"] == 9
    for r, runs, fmt, backend in ((ort, 1, "onnx", "cpu"), (et, 2, "pte", "xnnpack")):
        for c in r["components"]:
            assert c["status"] == "ok" and c["artifact"]["format"] == fmt and c["runtime"]["backend"] == backend
            assert c["artifact"]["sha256"] and c["artifact"]["precision"] == "fp32"
            assert len(c["runs"]) == runs and all(len(run["samples_ms"]) == 5 and len(run["warmup_ms"]) == 2
                                                  for run in c["runs"])
            lat = c["summary"]["latency_ms"]
            assert lat["n"] == 5 * runs and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
            assert c["summary"]["load_ms"]["median"] > 0 and c["summary"]["peak_rss_kb"] > 0
        med = {c["component"]: c["summary"]["latency_ms"]["p50"] for c in r["components"]}
        for steps in (1, 2):
            want = (med["encoder"] + steps * med["denoiser"] + med["decoder"]) / 9
            assert r["per_frame_ms"][str(steps)] == pytest.approx(want)
    assert et["headline"]["steps"] == 1 and et["headline"]["per_frame_ms"] == et["per_frame_ms"]["1"]
    assert any("not pinned" in u for u in ort["conditions"]["uncontrolled"])
    assert (tmp_path / "host.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    proc = run_cli("bench", "compare", tmp_path / "onnxruntime.json", tmp_path / "executorch.json")
    assert proc.returncode == 0, proc.stderr
    assert "per-frame ms (2 steps)" in proc.stdout and "denoiser p50 ms" in proc.stdout and "×" in proc.stdout
    rows = json.loads(run_cli("bench", "compare", tmp_path / "onnxruntime.json", tmp_path / "executorch.json",
                              "--json").stdout)
    row = next(r for r in rows if r["metric"] == "per-frame ms (2 steps)")
    assert row["ratio"] == pytest.approx(et["per_frame_ms"]["2"] / ort["per_frame_ms"]["2"])


def test_host_errors_are_one_line(standin, tmp_path):
    proc = run_cli("bench", "--artifacts", tmp_path / "nowhere", "--device", "host")
    assert proc.returncode == 2 and "no such artifacts folder" in _one_error_line(proc)
    proc = run_cli("bench", "--artifacts", standin, "--device", "phone")
    assert proc.returncode == 2 and "not host, adb, adb:SERIAL or ios:UDID" in _one_error_line(proc)
    proc = run_cli("bench", "--artifacts", standin, "--steps", "4")
    assert proc.returncode == 2 and "'--steps': Input should be less than or equal to 2" in _one_error_line(proc)
    # a file changed after export: that component fails, the others are measured, the report is partial
    tampered = derive(standin, tmp_path / "tampered", keep=lambda e: e.target == "onnx")
    with open(tampered / "decoder.onnx", "ab") as fh:
        fh.write(b"\0")
    out = tmp_path / "t.json"
    proc = run_cli("bench", "--artifacts", tampered, "--iterations", "2", "--warmup", "0", "--report", out)
    assert proc.returncode == 2
    assert "decoder: " in _one_error_line(proc) and "changed after export" in proc.stderr
    rep = json.loads(out.read_text())
    assert rep["status"] == "partial" and [c["status"] for c in rep["components"]] == ["ok", "ok", "failed"]
    assert rep["per_frame_ms"] == {"1": None, "2": None}


# --------------------------------------------------------------------------------------------------------------------
# the simulated phone through the real adb client and server
# --------------------------------------------------------------------------------------------------------------------


def test_adb_flow_on_the_simulated_phone(adb, phone, standin, tmp_path):
    out = tmp_path / "phone.json"
    args = ["bench", "--artifacts", standin, "--device", f"adb:{phone.serial}", *_adb_args(adb),
            "--iterations", "4", "--warmup", "2", "--cooldown", "0"]
    proc = run_cli(*args, "--runtime", "executorch", "--report", out, env=adb.env)
    assert proc.returncode == 0, proc.stderr
    assert "per-frame latency, 2 steps:" in proc.stdout and "simulated phone" in proc.stdout
    rep = json.loads(out.read_text())
    dev = rep["device"]
    assert dev["simulated_device"] is True and dev["transport"] == "adb" and dev["serial"] == phone.serial
    assert dev["model"] == "Simulated Phone" and dev["abi"] == host_abi() and dev["os_version"] == "15"
    assert dev["cpus"] and dev["max_khz"] and dev["governors"] and dev["toybox_time"] is True
    assert rep["conditions"]["before"]["thermal_status"] == 0 and rep["conditions"]["before"]["battery"]["temp_c"]
    assert rep["conditions"]["after"]["temps_c"]["AP"] == 36.5
    assert any("simulated phone" in u for u in rep["conditions"]["uncontrolled"])
    assert rep["host"]["adb"]["version"].startswith("1.0.")
    remote = rep["staging"]["remote_dir"]
    assert remote.startswith("/data/local/tmp/mi2v/") and sorted(rep["staging"]["pushed"]) == sorted(
        ["encoder.pte", "denoiser.pte", "decoder.pte"])  # the runner is the one the phone has on its PATH
    local_remote = phone.root / remote.lstrip("/")
    assert (local_remote / "denoiser.pte").read_bytes() == (standin / "denoiser.pte").read_bytes()
    for c in rep["components"]:
        assert c["status"] == "ok", c
        assert c["runtime"]["runner"] == "executor_runner" and c["runtime"]["runner_source"] == "device PATH"
        assert c["runtime"]["runner_path"] == "/system/bin/executor_runner"
        assert len(c["runtime"]["runner_sha256"]) == 64 and c["runtime"]["backend"] == "xnnpack"
        run = c["runs"][0]
        assert len(run["samples_ms"]) == 4 and len(run["warmup_ms"]) == 2 and run["exit_code"] == 0
        assert run["load_ms"] > 0 and run["peak_rss_kb"] > 10_000 and run["peak_rss_method"] == "toybox-time"
        assert c["conditions"]["before"]["thermal_status"] == 0 and "after" in c["conditions"]
        # the test vectors' inputs went through the phone's runner (--inputs / --output_file) and came back right
        check = c["output_check"]
        assert check["passed"] is True and check["runtime"] == "executor_runner/xnnpack" and check["rel_l2"] <= 1e-4
    assert rep["per_frame_ms"]["1"] > 0 and rep["per_frame_ms"]["2"] > rep["per_frame_ms"]["1"]
    if rep["protocol"]["affinity_mask"]:  # the phone has the host's cores: pinned only with frequency clusters
        assert rep["protocol"]["affinity_granted"]
    else:
        assert any("CPU affinity" in u for u in rep["conditions"]["uncontrolled"])

    # the encoder again, with an ETDump: runner and model are already there (same sha256), nothing is pushed
    out2 = tmp_path / "again.json"
    proc = run_cli(*args, "--runtime", "executorch", "--component", "encoder", "--etdump", "--report", out2,
                env=adb.env)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(out2.read_text())
    assert again["staging"]["remote_dir"] == remote and again["staging"]["pushed"] == []
    assert again["staging"]["already_there"] == ["encoder.pte"]
    etdump = out2.parent / again["components"][0]["runtime"]["etdump"]
    assert etdump.is_file() and etdump.stat().st_size > 0  # the separate profiling run's ETDump, pulled

    # ONNX Runtime, pinned to core 0 with an explicit mask; the .onnx external-data files travel with the models
    out3 = tmp_path / "ort.json"
    proc = run_cli(*args, "--runtime", "onnxruntime", "--cpu-mask", "1", "--report", out3, env=adb.env)
    assert proc.returncode == 0, proc.stderr
    ort = json.loads(out3.read_text())
    assert ort["protocol"]["affinity_mask"] == "1" and ort["protocol"]["affinity_granted"] == "0"
    assert ort["protocol"]["threads"] == 1
    assert {"decoder.onnx", "decoder.onnx.data"} <= set(ort["staging"]["pushed"])
    for c in ort["components"]:
        assert c["status"] == "ok" and c["runtime"]["runner"] == "onnxruntime_perf_test"
        run = c["runs"][0]
        assert len(run["samples_ms"]) == 4 and len(run["warmup_ms"]) == 2 and run["first_iteration_ms"] is not None
        assert run["threads"] == 1 and run["peak_rss_method"] == "toybox-time"


def _tamper_weights(folder: Path, name: str) -> None:
    """Overwrite 4 KiB in the middle of an artifact (its weights) and record the new file in the manifest, so only
    the output check can tell."""
    path = folder / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = b"\x7f" * 4096
    path.write_bytes(bytes(data))
    raw = json.loads((folder / "manifest.json").read_text())
    for e in raw["components"]:
        if e["file"] == name:
            e["sha256"], e["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (folder / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("where", ["host", pytest.param("phone", marks=pytest.mark.heavy)])  # phone: 16 s
def test_a_tampered_artifact_fails_the_output_check(adb, phone, standin, tmp_path, where):
    folder = derive(standin, tmp_path / "art", keep=lambda e: e.target == "executorch")
    _tamper_weights(folder, "denoiser.pte")
    device = "host" if where == "host" else f"adb:{phone.serial}"
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--artifacts", folder, "--device", device, *_adb_args(adb), "--runtime", "executorch",
                   "--iterations", "2", "--warmup", "0", "--cooldown", "0", "--report", out, env=adb.env)
    assert proc.returncode == 4, proc.stderr
    assert _one_error_line(proc).startswith("error: denoiser: output check failed on ")
    rep = json.loads(out.read_text())  # written all the same
    checks = {c["component"]: (c["status"], c["output_check"]["passed"]) for c in rep["components"]}
    assert checks == {"encoder": ("ok", True), "denoiser": ("failed", False), "decoder": ("ok", True)}
    assert rep["status"] != "ok" and "denoiser" in rep["error"]


def test_old_phone_without_shell_v2(adb, standin, tmp_path):
    # adb loses exit codes and merges stderr there: the exit-code markers still tell success from failure
    with SimulatedPhone(shell_v2=False) as old:
        adb.connect(old.serial)
        try:
            proc, rep = _bench_phone(adb, old, standin, tmp_path, "--runtime", "onnxruntime", "--component",
                                     "encoder")
            assert proc.returncode == 0, proc.stderr
            assert rep["device"]["shell_v2"] is False and rep["components"][0]["summary"]["latency_ms"]["n"] == 2
            bad = tmp_path / "onnxruntime_perf_test"
            bad.write_text("#!/bin/sh\ncase \"$1\" in -h) echo usage; exit 1;; esac\necho boom >&2; exit 3\n")
            proc, rep = _bench_phone(adb, old, standin, tmp_path, "--runtime", "onnxruntime", "--component",
                                     "encoder", "--runner", bad, name="bad.json")
            assert proc.returncode == 5 and "onnxruntime_perf_test failed (exit 3): boom" in _one_error_line(proc)
        finally:
            adb.disconnect(old.serial)


def test_without_toybox_time_vmhwm_is_polled(adb, phone, standin, tmp_path):
    from mi2v_export.devices.android_session import AndroidSession, StagedFile
    from mi2v_export.files import sha256_file

    session = AndroidSession(adb, adb.pick_device(phone.serial))
    session.fingerprint()
    assert session.has_toybox_time
    session.has_toybox_time = False  # as on a phone whose toybox lacks `time`
    runner = session.find_runner("executor_runner", [], standin)
    session.set_remote_dir([StagedFile(runner.local, runner.name, runner.sha256)])
    session.prepare_runner(runner)
    model = standin / "encoder.pte"
    session.stage([StagedFile(model, model.name, sha256_file(model))])
    run, text = session.run_executorch(runner, "encoder.pte", None, 1, 3, timeout=120)
    assert len(run.samples_ms) == 3 and run.peak_rss_method == "vmhwm-poll" and run.peak_rss_kb > 10_000
    assert "Max RSS" not in text and "__MI2V" not in text


def test_no_device(tmp_path, standin):
    empty = private_adb(tmp_path / "home")
    try:
        out = tmp_path / "r.json"
        proc = run_cli("bench", "--artifacts", standin, "--device", "adb", *_adb_args(empty), "--report", out,
                    env=empty.env)
        assert proc.returncode == 5
        assert "no Android device is connected" in _one_error_line(proc) and "report:" not in proc.stderr
        assert not out.exists() and proc.stdout == ""  # nothing was measured: no report, no empty table
    finally:
        empty.kill_server()


@pytest.mark.parametrize("state", ["unauthorized", "offline"])
def test_unauthorized_and_offline(adb, standin, tmp_path, state):
    with SimulatedPhone(state=state) as p:
        assert adb.connect(p.serial, timeout=2).state == state
        try:
            proc = run_cli("bench", "--artifacts", standin, "--device", f"adb:{p.serial}", *_adb_args(adb), "--report",
                        tmp_path / "r.json", env=adb.env)
            line = _one_error_line(proc)
            assert proc.returncode == 5
            if state == "unauthorized":
                assert "unauthorized: unlock the phone and accept the 'Allow USB debugging?' dialog" in line
            else:
                assert "offline: reconnect the cable or run `adb reconnect`" in line
            assert not (tmp_path / "r.json").exists()  # the phone never answered: no empty report
        finally:
            adb.disconnect(p.serial)


def test_several_devices_need_a_serial(adb, phone, standin, tmp_path):
    with SimulatedPhone() as other:
        adb.connect(other.serial)
        try:
            proc = run_cli("bench", "--artifacts", standin, "--device", "adb", *_adb_args(adb), "--report",
                        tmp_path / "r.json", env=adb.env)
            assert proc.returncode == 5
            assert "several devices are connected" in _one_error_line(proc) and "--device adb:SERIAL" in proc.stderr
        finally:
            adb.disconnect(other.serial)


def test_full_storage_gives_a_partial_report(adb, standin, tmp_path):
    # room for the encoder and the denoiser (and, for a while, the encoder's test-vector inputs, pushed for the
    # output check and removed after it), not for the decoder: two are measured, the decoder fails clearly
    from mi2v_export import testvectors
    from mi2v_export.manifest import read_manifest

    sizes = {n: (standin / n).stat().st_size for n in ("encoder.pte", "denoiser.pte", "decoder.pte")}
    vectors = testvectors.read(standin, read_manifest(standin).find("encoder", target="executorch"))
    slack = sum(a.nbytes for a in vectors[0].inputs.values()) + 50_000
    free = sizes["encoder.pte"] + sizes["denoiser.pte"] + slack
    assert sizes["decoder.pte"] > slack
    with SimulatedPhone(storage_free_bytes=free) as p:
        adb.connect(p.serial)
        try:
            out = tmp_path / "r.json"
            proc = run_cli("bench", "--artifacts", standin, "--device", f"adb:{p.serial}", *_adb_args(adb),
                        "--runtime", "executorch", "--iterations", "2", "--warmup", "1", "--cooldown", "0",
                        "--report", out, env=adb.env)
            assert proc.returncode == 5
            line = _one_error_line(proc)
            assert "decoder: device" in line and "ran out of storage while pushing decoder.pte" in line
            assert "free space" in line and f"report: {out}" in line
            rep = json.loads(out.read_text())
            assert rep["status"] == "partial" and rep["error"] == line[len("error: "):].split(" (report:")[0]
            status = {c["component"]: c["status"] for c in rep["components"]}
            assert status == {"encoder": "ok", "denoiser": "ok", "decoder": "failed"}
            assert rep["components"][0]["summary"]["latency_ms"]["n"] == 2
        finally:
            adb.disconnect(p.serial)


def _bench_phone(adb, phone, artifacts, tmp_path, *extra, name="r.json"):
    out = tmp_path / name
    proc = run_cli("bench", "--artifacts", artifacts, "--device", f"adb:{phone.serial}", *_adb_args(adb),
                "--iterations", "2", "--warmup", "1", "--cooldown", "0", "--report", out, *extra, env=adb.env)
    rep = json.loads(out.read_text()) if out.exists() else None
    return proc, rep


def test_runner_missing_not_executable_wrong_architecture(adb, phone, standin, tmp_path):
    pte = derive(standin, tmp_path / "pte", keep=lambda e: e.target == "executorch" and e.component == "encoder")
    proc, rep = _bench_phone(adb, phone, pte, tmp_path, "--runner", tmp_path / "nope" / "executor_runner")
    assert proc.returncode == 5 and "does not exist: build executor_runner" in _one_error_line(proc)
    assert rep["components"][0]["status"] == "failed"
    notes = tmp_path / "executor_runner"
    notes.write_text("this is a README, not a program\n")
    proc, rep = _bench_phone(adb, phone, pte, tmp_path, "--runner", notes)
    assert proc.returncode == 5 and "is not executable (neither an ELF binary nor a #! script)" in _one_error_line(
        proc)
    (tmp_path / "script").mkdir()
    script = tmp_path / "script" / "executor_runner"
    script.write_text("#!/no/such/interpreter\n")  # the phone is asked whether it has the interpreter: it has not
    proc, rep = _bench_phone(adb, phone, pte, tmp_path, "--runner", script)
    assert proc.returncode == 5 and "the device has no /no/such/interpreter" in _one_error_line(proc)
    (tmp_path / "arm").mkdir()
    arm = _elf_stub(tmp_path / "arm" / "executor_runner", machine=183 if host_abi() != "arm64-v8a" else 62)
    proc, rep = _bench_phone(adb, phone, pte, tmp_path, "--runner", arm)
    line = _one_error_line(proc)
    assert proc.returncode == 5 and "has the wrong architecture" in line and f"the device runs {host_abi()}" in line
    assert rep["staging"] == {} or rep["staging"].get("pushed") == []  # refused before anything was pushed


def test_simulated_phone_with_a_foreign_abi_needs_a_matching_runner(adb, standin, tmp_path):
    # a profile can make the simulated phone an arm64 one: then it has no runner on its PATH, and a real binary of
    # this machine (the Python interpreter, renamed) is refused by its ELF header
    from mi2v_export.simulator.phone import DeviceProfile

    foreign = "arm64-v8a" if host_abi() != "arm64-v8a" else "x86_64"
    with SimulatedPhone(profile=DeviceProfile(abi=foreign)) as p:
        adb.connect(p.serial)
        try:
            pte = derive(standin, tmp_path / "pte", keep=lambda e: e.file == "encoder.pte")
            proc, rep = _bench_phone(adb, p, pte, tmp_path)
            assert proc.returncode == 5 and f"no executor_runner for {foreign}: build it" in _one_error_line(proc)
            host_binary = tmp_path / "bin" / "executor_runner"
            host_binary.parent.mkdir()
            shutil.copyfile(os.path.realpath(sys.executable), host_binary)
            proc, rep = _bench_phone(adb, p, pte, tmp_path, "--runner", host_binary)
            line = _one_error_line(proc)
            assert proc.returncode == 5 and "has the wrong architecture: it is 64-bit" in line
            assert f"but the device runs {foreign}" in line and rep["device"]["abi"] == foreign
        finally:
            adb.disconnect(p.serial)


def test_runner_crash_and_missing_delegate(adb, phone, standin, tmp_path):
    # a runner that starts (its --help works) and dies with SIGSEGV on the real run
    crash = tmp_path / "crash" / "executor_runner"
    crash.parent.mkdir()
    crash.write_text("#!/bin/sh\n"
                     "for a; do if [ \"$a\" = --help ]; then\n"
                     "  printf '    -model_path (m) type: string\\n    -num_executions (n) type: uint32\\n'\n"
                     "  printf '    -print_output (p) type: string\\n'; exit 1; fi; done\n"
                     "echo 'I 00:00:00.000100 executorch:executor_runner.cpp:383] Model file m is loaded.' >&2\n"
                     "kill -SEGV $$\n")
    pte = derive(standin, tmp_path / "pte", keep=lambda e: e.target == "executorch")
    proc, rep = _bench_phone(adb, phone, pte, tmp_path, "--runner", crash, "--component", "encoder")
    line = _one_error_line(proc)
    assert proc.returncode == 5 and "encoder: executor_runner crashed with SIGSEGV (exit 139)" in line
    enc = rep["components"][0]
    assert enc["status"] == "failed" and (tmp_path / enc["runtime"]["failure_log"]).read_text().count("loaded")

    # a .pte delegated to Vulkan on a runner built without it: the real runner logs and aborts (ET_CHECK_MSG)
    def vulkan(e, dst):
        with open(dst / e.file, "ab") as fh:
            fh.write(b"VulkanBackend")  # the delegate id the runner scans for; the program still loads
        from mi2v_export.files import file_digest

        e.delegate = "vulkan"
        e.sha256, e.bytes = file_digest(dst / e.file)

    vk = derive(standin, tmp_path / "vk", keep=lambda e: e.target == "executorch", edit=lambda e, d: vulkan(e, d)
                if e.component == "decoder" else None)
    proc, rep = _bench_phone(adb, phone, vk, tmp_path, name="vk.json")
    line = _one_error_line(proc)
    assert proc.returncode == 5 and "decoder: executor_runner crashed with SIGABRT (exit 134)" in line
    assert "delegated to VulkanBackend" in line and "-DEXECUTORCH_BUILD_VULKAN=ON" in line
    assert rep["status"] == "partial"
    assert [c["status"] for c in rep["components"]] == ["ok", "ok", "failed"]
    assert rep["per_frame_ms"]["2"] is None


def test_timeout_kills_the_run_and_goes_on(adb, phone, standin, tmp_path):
    pte = derive(standin, tmp_path / "pte", keep=lambda e: e.target == "executorch" and e.component != "decoder")
    t0 = time.monotonic()
    out = tmp_path / "r.json"
    proc = run_cli("bench", "--artifacts", pte, "--device", f"adb:{phone.serial}", *_adb_args(adb), "--iterations",
                "1000000", "--warmup", "0", "--timeout", "4", "--cooldown", "0", "--report", out, env=adb.env)
    assert time.monotonic() - t0 < 120
    line = _one_error_line(proc)
    assert proc.returncode == 5 and "encoder: timeout: executor_runner did not finish the encoder within 4 s" in line
    assert "raise --timeout or lower --iterations" in line
    rep = json.loads(out.read_text())
    assert [c["status"] for c in rep["components"]][:2] == ["failed", "failed"]  # both hit the limit
    assert rep["components"][2]["status"] == "skipped" and "no decoder" in rep["components"][2]["error"]
    deadline = time.monotonic() + 15
    while phone._procs and time.monotonic() < deadline:  # adb hung up: the phone killed the runner
        time.sleep(0.2)
    assert not phone._procs


# --------------------------------------------------------------------------------------------------------------------
# the real tiny preset (slow: XNNPACK lowering of the real components takes minutes on 2 cores)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_preset_host_and_simulated_phone(request, adb, phone, tmp_path):
    pytest.importorskip("mi2v_export.exporters.orchestrate")
    tiny = cache.cached(request.config, "tiny-preset", _tiny_preset_export, inspect.getsource(_tiny_preset_export))
    for device in ("host", f"adb:{phone.serial}"):
        for rt in ("onnxruntime", "executorch"):
            out = tmp_path / f"{rt}-{device.replace(':', '_')}.json"
            proc = run_cli("bench", "--artifacts", tiny, "--device", device, *_adb_args(adb), "--runtime", rt,
                        "--iterations", "5", "--warmup", "2", "--cooldown", "0", "--report", out, env=adb.env)
            assert proc.returncode == 0, proc.stderr
            rep = json.loads(out.read_text())
            assert rep["status"] == "ok" and rep["per_frame_ms"]["2"] > 0
            assert rep["device"]["simulated_device"] is (device != "host")
            for c in rep["components"]:  # outputs on the test vectors, where they were timed
                check = c["output_check"]
                if device != "host" and rt == "onnxruntime":  # onnxruntime_perf_test returns no outputs
                    assert check["passed"] is None and "onnxruntime_perf_test" in check["reason"]
                else:
                    assert check["passed"] is True and check["rel_l2"] <= 1e-4 and check["sets"] >= 1, c
                    assert check["runtime"] == ("executor_runner/xnnpack" if device != "host" and rt == "executorch"
                                                else {"onnxruntime": "onnxruntime",
                                                      "executorch": "executorch-xnnpack"}[rt])
    # the .pte the phone gets computes something else than its test vectors say: the run fails on that component
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny, tampered)
    _tamper_weights(tampered, "denoiser.pte")
    out = tmp_path / "tampered.json"
    proc = run_cli("bench", "--artifacts", tampered, "--device", f"adb:{phone.serial}", *_adb_args(adb), "--runtime",
                   "executorch", "--iterations", "2", "--warmup", "0", "--cooldown", "0", "--report", out, env=adb.env)
    assert proc.returncode == 4 and "denoiser: output check failed on executor_runner/xnnpack" in proc.stderr
    rep = json.loads(out.read_text())  # the report is still written
    checks = {c["component"]: c["output_check"]["passed"] for c in rep["components"]}
    assert checks == {"encoder": True, "denoiser": False, "decoder": True} and rep["status"] != "ok"


def test_report_reads_back(standin, tmp_path):
    outcome = run_bench(BenchOptions(artifacts=standin, runtime="onnxruntime", iterations=2, warmup=0,
                                     components=("encoder",), json_path=tmp_path / "e.json"))
    [(report, path)] = outcome.reports
    assert outcome.error is None and report.per_frame_ms(2) is None  # only the encoder was asked for: no headline
    again = BenchReport.load(path)
    assert again.component("encoder").status == "ok" and again.artifacts["preset"] == "tiny"


def test_two_phones_on_two_adb_servers_are_benched_at_once(standin, tmp_path):
    """`--device adb:all` over two adb servers (as if on two lab machines, reached with -H/-P), then the same two
    phones named by serial: one report per phone, a comparison, and the two benches overlapping in time."""
    from tests.conftest import private_adb

    servers = [private_adb(tmp_path / "home-a"), private_adb(tmp_path / "home-b")]
    try:
        with SimulatedPhone() as pa, SimulatedPhone() as pb:
            for server, p in zip(servers, (pa, pb)):
                assert server.connect(p.serial).state == "device"
            where = [a for s in servers for a in ("--adb-server", f"127.0.0.1:{s.server_port}")]
            common = ["--artifacts", standin, "--adb", servers[0].path, *where, "--runtime", "onnxruntime",
                      "--iterations", "3", "--warmup", "1", "--cooldown", "0"]
            proc = run_cli("bench", "--device", "adb:all", *common, "--report", tmp_path / "all.json", "--json",
                           env=servers[0].env)
            assert proc.returncode == 0, proc.stderr
            rows = json.loads(proc.stdout)["phones"]
            labels = [f"{p.serial}@127.0.0.1:{s.server_port}" for s, p in zip(servers, (pa, pb))]
            assert sorted(r["phone"] for r in rows) == sorted(labels)
            for r in rows:
                rep = json.loads(Path(r["report"]).read_text())
                assert r["phone"].startswith(rep["device"]["serial"]) and rep["device"]["simulated_device"]
                assert all(c["status"] == "ok" for c in rep["components"])
                assert r["per_frame_ms_2_step"] > 0 and r["status"] == "ok"
            assert len({r["report"] for r in rows}) == 2
            assert max(r["started_at"] for r in rows) < min(r["finished_at"] for r in rows)  # concurrently
            proc = run_cli("bench", "--device", f"adb:{pa.serial},{pb.serial}", *common,
                           "--report", tmp_path / "two.json", env=servers[0].env)
            assert proc.returncode == 0, proc.stderr
            assert "phones side by side" in proc.stdout and proc.stdout.count("simulated phone") >= 2
            assert len(list(tmp_path.glob("two-*.json"))) == 2
            proc = run_cli("bench", "--device", f"adb:{pa.serial},nosuchphone", *common, env=servers[0].env)
            assert proc.returncode == 5 and "nosuchphone is not attached" in _one_error_line(proc)
    finally:
        for s in servers:
            s.kill_server()
