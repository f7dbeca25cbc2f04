"""The one seam through which the farm starts processes, here or on another host over SSH:
every command is a list, logged shell-quoted so that a user can paste it to reproduce the
step."""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InfraError

log = logging.getLogger("farm.cmd")


def quote(cmd: Sequence[str], cwd: Path | str | None = None,
          env: Mapping[str, str] | None = None) -> str:
    """The command as a line a user can paste into a shell."""
    words = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()] + [
        shlex.quote(str(c)) for c in cmd]
    line = " ".join(words)
    return f"(cd {shlex.quote(str(cwd))} && {line})" if cwd else line


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


class Runner:
    """Runs commands on this host. Tests replace it only where a recording stands in."""

    def __init__(self, on_command: Callable[[str], None] | None = None):
        self.on_command = on_command

    def _announce(self, cmd, cwd, env):
        line = quote(cmd, cwd, env)
        log.info("$ %s", line)
        if self.on_command:
            self.on_command(line)

    @staticmethod
    def _env(env: Mapping[str, str] | None) -> dict[str, str] | None:
        return {**os.environ, **env} if env else None

    def run(self, cmd: Sequence[str], *, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            check: bool = True, log_path: Path | None = None,
            on_line: Callable[[str], None] | None = None) -> Completed:
        """Run to completion. Output (stdout and stderr together) is returned, and also
        appended to log_path and passed line by line to on_line while it runs."""
        cmd = [str(c) for c in cmd]
        self._announce(cmd, cwd, env)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=self._env(env), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", bufsize=1)
        except OSError as e:
            raise InfraError(f"cannot run {cmd[0]}: {e.strerror}: {quote(cmd, cwd, env)}") from e
        out = _Lines(log_path, on_line)
        timer = None
        if timeout:
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
        try:
            for line in proc.stdout:
                out.write(line)
            rc = proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the child too: give it time to finish its own clean-up
            # (a pytest session writes its summary, its guests end) before killing it.
            try:
                proc.communicate(timeout=20)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.kill()
                proc.wait()
            raise
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
            out.close()
        return out.completed(cmd, rc, start, check, quote(cmd, cwd, env))

    def start(self, cmd: Sequence[str], *, cwd: Path | str | None = None,
              env: Mapping[str, str] | None = None, stdout=None, stderr=None) -> subprocess.Popen:
        """Start a long-running process (a QEMU guest, a pytest session) and return it."""
        cmd = [str(c) for c in cmd]
        self._announce(cmd, cwd, env)
        try:
            return subprocess.Popen(cmd, cwd=cwd, env=self._env(env), stdin=subprocess.DEVNULL,
                                    stdout=stdout, stderr=stderr)
        except OSError as e:
            raise InfraError(f"cannot run {cmd[0]}: {e.strerror}: {quote(cmd, cwd, env)}") from e


SSH_TARGET = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?"
                        r"(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?$")


class SSHRunner:
    """Runs commands on another host over SSH (fabric), with Runner's interface: commands are
    lists, each quoted for the remote shell word by word, and each logged as an `ssh` command
    line a user can paste to do the same by hand."""

    def __init__(self, target: str, key: Path | None = None,
                 on_command: Callable[[str], None] | None = None, connect_timeout: float = 20):
        from fabric import Connection  # imported here: a local run never needs it

        m = SSH_TARGET.match(target)
        if not m:
            raise InfraError(f"not an SSH target ([user@]host[:port]): {target!r}")
        self.target, self.key, self.on_command = target, key, on_command
        self.user, self.host = m["user"] or getpass.getuser(), m["host"].strip("[]")
        self.port = int(m["port"] or 22)
        kwargs = {"key_filename": [str(key)], "look_for_keys": False} if key else {}
        self.conn = Connection(self.host, user=self.user, port=self.port,
                               connect_timeout=connect_timeout, connect_kwargs=kwargs)

    def _ssh(self, scp: bool = False) -> list[str]:
        words = ["scp" if scp else "ssh", "-P" if scp else "-p", str(self.port)]
        if self.key:
            words += ["-i", str(self.key)]
        return words if scp else [*words, f"{self.user}@{self.host}"]

    def _remote(self, path: str | Path) -> str:
        return f"{self.user}@{self.host}:{path}"

    def _announce(self, line: str) -> None:
        log.info("$ %s", line)
        if self.on_command:
            self.on_command(line)

    def _failed(self, what: str, e: Exception, line: str) -> InfraError:
        return InfraError(f"{self.target}: {what}: {type(e).__name__}: {e}: {line}")

    def run(self, cmd: Sequence[str], *, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            check: bool = True, log_path: Path | None = None,
            on_line: Callable[[str], None] | None = None) -> Completed:
        """Run on the host to completion; output (stdout and stderr together) as Runner.run.
        An SSH failure (unreachable host, refused key) is an InfraError, never a result."""
        from invoke.exceptions import CommandTimedOut

        cmd = [str(c) for c in cmd]
        remote = quote(cmd, cwd, env)
        line = quote([*self._ssh(), "--", remote])
        self._announce(line)
        out = _Lines(log_path, on_line)
        start = time.monotonic()
        try:
            res = self.conn.run(remote, hide=True, warn=True, in_stream=False, timeout=timeout,
                                out_stream=out, err_stream=out)
            rc = res.exited
        except CommandTimedOut:
            rc = -9
        except Exception as e:  # paramiko, socket and DNS errors alike: the host is unusable
            raise self._failed("SSH", e, line) from e
        finally:
            out.close()
        return out.completed(cmd, rc, start, check, line, where=f"{self.target}: ")

    def put(self, local: Path, remote: str | Path) -> None:
        line = quote([*self._ssh(scp=True), local, self._remote(remote)])
        self._announce(line)
        try:
            self.conn.put(str(local), str(remote))
        except Exception as e:
            raise self._failed("copying to the host", e, line) from e

    def get(self, remote: str | Path, local: Path) -> None:
        line = quote([*self._ssh(scp=True), self._remote(remote), local])
        self._announce(line)
        try:
            self.conn.get(str(remote), str(local))
        except Exception as e:
            raise self._failed("copying from the host", e, line) from e

    def close(self) -> None:
        self.conn.close()
