"""Which accelerator the guests get: `auto` boots the real kernel under KVM with a short
timeout (/dev/kvm can open yet hang nested guests, so only a guest that reaches its agent
counts as working) and falls back to TCG; the answer is remembered until the host reboots."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from .files import write_json
from .guest import run_guest
from .qemu import GuestRequest
from .runner import Runner

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def probe_accel(requested: str, base: GuestRequest, runner: Runner) -> tuple[str, str]:
    """The accelerator to use and why."""
    if requested != "auto":
        return requested, f"{requested} (asked for)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "tcg (/dev/kvm not usable)"
    probe = replace(base, machine=replace(base.machine, accel="kvm"), timeout=10.0,
                    stop_on="agent-start", drives=())
    run = run_guest(probe, runner)
    if any(e.get("event") == "agent-start" for e in run.events):
        return "kvm", f"kvm (probe guest reached its agent in {run.seconds:.1f}s)"
    why = "timed out" if run.timed_out else (run.infra_error or f"exit {run.exit_code}")
    return "tcg", f"tcg (KVM probe failed: {why})"


def accelerator(requested: str, probe: GuestRequest, cache: Path,
                runner: Runner) -> tuple[str, str]:
    """probe_accel, remembered in the cache until the host reboots: a KVM that hangs costs
    the probe's whole timeout, and the answer does not change while the host is up."""
    if requested != "auto":
        return probe_accel(requested, probe, runner)
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = ""
    memo = cache / "accel-probe.json"
    try:
        seen = json.loads(memo.read_text())
        if boot and seen.get("boot_id") == boot and seen.get("qemu") == probe.machine.binary:
            return seen["accel"], f"{seen['reason']}, probed earlier since this host booted"
    except (OSError, ValueError, KeyError):
        pass
    accel, why = probe_accel("auto", probe, runner)
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_json(memo, {"boot_id": boot, "qemu": probe.machine.binary, "accel": accel,
                      "reason": why})
    return accel, why
