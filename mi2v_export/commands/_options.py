"""The command-line options several `mi2v` commands share, each declared once as an `Annotated` type: its flag
name, value type, choices (the enums mi2v_export/contract.py builds from the registries: presets, decoder kinds,
components), range, environment variable and help.

A command takes the type as it is (`json_out: Json = False`), or `refine`s it where it must say its own meaning
(what `--out` writes, what `--json` prints, where a default comes from): the flag, its type and checks stay the
ones declared here. Options only one command has stay in that command; so do options that merely share a name
(`--runtime`, `--dtype`, `--precision`, `--compute-units`: a different value set in each command).

Torch-free: every command module imports this when `mi2v --help` builds the app.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Annotated

import typer

from ..contract import Component, DecoderKind, PresetName, parse_components
from ..errors import BadInputError
from ..integrity import ALLOW_MODIFIED_HELP


def refine(alias, **settings):
    """`alias` with some of its `typer.Option` settings changed for one command: its own `help`, a tighter `max`.
    The flag name and the value type stay the alias's."""
    kind, declared = typing.get_args(alias)
    option = copy.copy(declared)
    for name, value in settings.items():
        if name == "param_decls" or not hasattr(option, name):
            raise TypeError(f"refine: {name!r} is not a setting that one command may change")
        setattr(option, name, value)
    return Annotated[kind, option]


def component_list(value: str) -> str:
    """Typer callback of `--component`: 'all' or a comma list of components, checked as a usage error."""
    try:
        names = parse_components(value)
    except BadInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    return ",".join(names)


# ---- what the command prints or writes --------------------------------------------------------------------------

Json = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
Image = Annotated[Path | None, typer.Option("--image", help="input image (PNG, JPEG, WebP, …); grayscale/alpha are "
                                            "converted")]
# what --out and --report write differs by command: each refines the help
Out = Annotated[Path, typer.Option("--out", help="where to write the result")]
Report = Annotated[Path | None, typer.Option("--report", help="report file (JSON)")]

# ---- memory -------------------------------------------------------------------------------------------------------

# each command says its unit in its help: MiB of an artifact's measured peak (export, generate), GiB of a
# release plan's running exports (plan)
MemoryBudget = Annotated[float | None, typer.Option("--memory-budget", help="a memory budget")]

# ---- the model: preset, video size, weights ---------------------------------------------------------------------

Preset = Annotated[PresetName | None, typer.Option("--preset", help="model preset")]
Resolution = Annotated[str | None, typer.Option("--resolution", help="HEIGHTxWIDTH, e.g. 720x1280 (default: the "
                                                "preset's)")]
Frames = Annotated[int | None, typer.Option("--frames", min=1, help="video frames, 8k+1 (default: the preset's)")]
Decoder = Annotated[DecoderKind | None, typer.Option("--decoder", help="decoder model")]
Checkpoints = Annotated[list[Path], typer.Option("--checkpoint", help="weights file (repeatable): denoiser, LTX VAE "
                                                 "and/or Turbo-VAED, told apart by their keys. A part without a "
                                                 "file gets seeded random weights (noise, for testing)")]
Steps = Annotated[int, typer.Option("--steps", min=1, help="flow-matching Euler steps (shift 3): 1 → t=[1000], 2 → "
                                    "[1000, 8.929], N → the shifted grid; upstream's multi-step default is 30")]

# ---- components -------------------------------------------------------------------------------------------------

Components = Annotated[str, typer.Option("--component", callback=component_list, help="encoder | denoiser | "
                                         "decoder | all (or a comma list)")]
OneComponent = Annotated[Component | None, typer.Option("--component", help="one component")]

# ---- artifacts a command reads ----------------------------------------------------------------------------------

Artifacts = Annotated[Path | None, typer.Option("--artifacts", help="folder written by `mi2v export` "
                                                "(manifest.json + <component>.onnx/.pte)")]
ArtifactFolders = Annotated[list[Path], typer.Option("--artifacts", help="folder written by `mi2v export` "
                                                     "(repeatable; for each component the first folder that has it "
                                                     "wins: .onnx → onnxruntime, .pte → ExecuTorch, .mlpackage → "
                                                     "Core ML on macOS)")]
AllowModified = Annotated[bool, typer.Option("--allow-modified", help=ALLOW_MODIFIED_HELP)]
MinPsnr = Annotated[float | None, typer.Option("--min-psnr", help="per-frame PSNR floor in dB")]

# ---- phones and the apps that time them -------------------------------------------------------------------------

AdbPath = Annotated[Path | None, typer.Option("--adb", help="adb binary (default: $MI2V_ADB, $ADB, adb on PATH, "
                                              "then the adb bundled in the adbutils wheel)")]
AdbPort = Annotated[int | None, typer.Option("--adb-port", help="adb server port (default: $ANDROID_ADB_SERVER_PORT "
                                             "or 5037)")]
Team = Annotated[str | None, typer.Option("--team", envvar="DEVELOPMENT_TEAM", help="ios: Apple development team "
                                          "that signs the test bundle")]
Iterations = Annotated[int | None, typer.Option("--iterations", min=1, help="timed iterations per run (default: 10 "
                                                "on host, 50 on a phone)")]
Warmup = Annotated[int | None, typer.Option("--warmup", min=0, help="warm-up iterations inside the timed process, "
                                            "discarded (default: 2 on host, 5 on a phone)")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="print the commands only")]
CheckOnly = Annotated[bool, typer.Option("--check", help="check the prerequisites only")]
