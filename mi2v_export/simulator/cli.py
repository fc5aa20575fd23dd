"""`mi2v devices simulate` and `mi2v devices profile`: the simulated phone on the command line.

Registered on the `devices` group by `mi2v_export.cli` (COMMAND_MODULES names this module); the simulator imports
the production modules, never the other way round.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from enum import Enum
from pathlib import Path

import typer

from ..commands._options import AdbPath, AdbPort, Out, refine
from ..commands.devices import devices_app


class State(str, Enum):
    device = "device"
    unauthorized = "unauthorized"
    offline = "offline"


@devices_app.command("simulate")
def simulate(
    port: int = typer.Option(0, "--port", help="TCP port on 127.0.0.1 (0 = a free one)"),
    profile: Path | None = typer.Option(None, "--profile", help="device profile JSON (`mi2v devices profile`)"),
    state: State = typer.Option(State.device, "--state", help="the state adb will list it in"),
    root: Path | None = typer.Option(
        None, "--root", help="folder standing in for the phone's / (default: a temporary one, removed on exit)"
    ),
    shell_v2: bool = typer.Option(
        True, "--shell-v2/--no-shell-v2", help="advertise shell_v2 (exit codes, separate stderr), as phones since 7.0"
    ),
    storage_free: int | None = typer.Option(
        None, "--storage-free", help="free bytes on /data; pushes beyond it fail with 'No space left on device'"
    ),
    connect: bool = typer.Option(False, "--connect", help="also `adb connect` to it"),
    port_file: Path | None = typer.Option(None, "--port-file", help="write the chosen port here once listening"),
    adb: AdbPath = None,
    adb_port: AdbPort = None,
) -> None:
    """Start a simulated phone: a loopback adb device daemon the real adb talks to (shell with exit codes and
    stderr, push/pull, getprop, device states). Connect with `adb connect 127.0.0.1:PORT`; Ctrl-C stops it.

    Its properties, CPU frequencies, thermal and battery come from the profile and it says it is simulated
    (ro.mi2v.simulated=1); what you push and run executes on this machine, in a folder standing in for
    /data/local/tmp. It reports this machine's ABI, so host binaries can be pushed and run.
    """
    from .phone import DeviceProfile, SimulatedPhone

    prof = DeviceProfile.load(profile) if profile else DeviceProfile()
    phone = SimulatedPhone(port=port, profile=prof, state=state.value, root=root, shell_v2=shell_v2,
                           storage_free_bytes=storage_free)
    phone.start()
    try:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: phone.stopping.set())
        typer.echo(f"simulated phone listening on {phone.serial} (state {phone.state}, model {prof.model!r}, "
                   f"ABI {prof.abi}; /data/local/tmp is {phone.sandbox})")
        if connect:
            from ..devices.adb import Adb

            info = Adb(adb, server_port=adb_port).connect(phone.serial, timeout=3 if state is State.offline else 15)
            typer.echo(f"adb lists {info.serial} as {info.state}")
        else:
            typer.echo(f"connect with: adb connect {phone.serial}")
        if port_file is not None:
            port_file.write_text(f"{phone.port}\n")
        typer.echo("Ctrl-C to stop")
        sys.stdout.flush()
        try:
            phone.serve_forever()
        except KeyboardInterrupt:
            pass
    finally:
        phone.stop()
        if port_file is not None:
            port_file.unlink(missing_ok=True)
    typer.echo("simulated phone stopped")


@devices_app.command("profile")
def profile_template(
    out: refine(Out, help="write to this file instead of stdout") = None,
) -> None:
    """Print the default simulated-phone profile (this machine's ABI, cores and memory) as JSON, to edit."""
    from .phone import DeviceProfile

    text = json.dumps(DeviceProfile().to_dict(), indent=2)
    if out is None:
        typer.echo(text)
    else:
        DeviceProfile().save(out)
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """The commands are on the `devices` group already (decorators above)."""
