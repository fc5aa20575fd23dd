"""Ahead-of-time NPU compilation of a `.tflite` (`--target litert --delegate qualcomm|mediatek|google-tensor`).

Wraps ai-edge-litert's `aot_compile` for one vendor's target (a `Target(SocModel.<SOC>)` of that vendor): its MLIR
transforms, then the vendor's compiler plugin, which partitions the graph and compiles the NPU part (ops the NPU
refuses stay on the CPU). The result holds one model per SoC with its partition statistics, and the backends
that failed.

Why a pre-check: the vendor backends import the SDK package and, when it is missing, silently pass no SDK path;
the compiler then fails with "apply_plugin failed to apply plugin. See /tmp/....error". The SDK packages are
source-only; their build step downloads the SDK from the vendor, and the Qualcomm / MediaTek ones still install
(without their `data/` folder) when that download fails. So `check_sdk` looks for the SDK files themselves,
without importing anything. The SDK packages are versioned in lockstep with ai-edge-litert, so the pin is the
installed ai-edge-litert version. Sources: docs/guides/litert.md#sources.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mi2v_export.errors import BadInputError, Mi2vError, MissingDependencyError


@dataclass(frozen=True)
class NpuVendor:
    name: str  # the --delegate value
    description: str  # the vendor SDK the compiler plugin needs
    package: str  # pip distribution that downloads it at install time
    sdk_check: str  # the module the aot backend imports for the SDK path (`path_to_sdk_libs()`)
    sdk_files: tuple[str, ...]  # under that module's folder: any one present means the SDK was downloaded
    source: str  # where the package's build step downloads the SDK from
    default_soc: str | None  # None: every SoC the backend lists (SocModel.ALL), one file each
    backend_id: str  # aot Target.backend_id() / the registered backend id
    target_module: str  # module holding Target and SocModel
    env_var: str | None = None  # the backend's fallback when the SDK package is not importable


VENDORS: dict[str, NpuVendor] = {v.name: v for v in (
    NpuVendor("qualcomm", "the Qualcomm AI Runtime (QAIRT) SDK", "ai-edge-litert-sdk-qualcomm",
              "ai_edge_litert_sdk_qualcomm", ("data/lib/x86_64-linux-clang/libQnnHtp.so",),
              "softwarecenter.qualcomm.com", "SM8650",  # the project's Qualcomm default (mi2v_export.qnn)
              "qualcomm", "ai_edge_litert.aot.vendors.qualcomm.target"),
    NpuVendor("mediatek", "the MediaTek NeuroPilot SDK", "ai-edge-litert-sdk-mediatek",
              "ai_edge_litert_sdk_mediatek", ("data/v8_0_10/host/lib", "data/v9_0_3/host/lib"),
              "MediaTek's NeuroPilot download bucket", None,
              "mediatek", "ai_edge_litert.aot.vendors.mediatek.target"),
    NpuVendor("google-tensor", "the Google Tensor ML SDK compiler", "ai-edge-litert-sdk-google-tensor",
              "ai_edge_litert_sdk_google_tensor", ("data/liblitert_plugin_compiler.so",),
              "Google (redirector.gvt1.com)", None,
              "GOOGLE", "ai_edge_litert.aot.vendors.google_tensor.target", "GOOGLE_TENSOR_COMPILER_LIB"),
)}


def _vendor(name: str) -> NpuVendor:
    """The vendor entry, or a one-line BadInputError naming the choices."""
    if name not in VENDORS:
        raise BadInputError(f"unknown LiteRT NPU delegate {name!r}; one of: {', '.join(VENDORS)}")
    return VENDORS[name]


def _package_dir(module: str) -> Path | None:
    """Where a package is installed, found by find_spec without executing it (the SDK modules print warnings)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _pin(package: str) -> str:
    """`package==<installed ai-edge-litert version>`: the SDK packages are released in lockstep with it."""
    try:
        return f"{package}=={metadata.version('ai-edge-litert')}"
    except metadata.PackageNotFoundError:
        return package


