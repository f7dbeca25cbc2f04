"""One guest's life from start to exit: QEMU started in the sandbox (sandbox.py) and checked
to run confined, its agent channel followed line by line, host injections done when the
workload asks, and a guest past its timeout killed."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .bounds import CONSOLE_CAP, LINE_CAP, Budget, Flood, cut_file, cut_line
from .errors import InfraError
from .files import tail
from .qemu import QMP, GuestRequest, GuestRun, inject, qemu_command
from .runner import Runner, quote
from .sandbox import is_confined, observed, take_file


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
    cmd, boxed = _command(req, runner, qmp_path, agent_path, own)
    qemu_log = req.workdir / "qemu.log"
    state = _state_file(req)
    run = GuestRun(cmd, None, False, 0.0, req.workdir / "console.log", req.workdir / "agent.log")
    start = time.monotonic()
    with open(qemu_log, "w") as qlog, open(run.agent, "w") as alog:
        qlog.write(f"$ {quote(cmd)}\n")
        qlog.flush()
        proc = runner.start(cmd, stdout=qlog, stderr=qlog)
        qmp = chan = None
        flood = ""
        try:
            chan = _connect(agent_path, proc, start + 15)
            qmp = QMP(_connect(qmp_path, proc, start + 15))
            if boxed:
                _check_confined(proc.pid, req.machine.binary, qlog)
            if state is not None and req.restore is not None:
                _restore(qmp, chan, state, req.case_line, run)
            _follow(req, run, proc, chan, qmp, alog, start, Budget(own / "console.log", start))
        except _Stop:
            if state is not None and req.save_to is not None:
                _save(qmp, state, run)
        except Flood as e:
            flood = str(e)
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
            if state is not None:
                os.close(state)
            take_file(own, run.console)
            cut_file(run.console, CONSOLE_CAP, "console")
    run.exit_code = proc.returncode
    run.seconds = round(time.monotonic() - start, 3)
    _why_it_ended(run, req, qemu_log, flood)
    return run


def _state_file(req: GuestRequest) -> int | None:
    """The file a guest's state is saved to or restored from, opened here: QEMU gets the
    open file over QMP (its sandbox does not see the path)."""
    if req.save_to is not None:
        return os.open(req.save_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if req.restore is not None:
        return os.open(req.restore, os.O_RDONLY)
    return None


def _command(req: GuestRequest, runner: Runner, qmp: Path, agent: Path,
             own: Path) -> tuple[list[str], bool]:
    """The guest's QEMU command line, in the sandbox where the host makes one (QEMU's own
    seccomp filter, -sandbox, is on either way); and whether it is."""
    sockdir = qmp.parent
    cmd = qemu_command(req, qmp, agent, own / "console.log")
    box = runner.box()
    if box is None:
        return cmd, False
    return box.guest(cmd, rw=(own, sockdir), kvm=req.machine.accel == "kvm",
                     ro=(req.kernel, req.initrd, *(d for d, _ in req.drives))), True


def _save(qmp: QMP, fd: int, run: GuestRun) -> None:
    """Save the stopped guest's whole state (memory, CPUs, devices) into fd."""
    try:
        qmp.execute("stop")
        qmp.send_fd("state", fd)
        qmp.execute("migrate", uri="fd:state")
        qmp.migration(timeout=120)
    except (OSError, InfraError) as e:
        run.infra_error = f"the guest's state was not saved: {e}"


def _restore(qmp: QMP, chan: socket.socket, fd: int, line: str, run: GuestRun) -> None:
    """Load a saved guest into this QEMU (started with -incoming defer, its agent channel
    already connected, so that the guest sees its host connected throughout), let it run
    on, and tell its agent the case. A state that does not load ends the guest, marked
    restore_failed: the case has not started, and may boot cold."""
    try:
        qmp.send_fd("state", fd)
        qmp.execute("migrate-incoming", uri="fd:state")
        qmp.migration(timeout=120)
        qmp.execute("cont")
        chan.sendall(line.encode() + b"\n")
    except (OSError, InfraError) as e:
        run.restore_failed = True
        raise InfraError(f"the saved guest did not start: {e}") from e


def _why_it_ended(run: GuestRun, req: GuestRequest, qemu_log: Path, flood: str) -> None:
    """A flood, or QEMU's own words (a CPU model it does not know, memory it cannot
    allocate), which say more than the channel error that followed them."""
    if flood:
        run.infra_error = flood
    elif not run.timed_out and not req.stop_on:
        said = qemu_said(qemu_log)
        if run.exit_code not in (0, None):
            run.infra_error = f"QEMU exited with {run.exit_code}: " + (
                said or " | ".join(tail(qemu_log, 8)))
        elif run.infra_error is None and "terminating on signal" in said:
            run.infra_error = "QEMU was stopped by a signal: " + said


def _check_confined(pid: int, binary: str, qlog) -> None:
    """The guest's QEMU, seen from /proc, runs as the sandbox made it (qemu.log says how)."""
    seen = observed(pid, Path(binary).name)
    qlog.write(f"# confined: {seen or 'QEMU not found under bwrap'}\n")
    qlog.flush()
    if not is_confined(seen):
        raise InfraError(f"QEMU does not run confined (unprivileged, under seccomp): {seen}")


def _follow(req: GuestRequest, run: GuestRun, proc, chan: socket.socket, qmp: QMP, alog,
            start: float, budget: Budget) -> None:
    """Read the agent channel to its end, or to the guest's timeout, the guest's output
    checked against its caps all along (bounds.py). After QEMU ends, what it had sent is
    still read to the end of the stream: the last lines (the result, agent-end) come just
    before the guest stops. A line past LINE_CAP is logged cut, the rest of it dropped."""
    deadline = start + req.timeout
    buf, dropping = b"", False
    while True:
        exited = proc.poll() is not None
        budget.check()
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
        budget.check(len(data))
        buf += data
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            if not dropping:
                _agent_line(raw.decode(errors="replace"), req, run, chan, qmp, alog, start)
            dropping = False
        if len(buf) > LINE_CAP:  # a line that does not end: its start kept, the rest dropped
            if not dropping:
                alog.write(cut_line(buf.decode(errors="replace")))
            buf, dropping = b"", True
    if buf and not dropping:  # a line cut off when the guest stopped: kept, not parsed
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
        run.injections.append(inject(qmp, event, chan, req.machine))
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
