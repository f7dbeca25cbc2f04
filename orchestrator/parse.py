"""Pure parsing: a guest's console lines and agent events become observables. Nothing here
starts a process, so a saved result directory can be re-parsed without a kernel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
RECOVERY = re.compile(r"Memory failure: (0x[0-9a-f]+): recovery action for (.+?): (\w+)\s*$")
SIGBUS_SENT = re.compile(r"Memory failure: (0x[0-9a-f]+): Sending SIGBUS to (\S+):(\d+)")
MCE_KILL = re.compile(r"MCE: Killing (\S+):(\d+) due to hardware memory corruption")
PANIC = re.compile(r"Kernel panic - not syncing: ?(.*)")
KERNEL_ERROR = re.compile(
    r"(Oops: |BUG: |WARNING: |general protection fault|Kernel panic - not syncing|"
    r"kernel BUG at |Unable to handle kernel|soft lockup|hung_task)")
HW_ERROR = re.compile(r"\[Hardware Error\]: (.*)")


@dataclass
class ConsoleFacts:
    lines: int = 0
    recovery: list[str] = field(default_factory=list)  # "dirty LRU page: Recovered"
    recovery_pfns: list[str] = field(default_factory=list)
    sigbus_sent: list[str] = field(default_factory=list)  # "poison:54"
    mce_killed: list[str] = field(default_factory=list)
    hardware_errors: list[str] = field(default_factory=list)
    kernel_errors: list[str] = field(default_factory=list)
    panic: str | None = None
    memory_failure_lines: list[str] = field(default_factory=list)


def strip_timestamp(line: str) -> str:
    return TIMESTAMP.sub("", line.rstrip("\r\n"))


def parse_console(lines: Iterable[str]) -> ConsoleFacts:
    facts = ConsoleFacts()
    for raw in lines:
        facts.lines += 1
        line = strip_timestamp(raw)
        if "Memory failure:" in line or "soft offline" in line.lower():
            facts.memory_failure_lines.append(line)
        m = RECOVERY.search(line)
        if m:
            facts.recovery_pfns.append(m.group(1))
            facts.recovery.append(f"{m.group(2)}: {m.group(3)}")
        m = SIGBUS_SENT.search(line)
        if m:
            facts.sigbus_sent.append(f"{m.group(2)}:{m.group(3)}")
        m = MCE_KILL.search(line)
        if m:
            facts.mce_killed.append(f"{m.group(1)}:{m.group(2)}")
        m = HW_ERROR.search(line)
        if m:
            facts.hardware_errors.append(m.group(1))
        m = PANIC.search(line)
        if m and facts.panic is None:
            facts.panic = m.group(1).strip()
        if KERNEL_ERROR.search(line):
            facts.kernel_errors.append(line.strip())
    return facts


def parse_agent(lines: Iterable[str]) -> list[dict]:
    """The agent channel: one JSON object a line; anything else is ignored (and kept in the
    log), so a torn or foreign line never breaks a case."""
    events = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and "event" in ev:
            events.append(ev)
    return events


def _first(events: list[dict], name: str) -> dict | None:
    return next((e for e in events if e.get("event") == name), None)


def observe(console: ConsoleFacts, events: list[dict], *, timed_out: bool) -> dict:
    """Observables of one case, by the names scenarios use in `expect`."""
    start, result, end = (_first(events, n) for n in ("agent-start", "result", "agent-end"))
    if console.panic is not None:
        guest = "panicked"
    elif timed_out:
        guest = "hung"
    else:
        guest = "survived"
    obs: dict = {
        "guest": guest,
        "booted": start is not None,
        "recovery": console.recovery,
        "kernel_errors": console.kernel_errors,
        "panic": console.panic,
        "sigbus_sent": console.sigbus_sent,
        "mce_killed": console.mce_killed,
        "workload_rc": end.get("rc") if end else None,
    }
    if start and end and isinstance(start.get("hardware_corrupted_kb"), int) \
            and isinstance(end.get("hardware_corrupted_kb"), int):
        obs["hardware_corrupted_kb"] = end["hardware_corrupted_kb"] - start["hardware_corrupted_kb"]
    if result:
        inj, acc = result.get("inject_signal"), result.get("access_signal")
        first = inj or acc
        before, after = result.get("pfn_before"), result.get("pfn_after")
        obs.update({
            "inject_errno": result.get("inject_errno"),
            "inject_signal": inj["code"] if inj else None,
            "access_signal": acc["code"] if acc else None,
            "si_addr_is_page": first["addr_is_page"] if first else None,
            "si_addr_lsb": first["addr_lsb"] if first else None,
            "data": result.get("data"),
            "pfn_before": before,
            "pfn_after": after,
            "pfn_changed": (before != after) if after not in (None, "0", "0x0") else None,
            "fsync_errno": None if result.get("fsync_errno", -1) < 0 else result["fsync_errno"],
        })
    setup = _first(events, "setup-error")
    if setup:
        obs["setup_error"] = setup.get("what", "?") + (
            f": {setup['error']}" if setup.get("error") else "")
    return obs
