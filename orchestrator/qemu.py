"""QEMU: a guest's command line (a list, built in one place), QMP, and the host side of the
injection handshake (the machine check a host injector's registry row names, at the
guest-physical address the workload reports). A guest's life from start to exit: guest.py."""

from __future__ import annotations

import functools
import json
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InfraError
from .registry import machine_check
from .runner import Runner

# How QEMU's `mce` monitor command writes each kind of machine check (see DESIGN.md): its
# MCi_STATUS and MCG_STATUS, in bank 9 with misc 0x8c (address LSB 12, physical address).
MCE_BANK = 9
MCE_MISC = "0x8c"
MCE_STATUS = {
    "srao": ("0xbd000000000000c0", "0x5"),  # uncorrected, action optional; RIPV|MCIP
    "srar": ("0xbd80000000000134", "0x7"),  # uncorrected, action required; RIPV|EIPV|MCIP
}


@dataclass(frozen=True)
class Machine:
    binary: str = "qemu-system-x86_64"
    machine: str = "pc"
    cpu: str = "Skylake-Server"
    memory_mb: int = 256
    accel: str = "tcg"
    cpus: int = 1


@dataclass(frozen=True)
class GuestRequest:
    machine: Machine
    kernel: Path
    initrd: Path
    append: str
    workdir: Path
    timeout: float
    drives: tuple[tuple[Path, str], ...] = ()  # (raw image, extra -drive options)
    stop_on: str | None = None  # an agent event that ends the guest at once (the KVM probe)
    sockets: Path | None = None  # the run's directory for guests' sockets (default: /tmp)
    save_to: Path | None = None  # at stop_on, the guest's state is saved there (snapshot.py)
    restore: Path | None = None  # a saved state the guest starts from instead of booting
    case_line: str = ""  # what a restored guest's agent is told (its case's farm.* words)


@dataclass
class GuestRun:
    cmd: list[str]
    exit_code: int | None
    timed_out: bool
    seconds: float
    console: Path
    agent: Path
    events: list[dict] = field(default_factory=list)
    injections: list[dict] = field(default_factory=list)
    infra_error: str | None = None
    restore_failed: bool = False  # the saved state did not load: nothing of the case ran


def opt(value: object) -> str:
    """A value inside a QEMU option list (key=value,...): a comma in it is written twice, so
    a path with a comma stays one path and never adds an option."""
    return str(value).replace(",", ",,")


@functools.cache
def known_names(kind: str, binary: str = "qemu-system-x86_64") -> frozenset[str] | None:
    """The CPU models (kind "cpu") or machine types ("machine") this QEMU knows, from its
    own help; None when QEMU is not installed (the tool check says so later)."""
    if shutil.which(binary) is None:
        return None
    out = Runner().run([binary, f"-{kind}", "help"], check=False, timeout=30)
    names = set()
    for line in out.output.splitlines():
        words = line.split()
        if kind == "cpu" and len(words) >= 2 and words[0] == "x86":
            names.add(words[1])
        elif kind == "machine" and words and not line.startswith((" ", "Supported")):
            names.add(words[0])
    return frozenset(names) or None


def smp(m: Machine) -> list[str]:
    """-smp and the accelerator's threading for m.cpus vCPUs: one socket each (without ACPI
    the guest reads the MP table, which lists only the first CPU of a socket: plain -smp 2
    boots one CPU), and one host thread per vCPU under TCG."""
    if m.cpus <= 1:
        return ["-accel", m.accel, "-smp", "1"]
    accel = f"{m.accel},thread=multi" if m.accel == "tcg" else m.accel
    return ["-accel", accel, "-smp", f"{m.cpus},sockets={m.cpus},cores=1,threads=1"]


# QEMU's own seccomp filter: no obsolete system calls, no setuid, no fork or exec, no CPU
# affinity or scheduler changes (docs/sandbox.md)
SECCOMP = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def qemu_command(req: GuestRequest, qmp: Path, agent: Path,
                 console: Path | None = None) -> list[str]:
    m = req.machine
    console = console or req.workdir / "console.log"
    cmd = [m.binary, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-M", m.machine, *smp(m), "-cpu", m.cpu, "-m", str(m.memory_mb),
           "-kernel", str(req.kernel), "-initrd", str(req.initrd), "-append", req.append,
           "-chardev", f"file,id=con,path={opt(console)}",
           "-serial", "chardev:con",
           "-device", "virtio-serial-pci",
           "-chardev", f"socket,id=agent,path={opt(agent)},server=on,wait=off",
           "-device", "virtserialport,chardev=agent,name=farm.agent",
           "-qmp", f"unix:{opt(qmp)},server=on,wait=off", "-sandbox", SECCOMP]
    if req.restore is not None:  # the state comes over QMP, once the agent is connected
        cmd += ["-incoming", "defer"]
    for image, options in req.drives:
        cmd += ["-drive", f"file={opt(image)},format=raw,if=virtio,snapshot=on"
                + (f",{options}" if options else "")]
    return cmd


