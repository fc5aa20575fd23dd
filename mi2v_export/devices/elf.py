"""Just enough of the ELF format to tell whether a runner binary can run on a device.

`inspect_runner(path)` reads the ELF identification and program headers (no third-party parser): the class
(32/64-bit), the machine (aarch64, arm, x86_64, x86, riscv64), the file type (executable, position-independent
executable or shared library, relocatable object, core dump) and the program interpreter. Android executables are
linked against bionic's `/system/bin/linker64` (or `linker` for 32-bit); a binary whose interpreter is glibc's
(`/lib/ld-linux-aarch64.so.1`) was built for desktop Linux and fails on a phone with "No such file or directory".
Scripts (`#!`) are reported as such: only a simulated phone, which runs on this machine, can execute one.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

ELF_MAGIC = b"\x7fELF"

# e_machine → (name, Android ABI for this class). ABIs: arm64-v8a, armeabi-v7a, x86_64, x86, riscv64.
_MACHINES = {
    183: ("aarch64", {64: "arm64-v8a"}),
    40: ("arm", {32: "armeabi-v7a"}),
    62: ("x86_64", {64: "x86_64"}),
    3: ("x86", {32: "x86"}),
    243: ("riscv", {64: "riscv64"}),
}
_TYPES = {0: "none", 1: "relocatable", 2: "executable", 3: "shared", 4: "core"}
PT_INTERP = 3
PT_DYNAMIC = 2

ANDROID_LINKERS = ("/system/bin/linker64", "/system/bin/linker", "/apex/com.android.runtime/bin/linker64",
                   "/apex/com.android.runtime/bin/linker")

# Android ABI → the ELF (class, machine name) a binary for it has
ABI_ELF = {"arm64-v8a": (64, "aarch64"), "armeabi-v7a": (32, "arm"), "armeabi": (32, "arm"),
           "x86_64": (64, "x86_64"), "x86": (32, "x86"), "riscv64": (64, "riscv")}


@dataclass(frozen=True)
class RunnerFile:
    """What a runner file is. kind: "elf", "script" or "other"."""

    kind: str
    elf_class: int | None = None  # 32 | 64
    machine: str | None = None  # aarch64, arm, x86_64, x86, riscv, or "e_machine N"
    abi: str | None = None  # the Android ABI this binary is for (None when unknown)
    elf_type: str | None = None  # executable | shared | relocatable | core | none
    interpreter: str | None = None  # PT_INTERP, None for static binaries
    dynamic: bool = False
    shebang: str | None = None  # the `#!` line of a script

    @property
    def android_linked(self) -> bool:
        """Dynamically linked against Android's bionic linker (or static: no interpreter needed)."""
        return self.interpreter is None or self.interpreter in ANDROID_LINKERS

    def describe(self) -> str:
        if self.kind == "script":
            return f"a script ({self.shebang})"
        if self.kind != "elf":
            return "not an executable (neither an ELF binary nor a #! script)"
        arch = f"{self.elf_class}-bit {self.machine}" + (f" ({self.abi})" if self.abi else "")
        link = f"interpreter {self.interpreter}" if self.interpreter else "static"
        return f"ELF {self.elf_type} for {arch}, {link}"


def inspect_runner(path: str | os.PathLike[str]) -> RunnerFile:
    """Classify a runner file from its first bytes and ELF program headers (OSError when unreadable)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if head.startswith(b"#!"):
            fh.seek(0)
            line = fh.readline(256).decode("utf-8", "replace").strip()
            return RunnerFile("script", shebang=line)
        if not head.startswith(ELF_MAGIC) or len(head) < 52:
            return RunnerFile("other")
        ei_class, ei_data = head[4], head[5]
        bits = {1: 32, 2: 64}.get(ei_class)
        if bits is None or ei_data not in (1, 2):
            return RunnerFile("other")
        end = "<" if ei_data == 1 else ">"
        e_type, e_machine = struct.unpack_from(end + "HH", head, 16)
        name, abis = _MACHINES.get(e_machine, (f"e_machine {e_machine}", {}))
        if bits == 64:
            if len(head) < 64:
                return RunnerFile("other")
            e_phoff = struct.unpack_from(end + "Q", head, 32)[0]
            e_phentsize, e_phnum = struct.unpack_from(end + "HH", head, 54)
        else:
            e_phoff = struct.unpack_from(end + "I", head, 28)[0]
            e_phentsize, e_phnum = struct.unpack_from(end + "HH", head, 42)
        interpreter = None
        dynamic = False
        if e_phoff and e_phentsize and 0 < e_phnum <= 256:
            fh.seek(e_phoff)
            table = fh.read(e_phentsize * e_phnum)
            for i in range(min(e_phnum, len(table) // max(e_phentsize, 1))):
                entry = table[i * e_phentsize:(i + 1) * e_phentsize]
                if bits == 64:
                    if len(entry) < 40:
                        break
                    p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(end + "IIQQQQ", entry)
                else:
                    if len(entry) < 32:
                        break
                    p_type, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(end + "IIIII", entry)
                if p_type == PT_DYNAMIC:
                    dynamic = True
                elif p_type == PT_INTERP and 0 < p_filesz <= 4096:
                    here = fh.tell()
                    fh.seek(p_offset)
                    interpreter = fh.read(p_filesz).split(b"\0", 1)[0].decode("utf-8", "replace")
                    fh.seek(here)
    return RunnerFile("elf", elf_class=bits, machine=name, abi=abis.get(bits), elf_type=_TYPES.get(e_type, "other"),
                      interpreter=interpreter, dynamic=dynamic)


def runs_on(info: RunnerFile, abilist: list[str]) -> bool:
    """True when an ELF binary's class and machine match one of the device's ABIs."""
    if info.kind != "elf":
        return False
    return any(ABI_ELF.get(abi) == (info.elf_class, info.machine) for abi in abilist)


def is_shared_library(path: str | os.PathLike[str], info: RunnerFile) -> bool:
    """A `.so` (shared object without an interpreter) rather than a position-independent executable."""
    name = Path(path).name
    return info.elf_type == "shared" and info.interpreter is None and (".so" in name or name.startswith("lib"))
