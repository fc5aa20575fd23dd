"""`mi2v inspect FILE` and `mi2v convert FILE --out model.safetensors`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from ..contract import Part
from ._render import console, human_bytes, human_count, print_json


WeightDtype = Enum("WeightDtype", {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}, type=str)


def _preset_matches(ckpt, part: str) -> list[str]:
    from ..checkpoints import compare_keys
    from ..models import expected_shapes
    from ..presets import PRESETS

    sd = ckpt.part_state_dict(part)
    return [name for name in PRESETS if compare_keys(sd, expected_shapes(part, name)).ok]


def describe_checkpoint(path: Path) -> dict:
    """Everything `inspect` shows, as plain data."""
    from ..checkpoints import compare_keys, read_checkpoint
    from ..models import expected_shapes

    ckpt = read_checkpoint(path)
    parts = []
    for part in ckpt.parts:
        sd = ckpt.part_state_dict(part)
        matches = _preset_matches(ckpt, part)
        entry = {"part": part, "keys": len(sd), "parameters": sum(t.numel() for t in sd.values()),
                 "preset_match": matches}
        if not matches:  # say how far it is from the real model
            entry["vs_mobilei2v-270m"] = compare_keys(sd, expected_shapes(part, "mobilei2v-270m")).describe()
        parts.append(entry)
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
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Show what a checkpoint holds (read safely: no code in the file can run)."""
    data = describe_checkpoint(file)
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{file}[/]  {data['format']}, {human_bytes(data['bytes'])}, sha256 {data['sha256'][:16]}…")
    table = Table(title="parts")
    for col in ("part", "keys", "parameters", "preset match"):
        table.add_column(col)
    for p in data["parts"]:
        match = ", ".join(p["preset_match"]) or f"[red]none[/] ({p.get('vs_mobilei2v-270m', '')})"
        table.add_row(p["part"], str(p["keys"]), human_count(p["parameters"]), match)
    console.print(table)
    console.print("dtypes: " + ", ".join(f"{k} x{v}" for k, v in data["dtypes"].items()))
    if data["ignored_keys"]:
        console.print("ignored (unused upstream buffers): " + ", ".join(data["ignored_keys"]))
    for k, v in data["extras"].items():
        console.print(f"extra entry [cyan]{k}[/]: {v}")


def convert(
    file: Path = typer.Argument(..., help="checkpoint to convert"),
    out: Path = typer.Option(..., "--out", help="output .safetensors file"),
    dtype: WeightDtype = typer.Option("fp32", help="dtype of the floating tensors"),
    part: Part | None = typer.Option(None, help="keep only this part"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Write a clean weights-only .safetensors file (no pickle, no optimizer/RNG state)."""
    import torch

    from ..checkpoints import read_checkpoint, write_safetensors
    from ..errors import BadInputError

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dtype, part = dtype.value, part and part.value
    if out.suffix != ".safetensors":
        raise BadInputError(f"--out {out} must end in .safetensors")
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
    write_safetensors(sd, out, meta)
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
