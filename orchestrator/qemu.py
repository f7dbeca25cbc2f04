"""QEMU guests: the command line (a list, built in one place), QMP, and one guest's life from
start to exit, with the host side of the injection handshake (the machine check a host
injector's registry row names, at the guest-physical address the workload reports)."""

from __future__ import annotations

import functools
import json
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InfraError
from .files import tail
from .registry import machine_check
from .runner import Runner, quote
from .sandbox import is_confined, observed, take_file

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

    def hmp(self, line: str, cpu: int | None = None) -> str:
        """A monitor command, for vCPU `cpu` where it matters (`info registers`)."""
        extra = {"cpu-index": cpu} if cpu is not None else {}
        return self.execute("human-monitor-command", **{"command-line": line}, **extra)

    def close(self) -> None:
        self.sock.close()


def _connect(path: Path, proc, deadline: float) -> socket.socket:
    """Connect to a socket QEMU listens on. QEMU creates the file before it listens, so
    'no such file' and 'connection refused' both mean: not yet."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
        if proc.poll() is not None or time.monotonic() > deadline:
            raise InfraError(f"QEMU did not open {path.name}")
        time.sleep(0.005)


def run_guest(req: GuestRequest, runner: Runner) -> GuestRun:
    """Boot one guest and follow it to its end: agent events are logged as they come, host
    injections are done when the workload asks, and a guest past its timeout is killed."""
    req.workdir.mkdir(parents=True, exist_ok=True)
    # private (0700) and short (a socket path has at most 107 bytes), inside the run's own
    # socket directory when it has one, which the next run removes if this one is killed
    sockdir = Path(tempfile.mkdtemp(prefix="farm-", dir=req.sockets))
    qmp_path, agent_path = sockdir / "qmp.sock", sockdir / "agent.sock"
    own = req.workdir / ".qemu"  # the one place of the case's directory QEMU writes
    own.mkdir(exist_ok=True)
    cmd = qemu_command(req, qmp_path, agent_path, own / "console.log")
    box = runner.box()  # QEMU's own seccomp filter (-sandbox) is on either way
    if box is not None:
        cmd = box.guest(cmd, rw=(own, sockdir), kvm=req.machine.accel == "kvm",
                        ro=(req.kernel, req.initrd, *(d for d, _ in req.drives)))
    qemu_log = req.workdir / "qemu.log"
    run = GuestRun(cmd, None, False, 0.0, req.workdir / "console.log", req.workdir / "agent.log")
    start = time.monotonic()
    with open(qemu_log, "w") as qlog, open(run.agent, "w") as alog:
        qlog.write(f"$ {quote(cmd)}\n")
        qlog.flush()
        proc = runner.start(cmd, stdout=qlog, stderr=qlog)
        qmp = chan = None
        try:
            chan = _connect(agent_path, proc, start + 15)
            qmp = QMP(_connect(qmp_path, proc, start + 15))
            if box is not None:
                _check_confined(proc.pid, req.machine.binary, qlog)
            _follow(req, run, proc, chan, qmp, alog, start)
        except _Stop:
            pass
        except (OSError, InfraError) as e:
            try:  # a channel that fails often means QEMU is ending: it may say why
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None or proc.returncode == 0:
                run.infra_error = f"guest channel: {e}"
        finally:
            for s in (qmp, chan):
                if s is not None:
                    s.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            shutil.rmtree(sockdir, ignore_errors=True)
            take_file(own, run.console)
    run.exit_code = proc.returncode
    run.seconds = round(time.monotonic() - start, 3)
    if not run.timed_out and not req.stop_on:
        said = qemu_said(qemu_log)
        if run.exit_code not in (0, None):
            # QEMU's own words (a CPU model it does not know, memory it cannot allocate) say
            # more than the channel error that followed them
            run.infra_error = f"QEMU exited with {run.exit_code}: " + (
                said or " | ".join(tail(qemu_log, 8)))
        elif run.infra_error is None and "terminating on signal" in said:
            run.infra_error = "QEMU was stopped by a signal: " + said
    return run


def _check_confined(pid: int, binary: str, qlog) -> None:
    """The guest's QEMU, seen from /proc, runs as the sandbox made it (qemu.log says how)."""
    seen = observed(pid, Path(binary).name)
    qlog.write(f"# confined: {seen or 'QEMU not found under bwrap'}\n")
    qlog.flush()
    if not is_confined(seen):
        raise InfraError(f"QEMU does not run confined (unprivileged, under seccomp): {seen}")


def _follow(req: GuestRequest, run: GuestRun, proc, chan: socket.socket, qmp: QMP, alog,
            start: float) -> None:
    """Read the agent channel to its end, or to the guest's timeout. After QEMU ends, what it
    had sent is still read to the end of the stream: the last lines (the result, agent-end)
    come just before the guest stops."""
    deadline = start + req.timeout
    buf = b""
    while True:
        exited = proc.poll() is not None
        if time.monotonic() > deadline:
            run.timed_out = True
            break
        if chan is None:
            if exited:
                break
            time.sleep(0.02)
            continue
        ready, _, _ = select.select([chan], [], [], 0.05)
        if not ready:
            if exited:
                break
            continue
        data = chan.recv(65536)
        if not data:
            chan.close()
            chan = None
            continue
        buf += data
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            _agent_line(raw.decode(errors="replace"), req, run, chan, qmp, alog, start)
    if buf:  # a line cut off when the guest stopped: kept in the log, not parsed
        alog.write(buf.decode(errors="replace") + "\n")


def _agent_line(line: str, req: GuestRequest, run: GuestRun, chan: socket.socket, qmp: QMP,
                alog, start: float) -> None:
    """One line of the agent: logged; an event is kept, and answered when it asks the host
    to inject (or is the event that ends the guest at once)."""
    alog.write(line + "\n")
    alog.flush()
    event = _event(line)
    if event is None:
        return
    event["t"] = round(time.monotonic() - start, 3)
    run.events.append(event)
    if event.get("event") == "inject-request":
        run.injections.append(_inject(qmp, event, chan, req.machine))
    if req.stop_on and event.get("event") == req.stop_on:
        raise _Stop


def qemu_said(qemu_log: Path, n: int = 4) -> str:
    """The last lines QEMU itself wrote (its log holds the command line first)."""
    said = [ln.strip() for ln in tail(qemu_log, 100) if ln.strip() and not ln.startswith("$ ")]
    return " | ".join(said[-n:])


class _Stop(Exception):
    pass


def _event(line: str) -> dict | None:
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


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


def _inject(qmp: QMP, event: dict, chan: socket.socket | None, machine: Machine) -> dict:
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
