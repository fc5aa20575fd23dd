"""The MobileI2V image-to-video pipeline, as upstream runs it, on swappable back-ends (`mi2v generate`).

This module is also the reference an app developer copies: the exact conditioning, sampler loop and
post-processing a phone has to run around the three exported components (the loop, step by step: the docstring of
pipeline/sampler.py).

Details, and where they differ from upstream `scripts/inference_i2v.py` on purpose:
  * Preprocessing: RGB, resized straight to H×W (aspect ratio *not* kept, like upstream's `Resize([720,1280])`;
    `fit="cover"` scales and centre-crops instead), normalised to [-1, 1]. EXIF rotation is applied; grayscale and
    palette images are converted; transparent images are composited on white (upstream's `.convert("RGB")` would
    expose whatever colour hides under the alpha).
  * Noise: one CPU `torch.Generator` seeded with `seed`, float32 (upstream: a CUDA generator, then fp16). Draw
    order: the (1,128,T,h,w) noise first, then (posterior sampling only) the (1,128,1,h,w) posterior noise.
  * Reference latent — posterior sample or mean. Upstream always *samples* the LTX posterior:
    z_ref = mean + exp(logvar/2)·ε, logvar being the encoder's one shared log-variance channel (clamped to
    [-30, 20] like diffusers). The artifact contract's encoder returns only the posterior **mean** (`latent`).
    So: `posterior="sample"` (default) samples whenever the encoder stage provides the log-variance (the PyTorch
    stage always does; an artifact only if it has a `logvar` output), and otherwise falls back to the mean and
    says so in `GenerateResult.posterior` / `.notes`. A comparison run (`compare_runs`) makes the PyTorch
    reference use exactly the mode the artifact run ended up with, so the two trajectories start from the same
    latent up to export error. A plain PyTorch run therefore samples while a run on `mi2v export` artifacts uses
    the mean: for the same seed their videos differ unless both use `posterior="mean"` (how far apart depends on
    the real encoder's log-variance, which seeded weights cannot show).
  * Everything between the stages is float32; fp16 artifacts get their inputs cast to fp16 and their outputs cast
    back (upstream keeps the latent in fp16 between steps; the Euler update itself is fp32 there too).

The package, one concept a module: `sampler` (schedule, GenerateConfig, Pipeline), `media` (the input image and
the output video), `stages` (the Stage interface on mi2v_export.runtimes), `weights` (PyTorch checkpoints and
stages), `artifacts` (manifests, artifact selection, build_stages), `report` (the comparison and its JSON), `run`
(GenerateRequest → plan_generate → run_generate). Every name is re-exported here: `from mi2v_export.pipeline
import X` is the public path.

Back-ends: every component runs behind one `Stage` interface (`run(**inputs) -> outputs`, float32 tensors by
the contract's I/O names), each on a session of mi2v_export.runtimes: `TorchStage` (eager, the reference),
`OnnxStage` (onnxruntime, or the QNN HTP simulator), `ExecuTorchStage` (ExecuTorch runtime) and `CoreMLStage`
(macOS only). `build_stages` picks one per component from one or more artifact folders written by `mi2v export`
(read through `mi2v_export.manifest`): the first folder that has the component wins; inside a folder that holds
several artifacts of it, the one of the requested target (`use`, CLI `--use`), else the first this host can run
(a registered runtime accepts it and is available) in the order onnx, executorch (XNNPACK / portable), coreml.
Components no folder has fall back to PyTorch on request.

Side effects stay at the edges: nothing here prints; progress goes through a callback; files are written by
`write_video` / `write_contact_sheet` / `write_json`, atomically (temp file in the same folder, then rename).
"""

from __future__ import annotations

from ..contract import COMPONENTS, DECODER, DENOISER, ENCODER, IO
from ..files import atomic_path
from ..manifest import TARGET_PREFERENCE
from ..shapes import VideoGeometry, geometry
from .artifacts import (DECODER_MODELS, build_stages, check_artifacts, check_stage_shapes, decoder_kind_of,
                        expected_io_shapes, parse_use, read_artifacts, runnable_here, select_entry)
from .media import (DEFAULT_FPS, FIT_MODES, MIN_IMAGE_SIDE, contact_sheet, contact_sheet_path, load_image,
                    preprocess_image, read_video, to_rgb, to_uint8_frames, write_contact_sheet, write_video)
from .report import (REPORT_SCHEMA_VERSION, VIDEO_PSNR_MIN_DB, build_report, check_psnr_gate, compare_runs,
                     gate_of, json_safe, precision_of, write_json)
from .run import GeneratePlan, GenerateRequest, GenerateRun, plan_generate, run_generate
from .sampler import (DEFAULT_FLOW_SCORE, DEFAULT_STEPS, FLOW_SHIFT, LOGVAR_CLAMP, NUM_TRAIN_TIMESTEPS,
                      POSTERIOR_MODES, FlowSchedule, GenerateConfig, GenerateResult, Pipeline, ProgressFn,
                      flow_schedule)
from .stages import (STAGE_BACKENDS, ArtifactStage, CoreMLStage, ExecuTorchStage, OnnxStage, Stage, TorchStage,
                     artifact_stage)
from .weights import checkpoint_parts, decoder_from_checkpoints, torch_stage

__all__ = [
    "FlowSchedule", "flow_schedule", "load_image", "to_rgb", "preprocess_image", "to_uint8_frames",
    "Stage", "TorchStage", "ArtifactStage", "OnnxStage", "ExecuTorchStage", "CoreMLStage", "STAGE_BACKENDS",
    "read_artifacts", "decoder_kind_of", "runnable_here", "parse_use", "select_entry", "check_artifacts",
    "expected_io_shapes", "check_stage_shapes", "artifact_stage", "TARGET_PREFERENCE", "DECODER_MODELS",
    "checkpoint_parts", "decoder_from_checkpoints", "torch_stage", "build_stages",
    "GenerateConfig", "GenerateResult", "Pipeline", "precision_of", "gate_of", "ProgressFn",
    "compare_runs", "json_safe", "build_report", "VIDEO_PSNR_MIN_DB", "REPORT_SCHEMA_VERSION",
    "atomic_path", "write_video", "contact_sheet", "write_contact_sheet", "write_json", "contact_sheet_path",
    "read_video", "check_psnr_gate", "GenerateRequest", "GeneratePlan", "GenerateRun", "plan_generate",
    "run_generate", "geometry", "VideoGeometry",
    "COMPONENTS", "IO", "ENCODER", "DENOISER", "DECODER", "DEFAULT_STEPS", "DEFAULT_FLOW_SCORE", "DEFAULT_FPS",
    "FLOW_SHIFT", "NUM_TRAIN_TIMESTEPS", "LOGVAR_CLAMP", "POSTERIOR_MODES", "FIT_MODES", "MIN_IMAGE_SIDE",
]
