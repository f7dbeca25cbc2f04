"""The sandbox that code from a kernel tree runs in (GNU patch, make, merge_config, the
selftest builds): bubblewrap, as an unprivileged user, in new mount, PID, network, IPC, UTS
and cgroup namespaces, with no network at all, seeing the host's /usr read-only, the paths
it is given (read-only or writable) and nothing else, in an environment of its own.

As root, bubblewrap makes the namespaces and the mounts (so it can reach paths under a 0700
home), then the command becomes BUILD_USER, a real unprivileged user of the host, with
setpriv: no capabilities, no new privileges. As another user, that user is unprivileged
already, and bubblewrap adds a user namespace of its own. See docs/sandbox.md."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BUILD_USER = "hwpoison-build"
# What of the host's /etc a compiler, make, perl and a shell read: no secrets among them
# (the user database is world-readable; shadow, SSH keys and tokens are not here).
HOST_FILES = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
              "/etc/passwd", "/etc/group", "/etc/nsswitch.conf")
# The whole environment of a sandboxed command, beside what its caller sets: no CI token,
# SSH agent, proxy or home directory of the farm's user reaches it.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "HOME": "/tmp", "TMPDIR": "/tmp", "SHELL": "/bin/sh"}


LOCALE = ("LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES")  # ccache hashes them: kept as set


TMP = (Path("/tmp"), Path("/var"), Path("/var/tmp"))  # made by argv(), empty and its own


def locale() -> dict[str, str]:
    return {k: os.environ[k] for k in LOCALE if k in os.environ}


class NoSandbox(Exception):
    """This host cannot sandbox: the message says why and what to do."""


@dataclass(frozen=True)
class Sandbox:
    """How to run one command sandboxed. uid/gid: the user to become first (the farm runs as
    root); None: the farm's own user, which is unprivileged already."""
    bwrap: str = "bwrap"
    uid: int | None = None
    gid: int | None = None
    # the read end of a pipe whose write end only the farm's process holds: when that process
    # dies, however it dies, the guard inside the sandbox kills all there (bwrap's own
    # --die-with-parent misses a parent that dies while bwrap sets up; seen under load)
    guard: int | None = None

    def argv(self, cmd: Sequence[str], *, rw: Iterable[Path] = (), ro: Iterable[Path] = (),
             env: Mapping[str, str] | None = None, cwd: Path | None = None,
             devices: Iterable[Path] = ()) -> list[str]:
        """The command line: bwrap, its mounts and environment, then the command. devices:
        device nodes of the host it may open (/dev/kvm), their groups kept."""
        rw = [Path(p).absolute() for p in rw]
        devices = [Path(d) for d in devices]
        ro = [Path(p).absolute() for p in ro]
        words = [self.bwrap, "--die-with-parent", "--new-session", "--clearenv"]
        if self.uid is None:
            words += ["--unshare-all"]
        else:  # root makes the namespaces; the command runs as BUILD_USER (docs/sandbox.md)
            words += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                      "--unshare-cgroup-try"]
        for top in ("bin", "lib", "lib64", "sbin"):
            host = Path("/") / top
            if host.is_symlink():
                words += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                words += ["--ro-bind", str(host), str(host)]
        words += ["--ro-bind", "/usr", "/usr", "--perms", "0755", "--dir", "/etc"]
        for f in HOST_FILES:
            if os.path.lexists(f):
                words += ["--ro-bind", f, f]
        words += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
                  "--perms", "0755", "--dir", "/var", "--perms", "1777", "--tmpfs", "/var/tmp"]
        for d in devices:
            words += ["--dev-bind", str(d), str(d)]
        for d in _parents([*rw, *ro]):  # bwrap would make them 0700: the user could not pass
            words += ["--perms", "0755", "--dir", str(d)]
        for p, how in sorted([(p, "--ro-bind") for p in ro] + [(p, "--bind") for p in rw],
                             key=lambda b: len(b[0].parts)):
            words += [how, str(p), str(p)]
        for k, v in {**BASE_ENV, **locale(), **(env or {})}.items():
            words += ["--setenv", k, str(v)]
        if cwd is not None:
            words += ["--chdir", str(Path(cwd).absolute())]
        words.append("--")
        if self.guard is not None:
            words += ["sh", "-c", f"(cat /proc/self/fd/{self.guard} >/dev/null; kill -KILL -1) "
                      '& exec "$@"', "farm-guard"]
        if self.uid is not None:
            groups = sorted({str(d.stat().st_gid) for d in devices})
            words += ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                      f"--groups={','.join(groups)}" if groups else "--clear-groups",
                      "--no-new-privs", "--"]
        return words + [str(c) for c in cmd]

    def guest(self, cmd: Sequence[str], *, rw: Sequence[Path], ro: Sequence[Path],
              kvm: bool) -> list[str]:
        """QEMU in the sandbox: as the build user, offline, seeing its kernel, initrd and
        disk images (ro, those that exist) read-only, writing only rw (its sockets and its
        console), with /dev/kvm when it asks for KVM."""
        self.give(*rw)
        dev = Path("/dev/kvm")
        return self.argv(cmd, rw=rw, ro=[p for p in map(Path, ro) if p.exists()],
                         devices=[dev] if kvm and dev.exists() else [])

    def give(self, *paths: Path) -> None:
        """Make paths the build user's own (it writes there): nothing to do when the farm
        runs as that user."""
        if self.uid is None:
            return
        for p in paths:
            os.chown(p, self.uid, self.gid)

    def give_tree(self, top: Path) -> None:
        """A whole directory and everything in it, the build user's (a ccache made by an
        older farm as root)."""
        if self.uid is None or top.stat().st_uid == self.uid:
            return
        for root, dirs, files in os.walk(top):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), self.uid, self.gid)
        os.chown(top, self.uid, self.gid)

    def dirs_only(self, top: Path) -> None:
        """A hard-linked tree: its directories the build user's (it adds and replaces files
        there), its files left to root, so that the user cannot write a pristine file in
        place through its link, nor chmod it, nor reset its time."""
        if self.uid is None:
            return
        for root, dirs, _files in os.walk(top):
            for name in dirs:
                os.lchown(os.path.join(root, name), self.uid, self.gid)
        os.chown(top, self.uid, self.gid)

    @property
    def links_safe(self) -> bool:
        """Whether a tree of hard links to the pristine source is safe: only when the build
        runs as another user than the one who owns the source."""
        return self.uid is not None


