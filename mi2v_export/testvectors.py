"""Test vectors: fixed inputs the sampler really feeds and the PyTorch fp32 outputs, stored beside each artifact in
the format the artifact's own runtime tools read, so the artifact can be checked wherever it is copied.

Inputs (`sampler_inputs`, the first set; the same tensors the export traces and verifies with):
    encoder   a real photo (mi2v_export/data/validation/chelsea.png, the held-out image, never a calibration one)
              through the generate pipeline's `preprocess_image(fit="cover")`
    denoiser  the sampler's seeded initial noise latent, the first timestep of the default schedule
              (`flow_schedule(DEFAULT_STEPS)`, t = 1000) and DEFAULT_FLOW_SCORE; when the latent is small
              (≤ MULTI_SET_MAX_BYTES) one more set per schedule step: the latent after the Euler step with the
              reference velocity and the next timestep (t = 8.93), exactly what the sampler feeds next
    decoder   the sampler's seeded noise latent (the sampler's final latent would need the denoiser and encoder)
Expected outputs are the PyTorch fp32 outputs, stored in the artifact's output dtype (fp16 artifacts: rounded to
fp16); inputs are stored in the artifact's input dtypes.

Formats (each exporter declares its own, `Exporter.test_vector_format`):
    onnx-testdata    DIR/testdata/<component>/test_data_set_N/input_K.pb, output_K.pb: TensorProto, named, inputs
                     in the model's input order (the layout onnx_test_runner reads); ONNX
    bundled-program  DIR/<component>.bpte: an ExecuTorch BundledProgram of the .pte with every set as a test case
    npz              DIR/testdata/<artifact file>.npz (Core ML): keys "set<N>.in.<name>" and "set<N>.out.<name>"

Reading (`read`) needs numpy and onnx (ONNX), numpy only (.npz), or ExecuTorch's Python package (.bpte); never a
model and never torch for ONNX or .npz.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BadInputError, Mi2vError, first_line
from .precision import is_quantized
from .runtimes import dtypes
from .safepath import contained, escape_below

TESTDATA_DIR = "testdata"
IMAGE = Path(__file__).parent / "data" / "validation" / "chelsea.png"
MULTI_SET_MAX_BYTES = 1 << 20  # below this latent size the denoiser gets one set per default sampler step
ROLE = "test_vectors"  # manifest extra_files role of the ONNX folder and the .npz (the .bpte is "bundled_program")
BUNDLE_ROLE = "bundled_program"
ONNX_TESTDATA, BUNDLED_PROGRAM, NPZ = "onnx-testdata", "bundled-program", "npz"  # the formats
FORMATS = (ONNX_TESTDATA, BUNDLED_PROGRAM, NPZ)
INPUTS_DESCRIPTION = {
    "encoder": "photo data/validation/chelsea.png, preprocess_image(fit=cover)",
    "denoiser": "sampler noise latent (seed 0), default-schedule timesteps, default flow_score",
    "decoder": "sampler noise latent (seed 0)",
}


@dataclass
class VectorSet:
    """One input set and its expected outputs, numpy arrays in contract order."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.inputs.values(), *self.outputs.values()))


# ---------------------------------------------------------------------------------------------------------------
# Inputs the sampler feeds (export side: torch and the generate pipeline)


