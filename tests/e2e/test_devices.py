"""The device layer end to end: the real adb client and a private adb server talking to the simulated phone.

Real here: the adb binary (the one bundled in the adbutils wheel, or $ADB / PATH), its server, the transport, shell v2,
the sync protocol, file bytes and device states. Simulated: the phone (mi2v_export.simulator).

Every test starts what it needs and stops only that: a private adb server on a free loopback port (`adb -P PORT`,
HOME/TMPDIR in a temporary folder, mDNS/USB/emulator scanning off), stopped with `adb -P PORT kill-server`; simulated
phones on 127.0.0.1:<free port>, stopped through their own handle. The developer's adb server on 5037 is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mi2v_export.devices.adb import Adb, AdbDevice, find_adb, parse_devices, parse_getprop, quote
from mi2v_export.devices.android_session import device_facts
from mi2v_export.simulator.phone import DeviceProfile, SimulatedPhone, host_abi
from mi2v_export.errors import BadInputError, DeviceError

from tests.conftest import free_port, private_adb


@pytest.fixture(scope="module")
def dev(adb, phone) -> AdbDevice:
    return adb.pick_device(phone.serial)


# ---- listing and identity ------------------------------------------------------------------------------------------


def test_real_adb_lists_the_simulated_phone(adb, phone):
    raw = adb.run(["devices", "-l"]).stdout
    line = next(ln for ln in raw.splitlines() if ln.startswith(phone.serial))
    assert line.split()[1] == "device"
    assert "model:Simulated_Phone" in line and "product:mi2v_sim" in line and "device:mi2v_sim" in line
    info = next(d for d in adb.devices() if d.serial == phone.serial)
    assert info.ready and info.model == "Simulated_Phone" and info.details["transport_id"].isdigit()
    assert adb.device(phone.serial).get_state() == "device"
    assert "shell_v2" in adb.device(phone.serial).features()
    assert adb.version().startswith("1.0.")


def test_getprop_single_all_and_simulated_marker(dev):
    assert dev.getprop("ro.product.model") == "Simulated Phone"
    assert dev.getprop("ro.no.such.key") == ""
    props = dev.getprop()
    assert device_facts(props, dev.serial)["simulated_device"] is True
    assert props["ro.product.cpu.abi"] == host_abi()
    assert props["ro.build.version.release"] == "15" and props["ro.build.version.sdk"] == "35"
    assert props["ro.build.fingerprint"].startswith("mi2v/mi2v_sim/mi2v_sim:15/")
    assert dev.shell("getprop missing.key fallback").out.strip() == "fallback"


def test_fake_device_files_come_from_the_profile(dev, phone):
    n = len(phone.profile.cpus)
    loop = ('for c in /sys/devices/system/cpu/cpu[0-9]*; do echo "${c##*/} $(cat $c/cpufreq/cpuinfo_max_freq) '
            '$(cat $c/cpufreq/scaling_governor)"; done')
    rows = [ln.split() for ln in dev.check_output(loop).splitlines()]
    assert len(rows) == n
    assert rows[0] == ["cpu0", str(phone.profile.cpus[0].max_khz), phone.profile.cpus[0].governor]
    thermal = dev.check_output(["dumpsys", "thermalservice"])
    assert "Thermal Status: 0" in thermal
    assert "Temperature{mValue=36.5, mType=0, mName=AP, mStatus=0}" in thermal
    battery = dev.check_output(["dumpsys", "battery"])
    assert "  level: 80" in battery and "  temperature: 295" in battery and "USB powered: true" in battery
    zone = dev.check_output("cat /sys/class/thermal/thermal_zone0/type /sys/class/thermal/thermal_zone0/temp")
    assert zone.split() == ["AP", "36500"]
    assert dev.check_output("grep MemTotal /proc/meminfo").split()[1] == str(phone.profile.mem_total_kb)
    rc, out, err = dev.shell(["toybox", "time", "-v", "true"])
    assert rc == 0 and "Max RSS (KiB): " in err and "Real time (s): " in err


# ---- shell ---------------------------------------------------------------------------------------------------------


def test_shell_exit_code_and_separate_stderr(dev):
    rc, out, err = dev.shell("echo out; echo err >&2; exit 3")
    assert (rc, out, err) == (3, "out\n", "err\n")
    assert dev.shell(["true"]).rc == 0
    assert dev.shell("kill -9 $$").rc == 137  # killed by a signal: 128 + 9, as adbd reports it


def test_shell_quotes_each_argument(dev):
    # adb joins its arguments with spaces; the device shell splits again. A list is quoted token by token.
    assert dev.shell(["printf", "%s|", "a b", "c", "$HOME;x"]).out == "a b|c|$HOME;x|"
    assert quote(["echo", "it's"]) == "echo 'it'\"'\"'s'"
    with pytest.raises(DeviceError, match="exit code 7"):
        dev.shell("exit 7", check=True)


def test_shell_runs_in_the_sandbox_with_device_paths(dev, phone):
    out = dev.check_output("mkdir -p /data/local/tmp/w && cd /data/local/tmp/w && pwd && echo hi > f && ls")
    assert out.split() == ["/data/local/tmp/w", "f"]
    assert (phone.sandbox / "w" / "f").read_text() == "hi\n"
    assert dev.exists("/data/local/tmp/w/f") and not dev.exists("/data/local/tmp/w/nope")
    dev.remove("/data/local/tmp/w")
    assert not (phone.sandbox / "w").exists()


def test_shell_timeout_kills_the_remote_command(adb, dev, phone):
    with pytest.raises(DeviceError, match="did not finish within 1s"):
        dev.shell("sleep 30", timeout=1)
    deadline = time.monotonic() + 10
    while phone._procs and time.monotonic() < deadline:  # the host hung up: the phone kills the command
        time.sleep(0.1)
    assert not phone._procs


def test_old_phone_without_shell_v2_uses_the_exit_code_marker(adb):
    with SimulatedPhone(shell_v2=False) as old:
        adb.connect(old.serial)
        try:
            d = adb.pick_device(old.serial)
            assert not d.shell_v2
            raw = adb.run(["shell", "echo out; echo err >&2; exit 3"], serial=old.serial, check=False)
            assert raw.returncode == 0 and raw.stdout == "out\nerr\n"  # what adb itself gives on such a phone
            rc, out, err = d.shell("echo out; echo err >&2; exit 3")
            assert (rc, out, err) == (3, "out\nerr\n", "")
            assert d.shell(["printf", "no newline"]) == (0, "no newline", "")
            assert d.getprop("ro.mi2v.simulated") == "1"
        finally:
            adb.disconnect(old.serial)


# ---- files ---------------------------------------------------------------------------------------------------------


def test_push_pull_byte_identical(dev, tmp_path):
    data = os.urandom(4 * 1024 * 1024 + 123)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    remote = "/data/local/tmp/mi2v/abc/blob.bin"
    dev.push(src, remote)
    assert dev.sha256(remote) == hashlib.sha256(data).hexdigest()
    assert dev.sha256_many([remote, "/data/local/tmp/none"]) == {remote: hashlib.sha256(data).hexdigest()}
    back = dev.pull(remote, tmp_path / "back.bin")
    assert back.read_bytes() == data
    assert dev.sha256("/data/local/tmp/none") is None
    dev.remove("/data/local/tmp/mi2v")


def test_pushed_runner_keeps_its_exec_bit_and_needs_it(dev, tmp_path):
    script = tmp_path / "runner.sh"
    script.write_text("#!/bin/sh\necho ran $# \"$1\"\n")
    script.chmod(0o644)
    dev.push(script, "/data/local/tmp/r/runner.sh")
    rc, _, err = dev.shell("/data/local/tmp/r/runner.sh")
    assert rc == 126 and "Permission denied" in err  # like a phone before chmod
    dev.shell(["chmod", "755", "/data/local/tmp/r/runner.sh"], check=True)
    assert dev.check_output(["/data/local/tmp/r/runner.sh", "a b"]) == "ran 1 a b\n"
    dev.remove("/data/local/tmp/r")


def test_transfer_errors_are_clear(dev, tmp_path):
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    with pytest.raises(DeviceError, match="read-only file system.*push under /data/local/tmp"):
        dev.push(src, "/system/x.bin")
    with pytest.raises(DeviceError, match="permission denied"):
        dev.push(src, "/data/local/tmp/../../x.bin")  # escaping the sandbox is refused
    with pytest.raises(DeviceError, match="does not exist on"):
        dev.pull("/data/local/tmp/nothing.bin", tmp_path / "n.bin")
    with pytest.raises(DeviceError, match="does not exist on this machine"):
        dev.push(tmp_path / "missing.bin", "/data/local/tmp/m.bin")


def test_full_storage_push_fails_clearly(adb, tmp_path):
    with SimulatedPhone(storage_free_bytes=1_000_000) as small:
        adb.connect(small.serial)
        try:
            d = adb.pick_device(small.serial)
            src = tmp_path / "big.bin"
            src.write_bytes(os.urandom(2_000_000))
            raw = adb.run(["push", str(src), "/data/local/tmp/big.bin"], serial=small.serial, check=False)
            assert raw.returncode == 1 and "No space left on device" in raw.stderr  # real client, real message
            with pytest.raises(DeviceError, match="ran out of storage .* free space"):
                d.push(src, "/data/local/tmp/big.bin")
            assert not (small.sandbox / "big.bin").exists()
            small_file = tmp_path / "s.bin"
            small_file.write_bytes(b"s" * 10_000)
            d.push(small_file, "/data/local/tmp/s.bin")  # what fits still goes through
        finally:
            adb.disconnect(small.serial)


# ---- device states and selection -----------------------------------------------------------------------------------


def test_unauthorized_phone(adb):
    with SimulatedPhone(state="unauthorized") as p:
        info = adb.connect(p.serial)
        try:
            assert info.state == "unauthorized"
            with pytest.raises(DeviceError, match=r"unauthorized: unlock the phone and accept"):
                adb.pick_device(p.serial)
            with pytest.raises(DeviceError, match="unauthorized"):  # the real client's error, mapped
                adb.device(p.serial).shell(["true"])
        finally:
            adb.disconnect(p.serial)


def test_offline_phone(adb):
    with SimulatedPhone(state="offline") as p:
        info = adb.connect(p.serial, timeout=2)  # adb waits 10 s for a handshake that never comes
        try:
            assert info.state == "offline"
            with pytest.raises(DeviceError, match="offline: reconnect"):
                adb.pick_device(p.serial)
            with pytest.raises(DeviceError, match="offline"):
                adb.device(p.serial).shell(["true"])
            with pytest.raises(DeviceError, match="offline"):
                adb.device(p.serial).push(__file__, "/data/local/tmp/x.py")
        finally:
            adb.disconnect(p.serial)


def test_several_devices_need_a_serial(adb):
    with SimulatedPhone() as a, SimulatedPhone() as b:
        adb.connect(a.serial)
        adb.connect(b.serial)
        try:
            with pytest.raises(DeviceError, match=r"several devices are connected \(.*--device adb:SERIAL"):
                adb.pick_device(None)
            with pytest.raises(DeviceError, match="several devices"):  # the real client without -s
                adb.run(["shell", "true"])
            assert adb.pick_device(b.serial).check_output(["getprop", "ro.serialno"]).strip() == b.serial
        finally:
            adb.disconnect(a.serial)
            adb.disconnect(b.serial)


def test_no_device_and_unknown_serial(tmp_path):
    empty = private_adb(tmp_path / "home")
    try:
        assert empty.devices() == []
        with pytest.raises(DeviceError, match="no Android device is connected"):
            empty.pick_device(None)
        with pytest.raises(DeviceError, match="no Android device is connected"):
            empty.run(["shell", "true"])
        with pytest.raises(DeviceError, match="127.0.0.1:1 is not attached.*adb connect 127.0.0.1:1"):
            empty.pick_device("127.0.0.1:1")
        with pytest.raises(DeviceError, match="not known to adb"):
            empty.device("nope").shell(["true"])
        with pytest.raises(DeviceError, match="could not connect to 127.0.0.1"):
            empty.connect(f"127.0.0.1:{free_port()}")
    finally:
        empty.kill_server()


def test_android_serial_selects_the_device(adb, phone):
    # two phones connected: without a serial the choice is refused; $ANDROID_SERIAL picks either one, and the
    # commands reach that phone (its own model), not the first one adb lists
    with SimulatedPhone(profile=DeviceProfile(model="Second Phone")) as second:
        adb.connect(second.serial)
        try:
            with pytest.raises(DeviceError, match="several devices are connected"):
                adb.pick_device(None)
            for target, model in ((second, "Second Phone"), (phone, "Simulated Phone")):
                env_adb = Adb(adb.path, server_port=adb.server_port, env={**adb.env, "ANDROID_SERIAL": target.serial})
                picked = env_adb.pick_device(None)
                assert picked.serial == target.serial and picked.getprop("ro.product.model") == model
        finally:
            adb.disconnect(second.serial)


# ---- the binary, parsing, profile, CLI ----------------------------------------------------------------------------


def test_find_adb_order(tmp_path, monkeypatch):
    fake = tmp_path / "adb"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert find_adb(fake) == str(fake)
    assert find_adb(None, {"ADB": str(fake), "PATH": ""}) == str(fake)
    assert find_adb(None, {"PATH": str(tmp_path)}) == str(fake)
    with pytest.raises(DeviceError, match="not an executable adb"):
        find_adb(None, {"ADB": str(tmp_path / "nope")})
    with pytest.raises(DeviceError, match="does not exist or is not executable"):
        find_adb(tmp_path / "nope")
    monkeypatch.setattr("mi2v_export.devices.adb.bundled_adb", lambda: None)
    with pytest.raises(DeviceError, match="adb was not found: .*adbutils"):
        find_adb(None, {"PATH": str(tmp_path / "empty")})


@pytest.mark.unit
def test_parsers():
    text = (
        "List of devices attached\n"
        "127.0.0.1:5555         device product:p model:M_1 device:d transport_id:3\n"
        "0123456789ABCDEF       no permissions (missing udev rules? user is in the plugdev group); see "
        "[http://developer.android.com/tools/device.html] usb:1-1 transport_id:4\n"
        "emulator-5554\tunauthorized\n"
    )
    devs = parse_devices(text)
    assert [(d.serial, d.state) for d in devs][0] == ("127.0.0.1:5555", "device")
    assert devs[0].details == {"product": "p", "model": "M_1", "device": "d", "transport_id": "3"}
    assert devs[1].state.startswith("no permissions (missing udev rules?") and devs[1].details["usb"] == "1-1"
    assert devs[2].state == "unauthorized"
    assert parse_getprop("[a.b]: [1]\n[multi]: [x\ny]\n[empty]: []\n") == {"a.b": "1", "multi": "x\ny", "empty": ""}


@pytest.mark.unit
def test_profile_json_roundtrip_and_validation(tmp_path):
    prof = DeviceProfile(model="Pixel 8 (simulated)", soc_model="Tensor G3", extra_props={"ro.soc.model": "GS301"})
    path = tmp_path / "p.json"
    prof.save(path)
    again = DeviceProfile.load(path)
    assert again == prof
    props = again.props("127.0.0.1:9")
    assert props["ro.soc.model"] == "GS301" and props["ro.mi2v.simulated"] == "1"
    with pytest.raises(BadInputError, match="unknown keys"):
        DeviceProfile.from_dict({"modle": "x"})
    with pytest.raises(BadInputError, match="not valid JSON"):
        path.write_text("{")
        DeviceProfile.load(path)
    with pytest.raises(BadInputError, match="unknown device state"):
        SimulatedPhone(state="bootloader")


def test_profile_drives_what_adb_sees(adb, tmp_path):
    prof = DeviceProfile(model="Pixel 8", device="shiba", name="shiba_sim", thermal_status=2)
    with SimulatedPhone(profile=prof, root=tmp_path / "phone-root") as p:
        adb.connect(p.serial)
        try:
            line = next(d for d in adb.devices() if d.serial == p.serial)
            assert line.details["model"] == "Pixel_8" and line.details["device"] == "shiba"
            d = adb.pick_device(p.serial)
            assert "Thermal Status: 2" in d.check_output(["dumpsys", "thermalservice"])
        finally:
            adb.disconnect(p.serial)
        assert (tmp_path / "phone-root" / "data/local/tmp").is_dir()
    assert (tmp_path / "phone-root").is_dir()  # a root the caller gave is kept


def test_cli_simulate_serves_until_sigterm(adb, tmp_path):
    port_file = tmp_path / "port"
    code = "import mi2v_export.simulator.cli; from mi2v_export.commands.devices import devices_app; devices_app(prog_name='mi2v devices')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "simulate", "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert port_file.exists(), proc.stdout.read() if proc.poll() is not None else "no port file"
        serial = f"127.0.0.1:{int(port_file.read_text())}"
        assert adb.connect(serial).state == "device"
        assert adb.pick_device(serial).shell("echo hi; exit 5") == (5, "hi\n", "")
        adb.disconnect(serial)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "simulated phone listening on 127.0.0.1:" in out and "simulated phone stopped" in out
    assert not port_file.exists()


def test_cli_devices_list_and_profile(adb, phone, tmp_path):
    from typer.testing import CliRunner

    import mi2v_export.simulator.cli  # noqa: F401  (registers `devices profile`)
    from mi2v_export.commands.devices import devices_app

    runner = CliRunner(env={"PATH": os.environ.get("PATH", ""), **{k: v for k, v in adb.env.items()}})
    res = runner.invoke(devices_app, ["list", "--adb", adb.path, "--adb-port", str(adb.server_port), "--json"])
    assert res.exit_code == 0, res.output
    assert any(d["serial"] == phone.serial and d["state"] == "device" for d in json.loads(res.output))
    res = runner.invoke(devices_app, ["profile", "--out", str(tmp_path / "prof.json")])
    assert res.exit_code == 0 and DeviceProfile.load(tmp_path / "prof.json").abi == host_abi()


# ---- the simulator stays apart from the production path ------------------------------------------------------------


def _production_modules():
    from tests.conftest import REPO

    for pkg in ("mi2v_export", "exporters", "kernels"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            if "simulator" not in path.relative_to(REPO).parts:
                yield path.relative_to(REPO), path.read_text()


@pytest.mark.unit
def test_production_modules_never_import_the_simulator():
    import ast
    import re

    imports, mentions = [], []
    for rel, text in _production_modules():
        module = ".".join(rel.with_suffix("").parts)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                base = module.rsplit(".", node.level)[0] + "." + (node.module or "") if node.level else node.module
                names = [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                        r"mi2v_export\.simulator(\.\w+)*|simulator(\.\w+)+", node.value):  # a module name for importlib
                    mentions.append(f"{rel}: {node.value}")
                continue
            imports += [f"{rel}: {n}" for n in names if ".simulator" in n or n.startswith("simulator")]
        # the one property that says "simulated" is read in one place (devices/android_session.py device_facts)
        if "ro.mi2v.simulated" in text and rel.as_posix() != "mi2v_export/devices/android_session.py":
            mentions.append(f"{rel}: reads ro.mi2v.simulated")
        for name in ("host_abi", "host_like", "write_host_runner", "is_host_runner"):
            if name in text:
                mentions.append(f"{rel}: {name}")
    assert imports == []
    # the CLI loads the simulator's commands by name (COMMAND_MODULES) and nothing else names it
    assert mentions == ["mi2v_export/cli.py: mi2v_export.simulator.cli"]
    # and the fact is made in one place (device_facts); readers use that fact, never the property
    assert sum(text.count('"simulated_device":') for rel, text in _production_modules()
               if rel.parts[:2] == ("mi2v_export", "devices") and rel.name == "android_session.py") == 1
