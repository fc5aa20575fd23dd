"""Why w4 gives the denoiser's embedders, adaLN modulation and final layer int8 weights (quantize.SENSITIVE_UNITS).

Simulated in PyTorch (mi2v_export.recipe.simulate_unit: int4 weights in groups of 32 on every linear / conv of a
unit, int8 per channel for w8): the 2-step video on the validation image with every unit in w4, with the sensitive
units fp32, and with them int8, each against the all-fp32 run (worst-frame PSNR). Seeded weights unless
--checkpoint.

    python benchmarks/w4_sensitive_units.py --resolution 128x224 --frames 9 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import torch

from mi2v_export import contract
from mi2v_export import recipe as rc
from mi2v_export.calibration import VALIDATION_IMAGE
from mi2v_export.errors import Mi2vError, first_line
from mi2v_export.exporters.quantize import SENSITIVE_UNITS
from mi2v_export.pipeline import (
    GenerateConfig,
    Pipeline,
    TorchStage,
    checkpoint_parts,
    compare_runs,
    load_image,
    torch_stage,
)
from mi2v_export.shapes import geometry, parse_resolution


def trajectory_psnr(stages: dict, reference, image, config, kept: tuple[str, ...], kept_as: str | None) -> dict:
    """Worst-frame / mean PSNR with every denoiser unit in w4 but `kept`, which are fp32 (None) or `kept_as`."""
    base = stages["denoiser"].module
    model = copy.deepcopy(base)
    for unit in rc.units_of("denoiser", base):
        if unit not in kept:
            rc.simulate_unit(model, unit, "w4")
        elif kept_as is not None:
            rc.simulate_unit(model, unit, kept_as)
    run = dict(stages, denoiser=TorchStage("denoiser", model))
    summary = compare_runs(Pipeline(run).generate(image, config), reference, 0.0)["summary"]
    return {"psnr_db_min": round(float(summary["min_psnr_db"]), 2), "psnr_db": round(float(summary["mean_psnr_db"]), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--resolution", default="128x224")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--checkpoint", type=Path, action="append", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    try:  # bad flags or checkpoints: one usage line, no traceback
        h, w = parse_resolution(args.resolution)
        geo = geometry(h, w, args.frames)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = checkpoint_parts(args.checkpoint)
            stages = {c: torch_stage(c, args.preset, "turbo-vaed", parts) for c in ("encoder", "denoiser", "decoder")}
    except Mi2vError as exc:
        ap.error(first_line(exc))
    config = GenerateConfig(geo.height, geo.width, geo.frames, steps=2, seed=0)
    image = load_image(VALIDATION_IMAGE)
    t0 = time.perf_counter()
    reference = Pipeline(stages).generate(image, config)
    kept = SENSITIVE_UNITS
    results = {"all_units_w4": trajectory_psnr(stages, reference, image, config, (), None),
               "sensitive_units_fp32": trajectory_psnr(stages, reference, image, config, kept, None),
               "sensitive_units_w8": trajectory_psnr(stages, reference, image, config, kept, "w8")}
    denoiser = stages["denoiser"].module
    kept_params = sum(p.numel() for u in kept if hasattr(denoiser, u) for p in denoiser.get_submodule(u).parameters())
    report = {"machine": {"cpu": contract.cpu_model(), "flags": contract.cpu_flags()},
              "config": {"preset": args.preset, "resolution": [h, w], "frames": args.frames, "steps": 2, "seed": 0,
                         "image": VALIDATION_IMAGE.name, "weights": "checkpoint" if args.checkpoint else "seeded"},
              "sensitive_units": list(kept), "sensitive_units_share_of_weights":
                  round(kept_params / sum(p.numel() for p in denoiser.parameters()), 4),
              "results": results, "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
