"""farm.yaml's `guest:`: the settings of every guest (memory, timeout, vCPUs, accelerator, CPU
model, machine type), each bounded, and the CPU and machine checked against this QEMU's own
lists before anything is built (farmfile.py reads the rest of the file)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .qemu import known_names
from .scenarios import MAX_CPUS
from .yamlcheck import Checker

ACCELS = ("auto", "tcg", "kvm")
BOOTS = ("snapshot", "cold")  # every case restored from its shape's snapshot, or booted
# Bounds of the guest's settings: below 64 MB the kernel does not boot; above, a typo.
GUEST_BOUNDS = {"memory_mb": (64, 65536), "timeout": (5, 86400), "cpus": (1, MAX_CPUS)}
CPU_RE = re.compile(r"^[A-Za-z0-9_.-]+(,[+-]?[A-Za-z0-9_.-]+(=[A-Za-z0-9_.-]+)?)*$")
MACHINE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class GuestSettings:
    memory_mb: int = 256
    timeout: int = 90
    cpus: int = 1  # vCPUs of every guest unless a scenario says cpus:
    accel: str = "auto"
    cpu: str = "Skylake-Server"
    machine: str = "pc"
    boot: str = "snapshot"


def guest_settings(c: Checker, node) -> GuestSettings:
    g = c.mapping(node, "guest", {"memory_mb": False, "timeout": False, "accel": False,
                                  "cpu": False, "machine": False, "cpus": False, "boot": False})
    kw: dict[str, Any] = {}
    for key, (low, high) in GUEST_BOUNDS.items():
        if key in g:
            kw[key] = c.bounded(g[key], f"guest.{key}", low, high)
    if "accel" in g:
        kw["accel"] = c.choice(g["accel"], "guest.accel", ACCELS)
    if "boot" in g:
        kw["boot"] = c.choice(g["boot"], "guest.boot", BOOTS)
    if "cpu" in g:
        kw["cpu"] = _qemu_name(c, g["cpu"], "guest.cpu", "cpu", CPU_RE)
    if "machine" in g:
        kw["machine"] = _qemu_name(c, g["machine"], "guest.machine", "machine", MACHINE_RE)
    return GuestSettings(**{k: v for k, v in kw.items() if v is not None})


def _qemu_name(c: Checker, node, what: str, kind: str, pattern: re.Pattern) -> str | None:
    """A CPU model or machine type for QEMU: plain words, and one this QEMU knows
    (`qemu-system-x86_64 -cpu help`, `-machine help`), checked before anything is built."""
    val = c.value(node, what, (str,))
    if val is None:
        return None
    if not pattern.match(val):
        c.err(node, f"{what}: {val!r} is not a {kind} name (letters, digits, ._-)")
        return None
    known = known_names(kind)
    name = val.split(",")[0]
    if known is not None and name not in known:
        near = [k for k in sorted(known) if k.lower().startswith(name[:3].lower())][:6]
        c.err(node, f"{what}: QEMU knows no {kind} '{name}' (qemu-system-x86_64 -{kind} "
                    "help lists them" + (f"; e.g. {', '.join(near)}" if near else "") + ")")
        return None
    return val
