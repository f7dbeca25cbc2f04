"""The one seam through which the farm starts processes (here; ssh.py is the same seam on
another host over SSH): every command is a list, logged shell-quoted so that a user can paste
it to reproduce the step. Code from a kernel tree goes through contained(), the sandbox."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import InfraError
from .sandbox import BASE_ENV, NoSandbox, Sandbox, host_sandbox, locale
from .signals import child_setup, deferred_signals

log = logging.getLogger("farm.cmd")


def quote(cmd: Sequence[str], cwd: Path | str | None = None,
          env: Mapping[str, str] | None = None) -> str:
    """The command as a line a user can paste into a shell."""
    words = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()] + [
        shlex.quote(str(c)) for c in cmd]
    line = " ".join(words)
    return f"(cd {shlex.quote(str(cwd))} && {line})" if cwd else line


def _signal_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """Ctrl-C to a child's whole process group (a pytest session, its workers and their
    guests; a make and its compilers), time for it to tidy up, then SIGKILL to the group."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10)):
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    _signal_group(proc)  # anything of the group that outlived its leader


@dataclass
class Completed:
    cmd: list[str]
    returncode: int
    output: str
    seconds: float


class _Lines:
    """A command's output as it comes: cut into lines, appended to a log file and passed to
    on_line one by one, and kept for the result."""

    def __init__(self, log_path: Path | None, on_line: Callable[[str], None] | None):
        self.lines: list[str] = []
        self.sink = open(log_path, "a") if log_path else None
        self.on_line, self.buf = on_line, ""

    def write(self, text: str) -> None:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self._line(line + "\n")

    def _line(self, line: str) -> None:
        self.lines.append(line)
        if self.sink:
            self.sink.write(line)
        if self.on_line:
            self.on_line(line.rstrip("\n"))

    def flush(self) -> None:
        pass

    def drain(self, stream) -> None:
        """Read a stream to its end into this sink (a child's last words as it stops)."""
        try:
            for line in stream:
                self.write(line)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.buf:  # a last line without its newline, kept as it came
            self._line(self.buf)
            self.buf = ""
        if self.sink:
            self.sink.close()
            self.sink = None

    def completed(self, cmd: list[str], rc: int, start: float, check: bool, line: str,
                  where: str = "") -> Completed:
        if check and rc != 0:
            raise InfraError(f"{where}command failed with exit code {rc}: {line}\n"
                             + "".join(self.lines[-20:]))
        return Completed(cmd, rc, "".join(self.lines), time.monotonic() - start)


_PROBED: dict[bool, Sandbox | str] = {}
_GUARDS: list[int] = []


def sandbox_here() -> Sandbox | str:
    """This host's sandbox, tried once per process with a command that does nothing; or,
    when there is none, why not."""
    if True not in _PROBED:
        try:
            box = host_sandbox()
            res = subprocess.run(box.argv(["true"]), env=dict(BASE_ENV), capture_output=True,
                                 text=True, timeout=60, stdin=subprocess.DEVNULL)
            if res.returncode == 0:
                guard, _keep = os.pipe()  # the write end stays open as long as this process
                _GUARDS.append(_keep)
                box = replace(box, guard=guard)
            _PROBED[True] = box if res.returncode == 0 else (
                "bubblewrap cannot make a sandbox here: "
                + (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1][:300])
        except NoSandbox as e:
            _PROBED[True] = str(e)
        except (OSError, subprocess.TimeoutExpired) as e:
            _PROBED[True] = f"bubblewrap cannot make a sandbox here: {e}"
    return _PROBED[True]


def guard_fds(cmd: Sequence[str]) -> tuple[int, ...]:
    """The fds a command must inherit: a sandboxed one, its guard (Sandbox.guard)."""
    box = _PROBED.get(True)
    if isinstance(box, Sandbox) and box.guard is not None and cmd and cmd[0] == box.bwrap:
        return (box.guard,)
    return ()


