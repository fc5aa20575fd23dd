"""The native runners of a phone, on this machine: which file stands for which runner, whether it can run on the
device (checked before anything is pushed), the QNN libraries it needs beside it, and why a run failed, each in one
line with the fix.

A local runner is checked here (exists, ELF class/machine against the device ABI list, not a shared library, and
its ELF interpreter or `#!` interpreter present on the device) before devices/android_session.py pushes it;
`diagnose_start` and `runner_failure` read the shell's exit status and the runner's output afterwards.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInputError, DeviceError
from ..safepath import is_within
from .elf import RunnerFile, inspect_runner, is_shared_library, runs_on
from .benchmark_model import BENCHMARK_MODEL
from .runners import EXECUTOR_RUNNER, ORT_PERF_TEST

RUNNER_FOR_RUNTIME = {"executorch": EXECUTOR_RUNNER, "onnxruntime": ORT_PERF_TEST, "litert": BENCHMARK_MODEL}
# libraries a runner needs beside it (found next to the runner file on this machine and pushed with it)
COMPANION_LIBS = {
    ORT_PERF_TEST: ("libonnxruntime*.so*", "libQnn*.so", "libqnn*.so"),
    EXECUTOR_RUNNER: ("libQnn*.so", "libqnn_executorch_backend.so", "libvulkan_*.so"),
    BENCHMARK_MODEL: ("libLiteRt*.so",),  # a LiteRT 2.x build's runtime library, when not linked in statically
}
README_RUNNERS = "see docs/guides/benchmarking.md, 'Runners for Android'"
QNN_LIBS_SOURCE = ("from the QAIRT SDK (lib/aarch64-android, lib/hexagon-vNN/unsigned) or the Maven package "
                   "com.qualcomm.qti:qnn-runtime; see docs/guides/qnn.md")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class Runner:
    """A runner file on this machine, checked against the device, and where it lives on the device."""

    name: str  # executor_runner | onnxruntime_perf_test (its name on the device)
    local: Path | None  # None: the device already has it (on its PATH)
    sha256: str
    info: RunnerFile | None
    source: str  # --runner | artifacts folder | device PATH
    libs: list[Path] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)  # executor_runner flags seen in --help
    per_iteration: bool = True
    installed: str | None = None  # its path on the device when it was found there

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "runner_path": str(self.local or self.installed), "runner_sha256": self.sha256,
                "runner_source": self.source, "runner_file": self.info.describe() if self.info else None,
                "runner_libs": [p.name for p in self.libs]}


def qnn_run_options(target_info: dict[str, Any]) -> dict[str, str]:
    """The QNN EP options (`-i "key|value ..."`) for an EPContext model: the HTP backend and the SoC facts it was
    compiled for (valid options of onnxruntime's QNN EP on a phone as well)."""
    options = {"backend_type": "htp"}
    if target_info.get("soc_model") is not None:
        options["soc_model"] = str(target_info["soc_model"])
    if target_info.get("htp_arch"):
        options["htp_arch"] = str(target_info["htp_arch"]).lower().lstrip("v")
    return options


def qnn_libraries(abi: str, target_info: dict[str, Any]) -> list[str]:
    """The QNN runtime libraries onnxruntime_perf_test loads for an EPContext model on the HTP: the backend and
    QnnSystem (it reads the context binary), and on an Android ABI the HTP stub and the DSP-side skeleton of the
    artifact's Hexagon generation (an x86_64 phone runs the HTP simulator, which has neither)."""
    libs = ["libQnnHtp.so", "libQnnSystem.so"]
    arch = str(target_info.get("htp_arch") or "").lower().lstrip("v")
    if abi.startswith("arm") and arch:
        libs += [f"libQnnHtpV{arch}Stub.so", f"libQnnHtpV{arch}Skel.so"]
    return libs


def check_qnn_libraries(runner: Runner, abi: str, target_info: dict[str, Any]) -> None:
    """One line naming the QNN libraries missing beside a local runner, and where a user gets them."""
    if runner.local is None:  # a runner the device has on its PATH: its libraries are the device's business
        return
    have = {lib.name for lib in runner.libs}
    missing = [lib for lib in qnn_libraries(abi, target_info) if lib not in have]
    if missing:
        raise DeviceError(f"the QNN EPContext model needs {', '.join(missing)} beside {runner.local} (pushed with "
                          f"it, LD_LIBRARY_PATH and ADSP_LIBRARY_PATH point there): get them {QNN_LIBS_SOURCE}")


def check_runner(path: Path, name: str, abilist: list[str], device_has: Callable[[str], bool]) -> RunnerFile:
    """Refuse a runner that cannot run on the device, with the cause and the fix in one line.

    `device_has(path)`: whether the device has that file; a `#!` script or an ELF binary runs there only when its
    interpreter does (a phone has bionic's linker and /system/bin/sh, not a desktop's loader)."""
    if not path.exists():
        raise DeviceError(f"runner {path} does not exist: build {name} for the phone ({README_RUNNERS}) and pass "
                          "--runner PATH")
    if not path.is_file():
        raise DeviceError(f"runner {path} is not a file: pass the {name} binary itself with --runner")
    try:
        info = inspect_runner(path)
    except OSError as exc:
        raise DeviceError(f"cannot read runner {path} ({exc.strerror}): check its permissions") from None
    abis = ", ".join(abilist) or "unknown"
    if info.kind == "script":
        interpreter = (info.shebang or "").removeprefix("#!").split(maxsplit=1)[:1]
        if interpreter and device_has(interpreter[0]):
            return info
        raise DeviceError(f"runner {path} is a script, not a native binary, and the device has no "
                          f"{interpreter[0] if interpreter else 'interpreter'} to run it: a phone needs {name} "
                          f"cross-compiled for {abilist[0] if abilist else 'its ABI'} ({README_RUNNERS})")
    if info.kind != "elf":
        raise DeviceError(f"runner {path} is not executable (neither an ELF binary nor a #! script): pass the "
                          f"{name} binary from the build folder with --runner")
    if info.elf_type in ("relocatable", "core", "none") or is_shared_library(path, info):
        what = "a shared library" if info.elf_type == "shared" else f"an ELF {info.elf_type} file"
        raise DeviceError(f"runner {path} is {what}, not an executable: pass the {name} program with --runner "
                          "(its .so libraries are pushed from the same folder)")
    if not runs_on(info, abilist):
        raise DeviceError(f"runner {path} has the wrong architecture: it is {info.elf_class}-bit {info.machine}"
                          f"{f' ({info.abi})' if info.abi else ''} but the device runs {abis}; rebuild it for "
                          f"{abilist[0] if abilist else 'the device ABI'} ({README_RUNNERS})")
    if not info.android_linked and not device_has(str(info.interpreter)):
        raise DeviceError(f"runner {path} is linked for desktop Linux (interpreter {info.interpreter}, which the "
                          f"device does not have), not Android: build it with the Android NDK toolchain "
                          f"({README_RUNNERS})")
    return info


def diagnose_start(rc: int, text: str, runner: str) -> str | None:
    """Why a runner process could not start or died, from the shell's exit status and output; None if it ran."""
    m = re.search(r'CANNOT LINK EXECUTABLE[^\n]*library "([^"]+)" not found', text)
    if m:
        return (f"{runner} cannot start: library {m.group(1)} is missing on the device; put it next to the runner "
                "on this machine (it is pushed with it) or link the runner statically")
    if "CANNOT LINK EXECUTABLE" in text:
        line = next(ln for ln in text.splitlines() if "CANNOT LINK EXECUTABLE" in ln)
        return f"{runner} cannot start: {line.strip()}; rebuild it against this Android version"
    if rc == 126 and ("not executable" in text or "Exec format error" in text):
        return (f"{runner} cannot run on this device (exec format error: wrong architecture); rebuild it for the "
                f"device ABI ({README_RUNNERS})")
    if rc == 126:
        return (f"{runner} is not executable on the device (permission denied after chmod 755): /data/local/tmp "
                "may be mounted noexec on this phone, or the file is not a program")
    if rc == 127:
        return (f"{runner} cannot start on the device (exit 127, 'not found'): its ELF interpreter or a library is "
                f"missing — was it built with the Android NDK? ({README_RUNNERS})")
    if 128 < rc < 128 + 65:  # the shell's 128 + signal number (255 is exit(-1), not a signal)
        return f"{runner} crashed with {signal_name(rc - 128)} (exit {rc})"
    return None


class RunnerFailure(DeviceError):
    """The runner ran and failed (non-zero exit, crash, no timings); `log` is its output."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def runner_failure(runner: str, rc: int, text: str, missing_backends: list[str], errors: list[str]) -> str:
    """One line: what went wrong in a runner run and what to do."""
    start = diagnose_start(rc, text, runner)
    if missing_backends:
        b = missing_backends[0]
        flag = {"VulkanBackend": "VULKAN", "QnnBackend": "QNN", "XnnpackBackend": "XNNPACK"}.get(b)
        fix = (f"rebuild {runner} with -DEXECUTORCH_BUILD_{flag}=ON" if flag else f"use a runner that has {b}")
        head = start or f"{runner} failed (exit {rc})"
        return f"{head}: the model is delegated to {b}, which this runner was built without; {fix}"
    detail = _last_meaningful(text, errors)
    if start and 128 < rc < 128 + 65:
        return f"{start}{': ' + detail if detail else ''}; run it by hand on the device to see the full log"
    if start:
        return start
    if "Unable to load backend" in text:
        why = re.search(r"Unable to load backend, error:\s*(.*)", text)
        return (f"{runner} failed: the QNN EP could not load its backend ({why.group(1).strip() if why else 'dlopen'}"
                f"): put libQnnHtp.so, libQnnSystem.so and the HTP stub/skel libraries beside the runner, {QNN_LIBS_SOURCE}")
    if "is not supported in this build" in text:
        return f"{runner} failed: {detail}; build onnxruntime with that execution provider or use -e cpu"
    return f"{runner} failed (exit {rc}){': ' + detail if detail else ''}"


def _last_meaningful(text: str, errors: list[str]) -> str:
    if errors:
        return errors[-1]
    skip = ("Real time", "User time", "System time", "Max RSS", "Major faults", "Minor faults", "File system",
            "Voluntary context", "Involuntary context", "real\t", "user\t", "sys\t")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return lines[-1][:200] if lines else ""


def local_runner(name: str, given: Sequence[Path], artifacts_dir: Path, abilist: Sequence[str]
                 ) -> tuple[Path, str] | None:
    """(path, source) of the runner on this machine: the --runner file of that name, else
    DIR/runners/<abi>/NAME or DIR/NAME built for one of the device's ABIs; None when there is none."""
    matching = [p for p in given if _runner_kind(p) == name]
    if matching:
        return Path(matching[0]), "--runner"
    for abi in abilist:
        for cand in (artifacts_dir / "runners" / abi / name, artifacts_dir / name):
            if cand.is_file() and not is_within(cand, artifacts_dir):  # a symlink planted in a downloaded folder
                raise BadInputError(f"{cand}: leads outside {artifacts_dir} (through a symlink); refused")
            if cand.is_file() and (cand.parent.name == abi or runs_on(inspect_runner(cand), [abi])):
                return cand, "artifacts folder"
    return None


def _runner_kind(path: Path) -> str:
    if "benchmark_model" in path.name:
        return BENCHMARK_MODEL
    return ORT_PERF_TEST if "onnxruntime_perf_test" in path.name or "perf_test" in path.name else EXECUTOR_RUNNER


def runner_kind(path: Path) -> str:
    """Which runner a --runner file stands for, by its name (benchmark_model, onnxruntime_perf_test, else
    executor_runner)."""
    return _runner_kind(path)
