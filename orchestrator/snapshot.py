"""Snapshot boot (docs/snapshots.md): a guest of each shape (its kernel, image, disks, memory,
vCPUs, CPU model, machine and accelerator) is booted once per run, to where its agent waits
for a case, and saved; every case of that shape starts in a QEMU of its own from that state
and is told its case over the agent channel. The first worker that needs a shape makes its
snapshot under a lock in the run's own directory, the others wait for it and share it; the
directory goes with the run. A shape whose snapshot cannot be made, or a state that does not
load, is logged, and its cases boot cold."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .files import atomic_write, write_json
from .qemu import GuestRequest, GuestRun

FORMAT = "farm-snapshot-1"  # changes when the agent's snapshot protocol does
READY = "snapshot-ready"  # what the agent says when it waits for its case
MARK = "[farm: the lines above are the boot of the snapshot this guest was restored from: " \
       "the case starts here]"


@dataclass(frozen=True)
class Snapshot:
    key: str
    state: Path  # the saved guest, as QEMU's migration stream wrote it
    console: Path  # its boot's console, which every case's console.log starts with


def shape_key(req: GuestRequest) -> str:
    """Everything that shapes a guest as QEMU sees it: a case may start from a snapshot only
    of a guest built the same way (the same devices in the same slots, the same memory)."""
    def file(p: Path) -> list:
        st = p.stat()
        return [str(p), st.st_size, st.st_mtime_ns]
    shape = {"format": FORMAT, "machine": asdict(req.machine), "kernel": file(req.kernel),
             "initrd": file(req.initrd), "append": req.append,
             "drives": [[*file(d), o] for d, o in req.drives]}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:20]


def snapshot_for(req: GuestRequest, where: Path, boot) -> tuple[Snapshot | None, str]:
    """The snapshot of req's shape in `where` (made now by boot(request) -> GuestRun when no
    worker has made it yet), or None and why not."""
    where.mkdir(parents=True, exist_ok=True)
    key = shape_key(req)
    snap = Snapshot(key, where / f"{key}.state", where / f"{key}.console")
    failed = where / f"{key}.failed"
    with open(where / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be making it: wait for it
        if snap.state.exists():
            return snap, ""
        if failed.exists():
            return None, failed.read_text()
        part = where / f"{key}.state.part"
        run = boot(replace(req, workdir=where / key, save_to=part, stop_on=READY))
        why = _failed(run, part)
        if why:
            failed.write_text(why)
            return None, why
        os.replace(run.console, snap.console)
        os.replace(part, snap.state)
        write_json(where / f"{key}.json", {"key": key, "seconds": run.seconds,
                                           "bytes": snap.state.stat().st_size,
                                           "command": run.cmd})
        return snap, ""


def _failed(run: GuestRun, part: Path) -> str:
    if run.infra_error:
        return f"the snapshot boot failed: {run.infra_error}"
    if not any(e.get("event") == READY for e in run.events):
        end = "timed out" if run.timed_out else f"QEMU exited with {run.exit_code}"
        return f"the snapshot boot's agent never said it was ready ({end})"
    if not part.exists() or part.stat().st_size == 0:
        return "the snapshot boot saved nothing"
    return ""


def with_boot(console: Path, snap: Snapshot) -> None:
    """A restored case's console.log: its snapshot's boot, a marker line, then the case's
    own lines, as a cold boot's console would have them."""
    own = console.read_bytes() if console.exists() else b""
    atomic_write(console, snap.console.read_bytes().rstrip(b"\n") + b"\n" + MARK.encode()
                 + b"\n" + own)
