"""`mi2v inspect FILE` and `mi2v convert FILE --out model.safetensors`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..contract import Part
from ..errors import BadInputError
from ..outputs import check_file
from ..presets import PRESETS
from ._options import Json, Out, Preset, refine
from ._render import console, human_bytes, human_count, print_json


WeightDtype = Enum("WeightDtype", {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}, type=str)


def _compare_with_presets(sd: dict, part: str, named: str | None) -> dict:
    """Which presets a part matches exactly, and the comparison `inspect` shows: with the preset the user named
    (--preset), else with the one the file is closest to (fewest missing, unexpected and mis-shaped keys), so a
    tiny checkpoint with one wrong key is compared with `tiny`, not with the 270M model."""
    from ..checkpoints import compare_keys  # torch: not at `mi2v --help`
    from ..models import expected_shapes

    reports = {name: compare_keys(sd, expected_shapes(part, name)) for name in PRESETS}
    picked = named or min(reports, key=lambda name: reports[name].problems)
    report = reports[picked]
    return {"preset_match": [name for name, r in reports.items() if r.ok], "compared_with": picked,
            "picked_by": "--preset" if named else "closest match", "differences": report.describe()}


def describe_checkpoint(path: Path, preset: str | None = None) -> dict:
    """Everything `inspect` shows, as plain data."""
    from ..checkpoints import read_checkpoint  # torch: not at `mi2v --help`

    ckpt = read_checkpoint(path)
    parts = []
    for part in ckpt.parts:
        sd = ckpt.part_state_dict(part)
        parts.append({"part": part, "keys": len(sd), "parameters": sum(t.numel() for t in sd.values()),
                      **_compare_with_presets(sd, part, preset)})
    return {
        "file": str(path),
        "format": ckpt.format,
        "bytes": path.stat().st_size,
        "sha256": ckpt.sha256,
        "parts": parts,
        "tensors": len(ckpt.state_dict),
        "parameters": ckpt.parameter_count,
        "dtypes": ckpt.dtypes(),
        "ignored_keys": ckpt.ignored_keys,
        "extras": ckpt.extras,
        "metadata": ckpt.metadata,
    }


def inspect(
    file: Path = typer.Argument(..., help="checkpoint: upstream .pth, diffusers/plain .safetensors"),
    preset: refine(Preset, help="compare with this preset (default: the one the file matches best)") = None,
    json_out: Json = False,
) -> None:
    """Show what a checkpoint holds (read safely: no code in the file can run)."""
    data = describe_checkpoint(file, preset and preset.value)
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{file}[/]  {data['format']}, {human_bytes(data['bytes'])}, sha256 {data['sha256'][:16]}…")
    table = Table(title="parts")
    for col in ("part", "keys", "parameters", "preset match", "compared with"):
        table.add_column(col)
    for p in data["parts"]:
        match = ", ".join(p["preset_match"]) or "[red]none[/]"
        table.add_row(p["part"], str(p["keys"]), human_count(p["parameters"]), match, _comparison_cell(p))
    console.print(table)
    console.print("dtypes: " + ", ".join(f"{k} x{v}" for k, v in data["dtypes"].items()))
    if data["ignored_keys"]:
        console.print("ignored (unused upstream buffers): " + ", ".join(data["ignored_keys"]))
    for k, v in data["extras"].items():
        console.print(f"extra entry [cyan]{k}[/]: {v}")


def _comparison_cell(part: dict) -> str:
    """`tiny (closest match): 1 missing (…)`: the preset the part was compared with, why that one, the result."""
    if not part["differences"]:
        return f"{part['compared_with']}: [green]matches[/]"
    how = "named with --preset" if part["picked_by"] == "--preset" else "closest match"
    return f"{part['compared_with']} ({how}): {escape(part['differences'])}"


def convert(
    file: Path = typer.Argument(..., help="checkpoint to convert"),
    out: refine(Out, help="output .safetensors file") = ...,
    dtype: WeightDtype = typer.Option("fp32", help="dtype of the floating tensors"),
    part: Part | None = typer.Option(None, help="keep only this part"),
    json_out: refine(Json, help="print JSON") = False,
) -> None:
    """Write a clean weights-only .safetensors file (no pickle, no optimizer/RNG state)."""
    import torch

    from ..checkpoints import read_checkpoint, write_safetensors

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dtype, part = dtype.value, part and part.value
    if out.suffix != ".safetensors":
        raise BadInputError(f"--out {out} must end in .safetensors")
    check_file(out, "--out", need_bytes=file.stat().st_size if file.is_file() else 0)  # before reading the file
    ckpt = read_checkpoint(file)
    parts = ckpt.parts
    if part is not None:
        if part not in ckpt.parts:
            raise BadInputError(f"{file.name} holds {', '.join(ckpt.parts)}, not {part}")
        parts = [part]
    sd = {}
    for p in parts:
        sd.update(ckpt.part_state_dict(p))
    sd = {k: v.to(dtypes[dtype]) if v.is_floating_point() else v for k, v in sd.items()}
    meta = {"mi2v_parts": ",".join(parts), "mi2v_source": file.name, "mi2v_source_sha256": ckpt.sha256,
            "mi2v_dtype": dtype}
    try:
        write_safetensors(sd, out, meta)
    except OSError as exc:
        raise BadInputError(f"cannot write {out} ({exc.strerror or exc}); nothing was written") from None
    result = {"out": str(out), "parts": parts, "tensors": len(sd), "bytes": out.stat().st_size, "dtype": dtype,
              "dropped": ckpt.ignored_keys + list(ckpt.extras)}
    if json_out:
        print_json(result)
    else:
        console.print(f"wrote {out} ({human_bytes(result['bytes'])}, {len(sd)} tensors, {dtype}, parts: "
                      f"{', '.join(parts)}); dropped: {', '.join(result['dropped']) or 'nothing'}")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
    app.command("convert")(convert)