def _parents(paths: list[Path]) -> list[Path]:
    """Every directory above a mount point, outside what bwrap itself mounts, top first."""
    out: set[Path] = set()
    for p in paths:
        out.update(a for a in p.parents if a != Path("/"))
    covered = (Path("/usr"), Path("/proc"), Path("/dev"))
    return sorted((d for d in out if d not in paths and d not in TMP and not any(
        d == c or c in d.parents for c in covered)), key=lambda d: len(d.parts))


def observed(top: int, exe: str) -> str:
    """How the process running exe (QEMU) under the process top (its bwrap) runs, as /proc
    tells: 'uid=U seccomp=M no_new_privs=N cap_eff=HEX'; '' when there is none (yet)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
        except OSError:
            continue
        children.setdefault(int(text[text.rindex(")") + 2:].split()[1]), []).append(
            int(entry.parent.name))
    todo = [top]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            if Path(os.readlink(f"/proc/{pid}/exe")).name != exe:
                continue
            status = dict(line.split(":", 1) for line in
                          Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        return (f"uid={status['Uid'].split()[0]} seccomp={status['Seccomp'].strip()} "
                f"no_new_privs={status['NoNewPrivs'].strip()} cap_eff={status['CapEff'].strip()}")
    return ""


def is_confined(seen: str) -> bool:
    """Whether observed() shows an unprivileged process under a seccomp filter."""
    words = dict(w.split("=", 1) for w in seen.split())
    return (words.get("uid") not in (None, "0") and words.get("seccomp") == "2"
            and words.get("no_new_privs") == "1" and set(words.get("cap_eff", "1")) == {"0"})


def take_file(own: Path, dest: Path) -> None:
    """The file dest.name that a sandboxed process wrote in own (QEMU's console), moved to
    dest once the process is gone: a regular file only, never what a link left in its place
    leads to; own is removed."""
    path = own / dest.name
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.replace(path, dest)
            os.chown(dest, os.geteuid(), os.getegid())  # the farm's again, no longer QEMU's
    except FileNotFoundError:
        pass
    shutil.rmtree(own, ignore_errors=True)


def host_sandbox() -> Sandbox:
    """The sandbox this host can make, or NoSandbox saying why not (the probe that it works
    is the runner's, which starts processes)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise NoSandbox("bubblewrap (bwrap) is not installed; scripts/setup.sh installs it "
                        "(Debian: apt-get install bubblewrap)")
    if os.geteuid() != 0:
        return Sandbox(bwrap)
    try:
        user = pwd.getpwnam(BUILD_USER)
    except KeyError:
        raise NoSandbox(f"the farm runs as root and there is no user {BUILD_USER} to build "
                        "as; scripts/setup.sh adds it (useradd --system "
                        f"--no-create-home --shell /usr/sbin/nologin {BUILD_USER})") from None
    if shutil.which("setpriv") is None:
        raise NoSandbox("setpriv (util-linux) is needed to build as "
                        f"{BUILD_USER}")
    return Sandbox(bwrap, user.pw_uid, user.pw_gid)