def sampler_inputs(component: str, geo, seed: int = 0) -> dict:
    """The first input set of a component (fp32 torch tensors, contract order)."""
    import torch

    from mi2v_export.pipeline import DEFAULT_FLOW_SCORE, DEFAULT_STEPS, flow_schedule, load_image, preprocess_image

    if component == "encoder":
        return {"image": preprocess_image(load_image(IMAGE), geo.height, geo.width, fit="cover").contiguous()}
    noise = torch.randn(geo.latent_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    if component == "denoiser":
        return {"latent": noise, "timestep": flow_schedule(DEFAULT_STEPS).timesteps[:1].clone(),
                "flow_score": torch.tensor([float(DEFAULT_FLOW_SCORE)])}
    if component == "decoder":
        return {"latent": noise}
    raise ValueError(f"unknown component {component!r}")


def next_sampler_inputs(component: str, step: int, inputs: dict, outputs: dict) -> dict | None:
    """The inputs of sampler step `step` (1, 2, …) given step-1's inputs and reference outputs, or None when the
    component has no further set (encoder, decoder; the denoiser past the schedule or above MULTI_SET_MAX_BYTES)."""
    from mi2v_export.pipeline import DEFAULT_STEPS, flow_schedule

    latent = inputs.get("latent")
    if component != "denoiser" or step >= DEFAULT_STEPS or latent.numel() * 4 > MULTI_SET_MAX_BYTES:
        return None
    sched = flow_schedule(DEFAULT_STEPS)
    nxt = latent + (sched.sigmas[step] - sched.sigmas[step - 1]) * outputs["velocity"]
    nxt[:, :, :1] = latent[:, :, :1]  # the sampler keeps the conditioning frame
    return {"latent": nxt, "timestep": sched.timesteps[step:step + 1].clone(), "flow_score": inputs["flow_score"]}


def to_artifact_dtypes(sets: Sequence[tuple[dict, dict]], inputs, outputs) -> list[VectorSet]:
    """Torch (inputs, reference outputs) pairs → VectorSets in the artifact's I/O dtypes (TensorInfo lists)."""
    in_dtypes = {t.name: np.dtype(t.dtype) for t in inputs}
    out_dtypes = {t.name: np.dtype(t.dtype) for t in outputs}
    out = []
    for ins, outs in sets:
        out.append(VectorSet(
            {n: np.ascontiguousarray(x.detach().cpu().numpy().astype(in_dtypes.get(n, np.float32))) for n, x in ins.items()},
            {n: np.ascontiguousarray(y.detach().cpu().float().numpy().astype(out_dtypes.get(n, np.float32)))
             for n, y in outs.items()}))
    return out


def bundle_tolerances(dtype: str, sets: list[VectorSet]) -> tuple[float, float]:  # dtype: or a precision name
    """(rtol, atol) of a BundledProgram's own elementwise check: about the gates' precision, scaled by the largest
    expected output magnitude (the PSNR / rel-L2 gates of `mi2v verify` are the real check)."""
    peak = max((float(np.max(np.abs(a.astype(np.float64)))) for s in sets for a in s.outputs.values()), default=1.0)
    if dtype == "fp16":
        return 1e-2, 5e-2 * max(peak, 1e-6)
    if is_quantized(dtype):  # integer precisions (and mixed): a sanity bound, PSNR gates decide.
        # Elementwise, one in tens of millions of outputs decides: the 720p Turbo-VAED w8a8 (47 M outputs, 30 dB)
        # had outliers over 0.3x the peak, so the bound is the output's own peak (finite, the right scale).
        return 1e-1, 1.0 * max(peak, 1e-6)
    return 1e-3, 1e-3 * max(peak, 1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Writing


def write(fmt: str, component: str, artifact_file: str, dtype: str, sets: list[VectorSet],
          folder: Path) -> tuple[dict, dict[str, str]]:
    """Write the vectors of one artifact into `folder` (the staging folder) in format `fmt` (one of FORMATS, the
    artifact's exporter's `test_vector_format`): (manifest record, {role: file})."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown test-vector format {fmt!r}; one of {', '.join(FORMATS)}")
    tolerances = bundle_tolerances(dtype, sets) if fmt == BUNDLED_PROGRAM else None
    if fmt == ONNX_TESTDATA:
        file, role = write_onnx(folder, component, sets), ROLE
    elif fmt == BUNDLED_PROGRAM:
        file, role = f"{component}.bpte", BUNDLE_ROLE
        write_bundled_program(folder / artifact_file, sets, folder / file)
    else:
        file, role = write_npz(folder, artifact_file, sets), ROLE
    record = {"format": fmt, "file": file, "sets": len(sets), "bytes": sum(s.nbytes for s in sets),
              "inputs": INPUTS_DESCRIPTION.get(component, ""), "expected": "pytorch-fp32"}
    if tolerances is not None:
        record.update(rtol=tolerances[0], atol=tolerances[1])
    return record, {role: file}


def write_onnx(folder: Path, component: str, sets: list[VectorSet]) -> str:
    """testdata/<component>/test_data_set_N/{input,output}_K.pb; returns the folder's name relative to `folder`."""
    from onnx import numpy_helper

    rel = f"{TESTDATA_DIR}/{component}"
    for n, s in enumerate(sets):
        d = folder / rel / f"test_data_set_{n}"
        d.mkdir(parents=True, exist_ok=True)
        for kind, tensors in (("input", s.inputs), ("output", s.outputs)):
            for k, (name, a) in enumerate(tensors.items()):
                (d / f"{kind}_{k}.pb").write_bytes(numpy_helper.from_array(a, name=name).SerializeToString())
    return rel


def write_npz(folder: Path, artifact_file: str, sets: list[VectorSet]) -> str:
    rel = f"{TESTDATA_DIR}/{artifact_file}.npz"
    arrays = {}
    for n, s in enumerate(sets):
        arrays.update({f"set{n}.in.{k}": v for k, v in s.inputs.items()})
        arrays.update({f"set{n}.out.{k}": v for k, v in s.outputs.items()})
    (folder / TESTDATA_DIR).mkdir(parents=True, exist_ok=True)
    with open(folder / rel, "wb") as f:
        np.savez(f, **arrays)
    return rel


def write_bundled_program(pte: Path, sets: list[VectorSet], out: Path) -> None:
    """An ExecuTorch BundledProgram of the .pte with one test case per set (ExecuTorch's own serializer)."""
    import torch
    from executorch.devtools import BundledProgram
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    cases = [MethodTestCase(inputs=[torch.from_numpy(a) for a in s.inputs.values()],
                            expected_outputs=[torch.from_numpy(a) for a in s.outputs.values()]) for s in sets]
    bundled = BundledProgram(None, [MethodTestSuite(method_name="forward", test_cases=cases)],
                             pte_file_path=str(pte))
    out.write_bytes(serialize_from_bundled_program_to_flatbuffer(bundled))


# ---------------------------------------------------------------------------------------------------------------
# Reading (no model, no torch for ONNX and .npz)


def read(folder: Path, entry) -> list[VectorSet] | None:
    """The vectors of a manifest entry, or None when it was exported without them."""
    record = getattr(entry, "test_vectors", None)
    if not record:
        return None
    path = contained(folder, record.get("file"), f"{Path(folder) / 'manifest.json'}: test_vectors.file")
    outside = escape_below(path, folder) if path.is_dir() else None  # a symlink planted in a downloaded folder
    if outside is not None:
        raise BadInputError(f"{outside}: leads outside {folder} (through a symlink); refused")
    names_in = [t.name for t in entry.inputs]
    names_out = [t.name for t in entry.outputs]
    readers = {ONNX_TESTDATA: lambda: read_onnx(path),
               BUNDLED_PROGRAM: lambda: read_bundled_program(path, names_in, names_out)}
    try:
        return readers.get(record["format"], lambda: read_npz(path))()
    except Mi2vError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a crafted file makes protobuf / numpy / ExecuTorch raise
        raise BadInputError(f"{path}: unreadable test vectors ({type(exc).__name__}: {first_line(exc, 160)})") from None


def read_onnx(path: Path) -> list[VectorSet]:
    """Every test_data_set_N of an onnx_test_runner folder, tensors keyed by their TensorProto names."""
    from onnx import TensorProto, numpy_helper

    def load(d: Path, kind: str) -> dict[str, np.ndarray]:
        files = sorted((f for f in d.glob(f"{kind}_*.pb") if re.fullmatch(rf"{kind}_\d+\.pb", f.name)),
                       key=lambda p: int(p.stem.split("_")[1]))
        out = {}
        for f in files:
            t = TensorProto()
            t.ParseFromString(f.read_bytes())
            out[t.name] = numpy_helper.to_array(t)
        return out

    sets = sorted((d for d in path.glob("test_data_set_*") if re.fullmatch(r"test_data_set_\d+", d.name)),
                  key=lambda p: int(p.name.rsplit("_", 1)[1]))
    return [VectorSet(load(d, "input"), load(d, "output")) for d in sets]


def read_npz(path: Path) -> list[VectorSet]:
    with np.load(path) as z:
        keys = list(z.keys())
        n_sets = 1 + max(int(re.match(r"set(\d+)\.", k).group(1)) for k in keys)
        sets = [VectorSet({}, {}) for _ in range(n_sets)]
        for k in keys:
            n, kind, name = k.split(".", 2)
            (sets[int(n[3:])].inputs if kind == "in" else sets[int(n[3:])].outputs)[name] = z[k]
    return sets


def read_bundled_program(path: Path, names_in: list[str], names_out: list[str]) -> list[VectorSet]:
    """The test cases of a .bpte's forward method, parsed with ExecuTorch's own deserializer."""
    from executorch.devtools.bundled_program.serialize import deserialize_from_flatbuffer_to_bundled_program

    bundled = deserialize_from_flatbuffer_to_bundled_program(path.read_bytes())
    suite = next(s for s in bundled.method_test_suites if s.method_name == "forward")
    return [VectorSet(dict(zip(names_in, map(_et_array, case.inputs))),
                      dict(zip(names_out, map(_et_array, case.expected_outputs)))) for case in suite.test_cases]


def _et_array(value) -> np.ndarray:
    """A serialized ExecuTorch tensor as numpy: its ScalarType through the one dtype table (runtimes.dtypes)."""
    t = value.val
    d = dtypes.from_et(t.scalar_type)
    if d is None:
        raise ValueError(f"a tensor of ExecuTorch ScalarType {int(t.scalar_type)}, not one mi2v reads")
    return dtypes.frombuffer(bytes(t.data), d, t.sizes)