class QMP:
    """A minimal QMP client over a unix socket."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise InfraError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, **arguments) -> dict:
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise InfraError(f"QMP {command}: {reply['error']}")
            return reply.get("return", {})

    def send_fd(self, name: str, fd: int) -> None:
        """Give QEMU one of the farm's open files, as `name` (QMP getfd): QEMU reads or
        writes a saved state through it without seeing its path."""
        msg = json.dumps({"execute": "getfd", "arguments": {"fdname": name}}).encode() + b"\n"
        socket.send_fds(self.sock, [msg], [fd])
        while "event" in (reply := self._read()):
            pass
        if "error" in reply:
            raise InfraError(f"QMP getfd: {reply['error']}")

    def migration(self, timeout: float) -> None:
        """Wait for the migration (a save or a restore) to complete, or say how it failed."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.execute("query-migrate")
            if st.get("status") == "completed":
                return
            if st.get("status") in ("failed", "cancelled"):
                raise InfraError(f"migration {st['status']}: {st.get('error-desc', '?')}")
            if time.monotonic() > deadline:
                raise InfraError(f"migration not complete after {timeout:.0f} s "
                                 f"({st.get('status', '?')})")
            time.sleep(0.005)

    def hmp(self, line: str, cpu: int | None = None) -> str:
        """A monitor command, for vCPU `cpu` where it matters (`info registers`)."""
        extra = {"cpu-index": cpu} if cpu is not None else {}
        return self.execute("human-monitor-command", **{"command-line": line}, **extra)

    def close(self) -> None:
        self.sock.close()


CPL = re.compile(r"\bCPL=(\d)")
SRAR_ATTEMPTS = 400


def guest_address(value, machine: Machine) -> str:
    """The guest-physical address a workload asked to poison, as the monitor gets it: a
    page-aligned address inside the guest's RAM, or an error. It comes from the guest, and
    goes onto a monitor command line."""
    try:
        gpa = int(value, 16) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise InfraError(f"the guest asked to poison {str(value)[:40]!r}, not an address") \
            from None
    ram = machine.memory_mb << 20
    # Above 2 GB the PC machines put part of RAM above 4 GB, past the PCI hole.
    top = ram if ram <= 2 << 30 else (4 << 30) + ram
    if gpa % 4096 or not 0 <= gpa < top:
        raise InfraError(f"the guest asked to poison {gpa:#x}: not a page-aligned address in "
                         f"its {machine.memory_mb} MB of RAM")
    return f"{gpa:#x}"


def guest_cpu(value, machine: Machine) -> int:
    """The vCPU a workload runs on, as it said: an index of the guest's vCPUs, or an error.
    It comes from the guest, and goes onto a monitor command line."""
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 0 <= value < max(machine.cpus, 1):
        raise InfraError(f"the guest named vCPU {str(value)[:20]!r}, not one of its "
                         f"{machine.cpus}")
    return value


def inject(qmp: QMP, event: dict, chan: socket.socket | None, machine: Machine) -> dict:
    """Inject the machine check of the injector the workload names, at the guest-physical
    address it reported.

    An SRAR means "the instruction now running consumed poison": it must arrive while the
    vCPU runs the workload in user mode, or the guest rightly panics ("Data load in
    unrecoverable area of kernel"). The workload spins on the page; the farm stops the VM,
    injects only if the vCPU is at CPL 3, and lets it go on, trying again otherwise. An
    injector whose row says in_kernel does the opposite on purpose: the workload sleeps, and
    the machine check lands at CPL 0, where the kernel must panic."""
    name = event.get("injector")
    check = machine_check(name) if isinstance(name, str) else None
    if check is None:
        raise InfraError(f"the guest asked for a machine check of {str(name)[:40]!r}, not a "
                         "host injector")
    kind, cpl = check
    status, mcg = MCE_STATUS[kind]
    gpa = guest_address(event.get("gpa"), machine)
    cpu = guest_cpu(event.get("cpu", 0), machine)
    # On several vCPUs the machine check is broadcast, as a real one is: the guest's handler
    # waits for every CPU to enter it (without LMCE, which needs firmware the PVH boot skips).
    broadcast = "-b " if machine.cpus > 1 else ""
    line = f"mce {broadcast}{cpu} {MCE_BANK} {status} {mcg} {gpa} {MCE_MISC}"
    record = {"injector": name, "mce": kind, "gpa": gpa, "cpu": cpu, "monitor": line}
    if cpl is None:
        record["reply"] = qmp.hmp(line)
        if chan is not None:
            chan.sendall(b"injected\n")
        return record
    for attempt in range(1, SRAR_ATTEMPTS + 1):
        qmp.execute("stop")
        m = CPL.search(qmp.hmp("info registers", cpu))
        if m and m.group(1) == cpl:
            record["reply"] = qmp.hmp(line)
            qmp.execute("cont")
            record["attempts"] = attempt
            return record
        qmp.execute("cont")
        time.sleep(0.002)
    raise InfraError(f"{name}: the vCPU was never at CPL {cpl} in {SRAR_ATTEMPTS} tries")
