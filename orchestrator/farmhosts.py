"""farm.yaml's pool of hosts: the machines a run's shards go to over SSH, each checked
before anything is built (farmfile.py reads the rest of the file)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .ssh import SSH_TARGET
from .yamlcheck import Checker

REMOTE_DIR_RE = re.compile(r"^[A-Za-z0-9._/-]+$")  # a host's dir:


@dataclass(frozen=True)
class Host:
    """A machine of the pool: reached over SSH, it runs one shard of the matrix."""
    ssh: str  # [user@]host[:port]
    dir: str = "hwpoison-farm"  # where the farm is copied on the host (relative to its home)
    jobs: int | None = None  # guests at once there (default: its CPUs)
    key: Path | None = None  # SSH identity file (default: the SSH agent and ~/.ssh keys)
    known_hosts: Path | None = None  # the host keys trusted (default: ~/.ssh/known_hosts)
    accept_new: bool = False  # trust a host key seen for the first time (and remember it)


def hosts(c: Checker, node, where: Path) -> tuple[Host, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        c.err(node, "hosts must be a list of {ssh: [user@]host[:port], dir: ..., jobs: N}")
        return ()
    hosts: list[Host] = []
    for i, n in enumerate(node.value):
        host = _host(c, n, f"hosts[{i}]", where)
        if host is None:
            continue
        if any((x.ssh, x.dir) == (host.ssh, host.dir) for x in hosts):
            c.err(n, f"hosts[{i}]: {host.ssh} with dir {host.dir} is listed twice")
            continue
        hosts.append(host)
    return tuple(hosts)


def _host(c: Checker, n, what: str, where: Path) -> Host | None:
    h = c.mapping(n, what, {"ssh": True, "dir": False, "jobs": False, "key": False,
                            "known_hosts": False, "accept_new": False})
    ssh = c.value(h["ssh"], f"{what}.ssh", (str,)) if "ssh" in h else None
    if ssh is not None and not SSH_TARGET.match(ssh):
        c.err(h["ssh"], f"{what}.ssh: not [user@]host[:port]: {ssh!r}")
        ssh = None
    kw: dict[str, Any] = {}
    if "dir" in h:
        d = c.value(h["dir"], f"{what}.dir", (str,))
        if d is not None and not REMOTE_DIR_RE.match(d):
            c.err(h["dir"], f"{what}.dir: use letters, digits and ._/- only (a relative "
                            f"path is under the home directory there): {d!r}")
        elif d is not None and _unsafe_remote_dir(d):
            c.err(h["dir"], f"{what}.dir: {d!r} would be the farm's own directory on the "
                            "host, which it empties: name a directory of its own, e.g. "
                            "hwpoison-farm")
        elif d:
            kw["dir"] = d
    if "jobs" in h:
        kw["jobs"] = c.positive(h["jobs"], f"{what}.jobs")
    if "key" in h:
        kw["key"] = c.file(h["key"], f"{what}.key", where)
    if "known_hosts" in h:
        kh = c.value(h["known_hosts"], f"{what}.known_hosts", (str,))
        if kh:
            kw["known_hosts"] = (where / os.path.expanduser(kh)).resolve()
    if "accept_new" in h:
        kw["accept_new"] = c.value(h["accept_new"], f"{what}.accept_new", (bool,))
    if ssh is None:
        return None
    return Host(ssh, **{k: v for k, v in kw.items() if v is not None})


def _unsafe_remote_dir(d: str) -> bool:
    """/, the home directory, or anything with .. in it: never a farm directory."""
    parts = [p for p in d.split("/") if p not in ("", ".")]
    return not parts or ".." in parts
