"""Commands on another host over SSH (fabric): the same seam as runner.Runner, every command
a list, quoted for the remote shell word by word and logged as the `ssh` command a user can
paste."""

from __future__ import annotations

import base64
import getpass
import hashlib
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import InfraError
from .runner import Completed, _Lines, log, quote

SSH_TARGET = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?"
                        r"(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?$")


KNOWN_HOSTS = Path("~/.ssh/known_hosts")


class UnknownHostKey(Exception):
    """The host offered a key that known_hosts does not list (and accept_new is off)."""


def fingerprint(key) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


class _HostKeys:
    """What ssh does with a host key it has never seen: refuse it (StrictHostKeyChecking=yes),
    or, with accept_new, trust it and remember it in known_hosts (accept-new). A key that
    differs from the one remembered is refused either way (paramiko checks that first)."""

    def __init__(self, target: str, known_hosts: Path, accept_new: bool):
        self.target, self.known_hosts, self.accept_new = target, known_hosts, accept_new

    def missing_host_key(self, client, hostname: str, key) -> None:
        if not self.accept_new:
            port = hostname.rsplit(":", 1)[1] if hostname.startswith("[") else "22"
            host = hostname.split("]")[0].lstrip("[")
            raise UnknownHostKey(
                f"its host key ({fingerprint(key)}) is not in "
                f"{self.known_hosts}: check it, then trust it with `ssh-keyscan -p {port} "
                f"{host} >> {self.known_hosts}`, or set accept_new: true for this host")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        log.info("# %s: first contact, host key %s added to %s", self.target,
                 fingerprint(key), self.known_hosts)


class SSHRunner:
    """Runs commands on another host over SSH (fabric), with Runner's interface: commands are
    lists, each quoted for the remote shell word by word, and each logged as an `ssh` command
    line a user can paste to do the same by hand. Host keys are checked as ssh checks them."""

    def __init__(self, target: str, key: Path | None = None,
                 on_command: Callable[[str], None] | None = None, connect_timeout: float = 20,
                 known_hosts: Path | None = None, accept_new: bool = False):
        from fabric import Connection  # imported here: a local run never needs it

        m = SSH_TARGET.match(target)
        if not m:
            raise InfraError(f"not an SSH target ([user@]host[:port]): {target!r}")
        self.target, self.key, self.on_command = target, key, on_command
        self.user, self.host = m["user"] or getpass.getuser(), m["host"].strip("[]")
        self.port = int(m["port"] or 22)
        self.known_hosts = (known_hosts or KNOWN_HOSTS).expanduser()
        self.custom_known_hosts = known_hosts is not None
        self.accept_new = accept_new
        kwargs = {"key_filename": [str(key)], "look_for_keys": False} if key else {}
        self.conn = Connection(self.host, user=self.user, port=self.port,
                               connect_timeout=connect_timeout, connect_kwargs=kwargs)
        client = self.conn.client
        if self.known_hosts.is_file():
            try:
                client.load_host_keys(str(self.known_hosts))
            except Exception as e:  # a damaged known_hosts: say which file
                raise InfraError(f"{target}: cannot read {self.known_hosts}: {e}") from None
        client.set_missing_host_key_policy(_HostKeys(target, self.known_hosts, accept_new))

    def _ssh(self, scp: bool = False) -> list[str]:
        words = ["scp" if scp else "ssh", "-P" if scp else "-p", str(self.port)]
        if self.key:
            words += ["-i", str(self.key)]
        if self.custom_known_hosts:
            words += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.accept_new:
            words += ["-o", "StrictHostKeyChecking=accept-new"]
        return words if scp else [*words, f"{self.user}@{self.host}"]

    def _remote(self, path: str | Path) -> str:
        return f"{self.user}@{self.host}:{path}"

    def _announce(self, line: str) -> None:
        log.info("$ %s", line)
        if self.on_command:
            self.on_command(line)

    def _failed(self, what: str, e: Exception, line: str) -> InfraError:
        from paramiko import BadHostKeyException

        if isinstance(e, UnknownHostKey):
            return InfraError(f"{self.target}: {e}")
        if isinstance(e, BadHostKeyException):
            return InfraError(
                f"{self.target}: the host key has CHANGED (now {fingerprint(e.key)}, "
                f"{self.known_hosts} has {fingerprint(e.expected_key)}): the farm does not "
                f"connect; if the change is expected, remove the old key with `ssh-keygen -R "
                f"'[{self.host}]:{self.port}' -f {self.known_hosts}`")
        return InfraError(f"{self.target}: {what}: {type(e).__name__}: {e}: {line}")

    def run(self, cmd: Sequence[str], *, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            check: bool = True, log_path: Path | None = None,
            on_line: Callable[[str], None] | None = None, pty: bool = False) -> Completed:
        """Run on the host to completion; output (stdout and stderr together) as Runner.run.
        An SSH failure (unreachable host, refused key) is an InfraError, never a result.
        With pty, the command runs on a terminal of its own, which hangs up (SIGHUP) when
        the connection closes: a command that must stop when the farm here stops."""
        from invoke.exceptions import CommandTimedOut

        cmd = [str(c) for c in cmd]
        if pty:  # the command itself leads the session, so the hang-up reaches it
            words = ["env", *(f"{k}={v}" for k, v in env.items()), *cmd] if env else cmd
            remote = (f"cd {shlex.quote(str(cwd))} && " if cwd else "") + "exec " + quote(words)
        else:
            remote = quote(cmd, cwd, env)
        line = quote([*self._ssh(), *(["-tt"] if pty else []), "--", remote])
        self._announce(line)
        out = _Lines(log_path, on_line and (lambda ln: on_line(ln.rstrip("\r"))))
        start = time.monotonic()
        try:
            res = self.conn.run(remote, hide=True, warn=True, in_stream=False, timeout=timeout,
                                out_stream=out, err_stream=out, pty=pty)
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
