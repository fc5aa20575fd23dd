"""Qualcomm HTP through onnxruntime's QNN execution provider (the `onnxruntime-qnn` plugin wheel).

The wheel bundles the QNN SDK libraries; on x86_64 its `libQnnHtp.so` is an HTP *simulator* (and the offline
compiler of context binaries for phones). Everything QNN-specific that more than one command needs lives here:
the SoC table, registering the plugin, a session for one SoC with CPU fallback disabled (the proof that every
node runs on the HTP), the list of nodes the HTP refuses, compiling an EPContext model, and the name of the
simulator's runtime (`RUNTIME`, which `verified_on` and `mi2v verify` use; running on it: mi2v_export/runtimes/onnx.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInputError, MissingDependencyError, VerificationError

RUNTIME = "qnn-htp-simulator"
EP_NAME = "QNNExecutionProvider"
DISTRIBUTION = "onnxruntime-qnn"  # the plugin wheel; its pinned version is pyproject.toml's (`wheel()`)


@dataclass(frozen=True)
class SocInfo:
    name: str  # as Qualcomm writes it
    product: str  # marketing name
    soc_model: int  # QNN `soc_model` id
    htp_arch: int  # Hexagon tensor processor generation (v69, v73, ...)


# The one table of supported SoCs (QNN SDK soc_model ids; each compiles and runs on the 2.51 simulator here).
SOCS: dict[str, SocInfo] = {s.name: s for s in (
    SocInfo("SM8450", "Snapdragon 8 Gen 1", 36, 69),
    SocInfo("SM8475", "Snapdragon 8+ Gen 1", 42, 69),
    SocInfo("SM8550", "Snapdragon 8 Gen 2", 43, 73),
    SocInfo("SM8650", "Snapdragon 8 Gen 3", 57, 75),
    SocInfo("SM8750", "Snapdragon 8 Elite", 69, 79),
)}
DEFAULT_SOC = "SM8650"


def soc_info(name: str) -> SocInfo:
    """The table row of a SoC name (case-insensitive); BadInputError listing the supported ones otherwise."""
    key = (name or "").strip().upper()
    if key not in SOCS:
        raise BadInputError(f"unknown SoC {name!r}; supported: "
                            + ", ".join(f"{s.name} ({s.product})" for s in SOCS.values()))
    return SOCS[key]


# ---------------------------------------------------------------------------------------------------------------
# The plugin


def wheel() -> str:
    """The pip requirement of the plugin as mi2v pins it (read from mi2v-export's installed metadata, whose source
    is pyproject.toml), e.g. "onnxruntime-qnn==2.7.0"; the bare name when mi2v is not installed."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        pins = requires("mi2v-export") or []
    except PackageNotFoundError:
        pins = []
    return next((p.split(";")[0].strip() for p in pins if p.startswith(DISTRIBUTION)), DISTRIBUTION)


def _plugin():
    try:
        import onnxruntime_qnn
    except ImportError:
        raise MissingDependencyError(f"the QNN path needs the onnxruntime-qnn wheel (pip install {wheel()})") \
            from None
    return onnxruntime_qnn


def check_available() -> None:
    """MissingDependencyError with one line when the wheel (or its HTP library) is absent."""
    plugin = _plugin()
    if not Path(plugin.get_library_path()).is_file() or not Path(plugin.get_qnn_htp_path()).is_file():
        raise MissingDependencyError(f"onnxruntime-qnn is installed but incomplete (no {plugin.get_qnn_htp_path()}); "
                                     f"reinstall it: pip install --force-reinstall {wheel()}")


def versions() -> dict:
    """{"qnn_sdk_version": "2.51.0", "onnxruntime_qnn": "2.7.0", "onnxruntime": ...}."""
    import onnxruntime as ort

    plugin = _plugin()
    info = plugin.build_and_package_info
    return {"qnn_sdk_version": getattr(info, "qnn_version", None), "onnxruntime_qnn": plugin.__version__,
            "onnxruntime": ort.__version__}


_registered = False


def register() -> list:
    """Register the plugin with onnxruntime once per process; returns its EP devices."""
    global _registered
    import onnxruntime as ort

    plugin = _plugin()
    if not _registered:
        ort.register_execution_provider_library(EP_NAME, plugin.get_library_path())
        _registered = True
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise MissingDependencyError(f"onnxruntime lists no {EP_NAME} device after loading {plugin.get_library_path()}")
    return devices


# ---------------------------------------------------------------------------------------------------------------
# Sessions


def provider_options(soc: str, fp16: bool) -> dict[str, str]:
    info = soc_info(soc)
    return {"backend_type": "htp", "soc_model": str(info.soc_model), "htp_arch": str(info.htp_arch),
            "enable_htp_fp16_precision": "1" if fp16 else "0",
            "offload_graph_io_quantization": "0"}  # a QDQ model's input Q / output DQ on the HTP too


def session_options(soc: str, *, fp16: bool, allow_cpu_fallback: bool = False, context_file: Path | None = None):
    """SessionOptions for the HTP of `soc`. Without `allow_cpu_fallback`, creating a session fails unless every
    node runs on the HTP. With `context_file`, creating the session writes the EPContext model there (context
    binary beside it, not embedded)."""
    return session_options_for(provider_options(soc, fp16), allow_cpu_fallback=allow_cpu_fallback,
                           context_file=context_file)


