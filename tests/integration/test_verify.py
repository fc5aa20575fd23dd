"""Test vectors written beside the artifacts and `mi2v verify` (issue 12), on the tiny preset.

Real here: torch.onnx / ExecuTorch exports of the tiny models, onnxruntime, the ExecuTorch runtime (its own
BundledProgram loader), protobuf, the installed `mi2v` console script. Tampering is done on the files themselves.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from mi2v_export import parity, testvectors
from mi2v_export.manifest import read_manifest
from mi2v_export.pipeline import DEFAULT_FLOW_SCORE, flow_schedule, load_image, preprocess_image

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def onnx_art(tmp_path_factory, exported):
    return exported(tmp_path_factory.mktemp("v-onnx") / "art", "--target", "onnx", "--preset", "tiny", "--json")[0]


@pytest.fixture(scope="module")
def pte_art(tmp_path_factory):
    out = tmp_path_factory.mktemp("v-pte") / "art"
    proc = run_cli("export", "--target", "executorch", "--preset", "tiny", "--component", "denoiser", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _verify(folder, *extra):
    proc = run_cli("verify", folder, "--json", *extra)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def test_onnx_vectors_are_the_onnx_test_runner_layout_with_sampler_inputs(onnx_art):
    import onnxruntime as ort

    m = read_manifest(onnx_art)
    for e in m.components:
        sess = ort.InferenceSession(str(onnx_art / e.file), providers=["CPUExecutionProvider"])
        folder = onnx_art / "testdata" / e.component
        assert e.test_vectors["file"] == f"testdata/{e.component}"
        assert e.test_vectors["sets"] == len(list(folder.glob("test_data_set_*")))
        for d in sorted(folder.glob("test_data_set_*")):
            feeds = {}
            for k, spec in enumerate(sess.get_inputs()):  # input_K.pb in the model's input order, named
                t = TensorProto()
                t.ParseFromString((d / f"input_{k}.pb").read_bytes())
                assert t.name == spec.name
                feeds[t.name] = numpy_helper.to_array(t)
            t = TensorProto()
            t.ParseFromString((d / "output_0.pb").read_bytes())
            got = sess.run([t.name], feeds)[0]
            assert parity.rel_l2(got, numpy_helper.to_array(t)) <= 1e-4
    # the inputs the sampler feeds: the photo, the schedule's timesteps, the Euler step between them
    enc = testvectors.read(onnx_art, m.find("encoder"))[0].inputs["image"]
    want = preprocess_image(load_image(testvectors.IMAGE), 128, 192, fit="cover").numpy()
    assert np.array_equal(enc, want)
    s0, s1 = testvectors.read(onnx_art, m.find("denoiser"))
    sched = flow_schedule(2)
    assert [float(s0.inputs["timestep"][0]), float(s1.inputs["timestep"][0])] == pytest.approx(
        sched.timesteps.tolist())
    assert float(s0.inputs["flow_score"][0]) == DEFAULT_FLOW_SCORE
    step = s0.inputs["latent"] + float(sched.sigmas[1] - sched.sigmas[0]) * s0.outputs["velocity"]
    step[:, :, :1] = s0.inputs["latent"][:, :, :1]
    assert np.allclose(s1.inputs["latent"], step, atol=1e-6)


def test_bundled_program_is_read_back_by_the_executorch_runtime(pte_art):
    from executorch.extension.pybindings import portable_lib

    e = read_manifest(pte_art).find("denoiser")
    assert e.test_vectors["format"] == "bundled-program" and e.test_vectors["sets"] == 2
    sets = testvectors.read(pte_art, e)
    bundled = portable_lib._load_bundled_program_from_buffer((pte_art / "denoiser.bpte").read_bytes())
    for n, s in enumerate(sets):
        got = bundled.verify_result_with_bundled_expected_output("forward", n, e.test_vectors["rtol"],
                                                                  e.test_vectors["atol"])
        assert parity.rel_l2(got[0].numpy(), s.outputs["velocity"]) <= 1e-4


def test_npz_vectors_round_trip(tmp_path):
    sets = [testvectors.VectorSet({"latent": np.arange(6, dtype=np.float16).reshape(1, 2, 3)},
                                  {"video": np.ones((2, 2), np.float32)}) for _ in range(2)]
    rel = testvectors.write_npz(tmp_path, "decoder.mlpackage", sets)
    back = testvectors.read_npz(tmp_path / rel)
    assert len(back) == 2 and back[1].inputs["latent"].dtype == np.float16
    assert np.array_equal(back[1].inputs["latent"], sets[1].inputs["latent"])


def test_verify_passes_on_untouched_artifacts_and_records_it(onnx_art, pte_art, tmp_path):
    for src in (onnx_art, pte_art):
        folder = _copy(src, tmp_path / src.parent.name)
        before = {e.file: len(e.verified_on) for e in read_manifest(folder).components}
        proc, report = _verify(folder)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert report["passed"] and report["ran"] == len(before)
        for e in read_manifest(folder).components:
            assert len(e.verified_on) == before[e.file] + 1 and e.verified
            run = e.verified_on[-1]
            assert run["by"] == "verify" and run["passed"] and run["runtime_version"]
            assert run["where"]["machine"] and run["when"] and run["sets"] == e.test_vectors["sets"]
        assert not list(folder.glob(".manifest.json.*"))  # atomic rewrite left no temporary file


def test_verify_of_onnx_imports_no_torch(onnx_art, tmp_path):
    folder = _copy(onnx_art, tmp_path)
    code = ("import sys; sys.argv = ['mi2v', 'verify', sys.argv[1], '--no-record']\n"
            "from mi2v_export.cli import main\n"
            "try:\n    main()\nfinally:\n    assert 'torch' not in sys.modules, 'verify imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _corrupt_onnx_weight(path):
    import onnx

    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 10.0 * (float(np.abs(w).max()) + 1.0)  # one weight
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(path))


def test_verify_fails_when_one_weight_is_corrupted(onnx_art, tmp_path):
    folder = _copy(onnx_art, tmp_path)
    _corrupt_onnx_weight(folder / "denoiser.onnx")
    before = (folder / "manifest.json").read_bytes()
    proc, report = _verify(folder)  # the integrity policy refuses it before running (mi2v_export/integrity.py)
    assert proc.returncode == 2 and report is None, proc.stderr
    assert proc.stderr.count("error:") == 1 and "denoiser.onnx: differs from manifest.json" in proc.stderr
    assert (folder / "manifest.json").read_bytes() == before
    proc, report = _verify(folder, "--allow-modified")  # run anyway: the outputs fail, and no pass is recorded
    assert proc.returncode == 4, proc.stderr
    assert "warning: " in proc.stderr and "--allow-modified" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: denoiser (denoiser.onnx on onnxruntime)")
    by_file = {a["file"]: a for a in report["artifacts"]}
    assert by_file["denoiser.onnx"]["passed"] is False and by_file["denoiser.onnx"]["sha256_ok"] is False
    assert by_file["encoder.onnx"]["passed"] is True
    assert read_manifest(folder).find("denoiser").verified_on[-1]["passed"] is False


def test_verify_fails_when_a_stored_expected_output_is_altered(onnx_art, tmp_path):
    folder = _copy(onnx_art, tmp_path)
    pb = folder / "testdata" / "encoder" / "test_data_set_0" / "output_0.pb"
    t = TensorProto()
    t.ParseFromString(pb.read_bytes())
    out = numpy_helper.to_array(t) * 1.01
    pb.write_bytes(numpy_helper.from_array(out, t.name).SerializeToString())
    proc, _ = _verify(folder, "--component", "encoder")  # the vectors are files of the entry: refused as modified
    assert proc.returncode == 2 and "testdata/encoder: differs from manifest.json" in proc.stderr
    proc, _ = _verify(folder, "--component", "encoder", "--allow-modified")
    assert proc.returncode == 4 and "encoder (encoder.onnx on onnxruntime)" in proc.stderr


def test_verify_fails_when_the_pte_weights_are_corrupted(pte_art, tmp_path):
    folder = _copy(pte_art, tmp_path)
    data = bytearray((folder / "denoiser.pte").read_bytes())
    mid = len(data) // 2  # the weight segment is most of the file
    data[mid:mid + 4096] = b"\x7f" * 4096
    (folder / "denoiser.pte").write_bytes(bytes(data))
    proc, report = _verify(folder)
    assert proc.returncode == 2 and "denoiser.pte: differs from manifest.json" in proc.stderr
    proc, report = _verify(folder, "--allow-modified")
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "denoiser (denoiser.pte on executorch-xnnpack)" in proc.stderr
    assert report["artifacts"][0]["runs"][0]["runtime"] == "executorch-xnnpack"


def test_verify_bad_input_is_one_line(tmp_path, onnx_art, pte_art):
    proc, _ = _verify(tmp_path / "nowhere")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    proc, _ = _verify(pte_art, "--component", "decoder", "--no-record")  # the denoiser only
    assert proc.returncode == 2 and "no decoder artifact" in proc.stderr
    proc, _ = _verify(onnx_art, "--runtime", "tensorrt", "--no-record")
    assert proc.returncode == 2 and "unknown runtime tensorrt" in proc.stderr


# ---- integer artifacts: verify applies the precision's gate the export recorded -------------------------------------


@pytest.fixture(scope="module")
def w8a8_art(tmp_path_factory):
    out = tmp_path_factory.mktemp("v-w8a8") / "art"
    proc = run_cli("export", "--target", "onnx", "--preset", "tiny", "--component", "denoiser", "--precision", "w8a8",
                   "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_verify_of_a_w8a8_artifact_uses_its_psnr_gate(w8a8_art, tmp_path):
    folder = _copy(w8a8_art, tmp_path)
    entry = read_manifest(folder).find("denoiser")
    assert entry.precision == "w8a8" and entry.parity["gate"]["metric"] == "psnr_db"
    proc, report = _verify(folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = read_manifest(folder).find("denoiser").verified_on[-1]
    assert run["passed"] and run["gate"] == parity.gate_for("w8a8").describe()
    assert parity.gate_for("w8a8").threshold <= run["psnr_db"] < 80  # really quantized, and within its gate
    # expected outputs negated: an error far beyond any 8-bit quantization error, so the gate fails
    pb = folder / "testdata" / "denoiser" / "test_data_set_0" / "output_0.pb"
    t = TensorProto()
    t.ParseFromString(pb.read_bytes())
    pb.write_bytes(numpy_helper.from_array(-numpy_helper.to_array(t), t.name).SerializeToString())
    proc, _ = _verify(folder, "--allow-modified")
    assert proc.returncode == 4 and "denoiser (denoiser.onnx on onnxruntime)" in proc.stderr
