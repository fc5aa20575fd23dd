"""`mi2v devices list`: the adb devices. `devices simulate` and `devices profile` come from the simulator package
(`mi2v_export.simulator.cli`), which the CLI loads by name; nothing here imports it."""

from __future__ import annotations

import typer
from rich.table import Table

from ..devices.adb import Adb
from ._options import AdbPath, AdbPort, Json
from ._render import console, print_json

devices_app = typer.Typer(
    name="devices",
    help="Phones over adb: list them, or start a simulated phone (for CI without hardware).",
    no_args_is_help=True,
)

@devices_app.command("list")
def list_devices(
    adb: AdbPath = None,
    adb_port: AdbPort = None,
    json_out: Json = False,
) -> None:
    """List the devices adb knows, with their state (device, unauthorized, offline, no permissions, …)."""
    devices = Adb(adb, server_port=adb_port).devices()
    if json_out:
        print_json([{"serial": d.serial, "state": d.state, **d.details} for d in devices])
        return
    if not devices:
        typer.echo("no devices (plug in a phone with USB debugging on, `adb connect HOST:PORT`, "
                   "or start one with `mi2v devices simulate`)")
        return
    table = Table("serial", "state", "model", "product", "transport")
    for d in devices:
        table.add_row(d.serial, d.state, d.details.get("model", ""), d.details.get("product", ""),
                      d.details.get("transport_id", ""), style=None if d.ready else "yellow")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(devices_app, name="devices")
