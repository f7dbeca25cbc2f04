"""The one seam through which the farm starts processes: every command is a list, logged
shell-quoted so that a user can paste it to reproduce the step."""

from __future__ import annotations

import logging
import os
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
        lines: list[str] = []
        sink = open(log_path, "a") if log_path else None
        timer = None
        if timeout:
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                if sink:
                    sink.write(line)
                if on_line:
                    on_line(line.rstrip("\n"))
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
            if sink:
                sink.close()
        done = Completed(cmd, rc, "".join(lines), time.monotonic() - start)
        if check and rc != 0:
            tail = "".join(lines[-20:])
            raise InfraError(f"command failed with exit code {rc}: {quote(cmd, cwd, env)}\n{tail}")
        return done

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