def check_sdk(vendor: str) -> None:
    """Raise MissingDependencyError (one line, exit 3) unless `vendor`'s AOT compile can find its SDK.

    Mirrors what the backend needs: Linux x86_64 (the only platform the SDK packages and apply_plugin_main
    ship for), ai-edge-litert's `tools/apply_plugin_main`, and the SDK files that `path_to_sdk_libs()` of the
    vendor's SDK package points to (or, for Google Tensor only, the folder in GOOGLE_TENSOR_COMPILER_LIB).
    """
    v = _vendor(vendor)
    flag = f"--delegate {v.name}"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise MissingDependencyError(f"{flag} compiles only on Linux x86_64 (the vendor SDKs and ai-edge-litert's AOT "
                                     f"compiler ship for nothing else; this is {sys.platform} {platform.machine()})")
    litert = _package_dir("ai_edge_litert")
    if litert is None or not (litert / "tools" / "apply_plugin_main").is_file():
        raise MissingDependencyError(f"{flag} needs ai-edge-litert with its AOT compiler "
                                     f"(tools/apply_plugin_main): pip install ai-edge-litert==2.3.0")
    root = _package_dir(v.sdk_check)
    if root is not None and any((root / f).exists() for f in v.sdk_files):
        return
    env_dir = os.environ.get(v.env_var, "") if v.env_var else ""
    if root is None and env_dir and Path(env_dir).is_dir():
        return
    if root is not None:
        raise MissingDependencyError(
            f"{flag}: {v.package} is installed but has no SDK files under {root / 'data'} (its install-time "
            f"download from {v.source} failed); reinstall with network access: "
            f"pip install --force-reinstall --no-cache-dir {_pin(v.package)}")
    alt = f", or set {v.env_var} to a folder holding liblitert_plugin_compiler.so" if v.env_var else ""
    raise MissingDependencyError(
        f"{flag} needs {v.description} through {v.package} (pip install {_pin(v.package)} on Linux x86_64; "
        f"it downloads the SDK from {v.source} at install time, so it needs network access){alt}")


def _soc_model(v: NpuVendor, soc: str | None):
    """The vendor's SocModel member for `soc` (case-insensitive), its default, or ALL."""
    soc_enum = importlib.import_module(v.target_module).SocModel
    wanted = soc or v.default_soc or "ALL"
    for member in soc_enum:
        if member.value.lower() == wanted.lower():
            return member
    names = ", ".join(m.value for m in soc_enum if m.value != "ALL")
    raise BadInputError(f"--delegate {v.name} does not know SoC {wanted!r}; one of: {names}")


def _model_record(backend, model, dest: Path) -> dict:
    """JSON-safe summary of one compiled model: where it went and how many ops the NPU took per subgraph."""
    stats = model.partition_stats.subgraph_stats if model.partition_stats else []
    return {"target": backend.target_id, "soc": str(backend.soc_model.value), "file": dest.name,
            "bytes": dest.stat().st_size,
            "ops_on_npu": sum(s.num_ops_offloaded for s in stats),
            "ops_total": sum(s.num_total_ops for s in stats),
            "subgraphs": [{"index": s.subgraph_index, "ops_on_npu": s.num_ops_offloaded,
                           "ops_total": s.num_total_ops, "npu_partitions": s.num_partitions_offloaded}
                          for s in stats]}


def compile_for_npu(tflite: Path, out_dir: Path, vendor: str, soc: str | None) -> dict:
    """Compile `tflite` for `vendor`'s NPU into `out_dir/<stem>.<vendor>.<SOC>.tflite`, one file per SoC.

    The aot pipeline writes intermediates (`<stem>_<target>_mlir_transforms.tflite`, `..._apply_plugin.tflite`)
    into its output_dir, so it runs in a temporary folder and only the final models are copied out
    (`Model.save(dest, export_only=True)`, as `CompilationResult.export` does). Ops the NPU refuses fall back
    to the CPU inside the same model; the record counts them. Nothing is written unless the SDK is found.
    """
    v = _vendor(vendor)
    check_sdk(vendor)
    if not tflite.is_file() or tflite.suffix != ".tflite":
        raise BadInputError(f"{tflite} is not a .tflite file")
    from ai_edge_litert.aot import aot_compile as aot

    soc_model = _soc_model(v, soc)
    target = importlib.import_module(v.target_module).Target(soc_model)
    with tempfile.TemporaryDirectory(prefix="litert_aot_") as work:
        result = aot.aot_compile(str(tflite), output_dir=work, target=target, keep_going=True)
        models = []
        for backend, model in result.models_with_backend:
            out_dir.mkdir(parents=True, exist_ok=True)
            dest = out_dir / f"{tflite.stem}.{v.name}.{backend.soc_model.value}.tflite"
            model.save(dest, export_only=True)
            models.append(_model_record(backend, model, dest))
    failed = [{"target": b.target_id, "error": msg.splitlines()[0] if msg else ""}
              for b, msg in result.failed_backends]
    if not models:
        detail = failed[0]["error"] if failed else "no model produced"
        raise Mi2vError(f"--delegate {v.name}: the LiteRT AOT compiler failed for {soc_model.value}: {detail}")
    return {"vendor": v.name, "backend": v.backend_id, "soc": soc_model.value, "package": v.package,
            "files": [m["file"] for m in models], "models": models, "failed": failed}