def session_options_for(options: dict[str, str], *, allow_cpu_fallback: bool = False, context_file: Path | None = None):
    """SessionOptions for the QNN EP with these provider options (`provider_options`, or the `-i "key|value"`
    pairs a runner was given); `session_options` for the behaviour."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_provider_for_devices(register(), dict(options))
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "0" if allow_cpu_fallback else "1")
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if context_file is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context_file))
        so.add_session_config_entry("ep.context_embed_mode", "0")
    return so


def create_session(model: Path, soc: str, *, fp16: bool, allow_cpu_fallback: bool = False,
                   context_file: Path | None = None):
    import onnxruntime as ort

    so = session_options(soc, fp16=fp16, allow_cpu_fallback=allow_cpu_fallback, context_file=context_file)
    with _native_stderr_silenced():
        return ort.InferenceSession(str(model), sess_options=so)


@contextlib.contextmanager
def _native_stderr_silenced():
    """The QNN libraries print banners and per-node warnings on fd 2; keep the CLI's stderr readable."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass
class Placement:
    """Which nodes of a model run on the HTP and which the QNN EP left to onnxruntime's CPU EP."""

    htp_nodes: list[str]
    cpu_nodes: list[tuple[str, str]]  # (node name, op type)

    @property
    def htp_node_share(self) -> float:
        total = len(self.htp_nodes) + len(self.cpu_nodes)
        return round(len(self.htp_nodes) / total, 6) if total else 1.0

    def describe_cpu(self, limit: int = 8) -> str:
        by_op = Counter(op for _, op in self.cpu_nodes)
        ops = ", ".join(f"{op} x{n}" for op, n in by_op.most_common())
        names = ", ".join(name for name, _ in self.cpu_nodes[:limit])
        more = f" (+{len(self.cpu_nodes) - limit} more)" if len(self.cpu_nodes) > limit else ""
        return f"{len(self.cpu_nodes)} node(s) the HTP refuses: {ops}; e.g. {names}{more}"


def placement(session) -> Placement:
    """Node placement recorded by a session created with `session_options` (record_ep_graph_assignment_info)."""
    htp, cpu = [], []
    for sub in session.get_provider_graph_assignment_info():
        for node in sub.get_nodes():
            if sub.ep_name == EP_NAME:
                htp.append(node.name)
            else:
                cpu.append((node.name, node.op_type))
    return Placement(htp, cpu)


def compile_context(source: Path, context_file: Path, soc: str, *, fp16: bool,
                    allow_cpu_fallback: bool = False) -> tuple[Placement, float]:
    """Compile `source` for the HTP of `soc` into the EPContext model `context_file` (+ its context binary), in one
    session (compiling is the slow part). Raises VerificationError naming the refused nodes, and removes what it
    wrote, unless every node runs on the HTP or fallback is allowed."""
    t0 = time.perf_counter()
    try:
        session = create_session(source, soc, fp16=fp16, allow_cpu_fallback=True, context_file=context_file)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its pybind errors (EPFail, Fail) here
        raise VerificationError(compile_failure(source, soc, exc)) from None
    seconds = time.perf_counter() - t0
    found = placement(session)
    del session
    if not context_file.is_file():
        raise VerificationError(f"{source.name}: the QNN EP wrote no EPContext model at {context_file}")
    if found.cpu_nodes and not allow_cpu_fallback:
        for f in [*context_binaries(context_file), context_file]:
            f.unlink(missing_ok=True)
        raise VerificationError(f"{source.name}: not all on the HTP of {soc}: {found.describe_cpu()}; "
                                "--allow-cpu-fallback accepts a split graph")
    return found, seconds


def compile_failure(source: Path, soc: str, exc: Exception) -> str:
    """One line for a QNN EP that could not compile `source`; the HTP's out-of-memory gets its remedy."""
    text = " ".join(str(exc).split())[:300]
    if "MEM_ALLOC" in text:
        return (f"{source.name}: the HTP of {soc} cannot hold this graph at this size ({text}); export the VAE "
                "tiled (--tile 64x320 compiles the 720p encoder and Turbo-VAED: docs/guides/qnn.md) or a smaller "
                "--resolution")
    return f"{source.name}: the QNN EP could not compile it for {soc}: {text}"


def context_binaries(context_file: Path) -> list[Path]:
    """The context-binary files an EPContext model refers to (ep_cache_context of its EPContext nodes when
    embed_mode is 0), existing beside it."""
    import onnx

    model = onnx.load(str(context_file), load_external_data=False)
    files = []
    for node in model.graph.node:
        if node.op_type != "EPContext":
            continue
        attrs = {a.name: a for a in node.attribute}
        embedded = attrs.get("embed_mode") is not None and attrs["embed_mode"].i == 1
        if not embedded and "ep_cache_context" in attrs:
            files.append(context_file.parent / attrs["ep_cache_context"].s.decode())
    return files