class Runner:
    """Runs commands on this host. Tests replace it only where a recording stands in.
    sandbox=False (`--no-sandbox`): code from a kernel tree runs as the farm's own user,
    outside any sandbox, even where the host could make one."""

    def __init__(self, on_command: Callable[[str], None] | None = None, sandbox: bool = True):
        self.on_command = on_command
        self.sandbox = sandbox

    def _announce(self, cmd, cwd, env):
        line = quote(cmd, cwd, env)
        log.info("$ %s", line)
        if self.on_command:
            self.on_command(line)

    @staticmethod
    def _env(env: Mapping[str, str] | None, clean: bool = False) -> dict[str, str] | None:
        if clean:
            return dict(env or {})
        return {**os.environ, **env} if env else None

    def box(self) -> Sandbox | None:
        """The sandbox commands from a tree run in; None: none (--no-sandbox, or the host
        cannot make one, which contained() tells apart)."""
        if not self.sandbox:
            return None
        box = sandbox_here()
        return box if isinstance(box, Sandbox) else None

    def contained(self, cmd: Sequence[str], *, rw: Sequence[Path], ro: Sequence[Path] = (),
                  env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  untrusted: bool = True, **kw) -> Completed:
        """Run code from a kernel tree (make, GNU patch, a selftest build) in the sandbox
        (sandbox.py): only rw is writable, only rw, ro and the host's /usr are seen, there is
        no network, and its environment is env alone. Where the host cannot sandbox, an
        untrusted tree (a patch series, a git tree) is refused unless the run said
        --no-sandbox; a pristine one runs outside, with the same environment."""
        box = self.box()
        clean = {**BASE_ENV, **locale(), **(env or {})}
        if box is None:
            why = sandbox_here() if self.sandbox else ""
            if isinstance(why, str) and why and untrusted:
                raise InfraError(f"this host cannot sandbox a build: {why}. The farm does not "
                                 "build a patch series or a git tree (code it does not trust) "
                                 "outside a sandbox; --no-sandbox builds it as the farm's "
                                 "user, with the host in its reach")
            return self.run(["env", "-i", *(f"{k}={v}" for k, v in clean.items()), *cmd],
                            cwd=cwd, env={}, clean_env=True, **kw)
        return self.run(box.argv(cmd, rw=rw, ro=ro, env=env, cwd=cwd), env={}, clean_env=True,
                        shown=f"{quote(cmd, cwd)} (in the sandbox: farm.log has its bwrap line)",
                        **kw)

    def run(self, cmd: Sequence[str], *, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            check: bool = True, log_path: Path | None = None,
            on_line: Callable[[str], None] | None = None, clean_env: bool = False,
            shown: str = "") -> Completed:
        """Run to completion. Output (stdout and stderr together) is returned, and also
        appended to log_path and passed line by line to on_line while it runs (shown: how an
        error names the command, when not by its whole command line). The command
        runs in a process group of its own, which the farm stops as a whole when it is
        interrupted, and which dies with the farm if the farm is killed."""
        cmd = [str(c) for c in cmd]
        self._announce(cmd, cwd, env)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=self._env(env, clean_env),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT,
                                    text=True, errors="replace", bufsize=1,
                                    start_new_session=True, pass_fds=guard_fds(cmd),
                                    preexec_fn=child_setup(os.getpid()))
        except OSError as e:
            raise InfraError(f"cannot run {cmd[0]}: {e.strerror}: {quote(cmd, cwd, env)}") from e
        out = _Lines(log_path, on_line)
        timer = None
        if timeout:
            timer = threading.Timer(timeout, _signal_group, args=(proc,))
            timer.start()
        try:
            for line in proc.stdout:
                out.write(line)
            rc = proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: the child's group gets a Ctrl-C and time for its own
            # clean-up (a pytest session writes its summary, its guests end).
            with deferred_signals():
                drain = threading.Thread(target=out.drain, args=(proc.stdout,), daemon=True)
                drain.start()  # what it prints while it stops is kept, and cannot block it
                _stop_group(proc, grace=20)
                drain.join(timeout=5)
            raise
        except BaseException:
            _stop_group(proc, grace=0)
            raise
        finally:
            if timer:
                timer.cancel()
            out.close()
        return out.completed(cmd, rc, start, check, shown or quote(cmd, cwd, env))

    def start(self, cmd: Sequence[str], *, cwd: Path | str | None = None,
              env: Mapping[str, str] | None = None, stdout=None, stderr=None) -> subprocess.Popen:
        """Start a long-running process (a QEMU guest) and return it; the caller stops it.
        It stays in the caller's process group, and dies with the caller if that is killed."""
        cmd = [str(c) for c in cmd]
        self._announce(cmd, cwd, env)
        try:
            return subprocess.Popen(cmd, cwd=cwd, env=self._env(env), stdin=subprocess.DEVNULL,
                                    stdout=stdout, stderr=stderr, pass_fds=guard_fds(cmd),
                                    preexec_fn=child_setup(os.getpid()))
        except OSError as e:
            raise InfraError(f"cannot run {cmd[0]}: {e.strerror}: {quote(cmd, cwd, env)}") from e


def log_commands(results: Path) -> logging.Handler:
    """Every command the farm runs, here or over SSH, into the result directory's farm.log;
    the SSH library's own messages go there too, never as a traceback on the terminal."""
    handler = logging.FileHandler(results / "farm.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root = logging.getLogger("farm")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    quiet_ssh_library(handler)
    return handler


def stop_logging(handler: logging.Handler) -> None:
    logging.getLogger("farm").removeHandler(handler)
    logging.getLogger("paramiko").removeHandler(handler)
    handler.close()


def quiet_ssh_library(handler: logging.Handler | None = None) -> None:
    lib = logging.getLogger("paramiko")
    lib.propagate = False
    if not lib.handlers:
        lib.addHandler(logging.NullHandler())
    if handler:
        lib.addHandler(handler)
