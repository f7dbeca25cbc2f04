"""Files that runs and processes share: atomic writes under unique temporary names, locks on
cache entries and on result directories, the private directories a run owns, and a run's
result directory (its id, made exclusively, held while the run writes it)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .errors import InfraError, UserError

# One token per farm process: names its temporary files and work directories, so that two
# runs (or two hosts sharing a cache over NFS, where PIDs repeat) never write the same file.
TOKEN = f"{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a file so that a reader sees the old content or the whole new one, never a part:
    written beside it under a name of this process's own, then renamed over it."""
    tmp = path.with_name(f".{path.name}.{TOKEN}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def tail(path: Path, n: int) -> list[str]:
    """The last n lines of a log, or none when it cannot be read."""
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def inside(top: Path, rel: str | Path, what: str) -> Path:
    """top/rel with every link resolved, refused when that leaves top: the farm never reads
    or writes through a link a tree (a patch, a build) put there to lead out of it."""
    root = top.resolve()
    real = (root / rel).resolve()
    if real != root and root not in real.parents:
        raise UserError(f"{what}: {rel} leads out of the tree (to {real}); the farm does not "
                        "follow a link out of a kernel tree")
    return real


def write_json(path: Path, doc) -> None:
    atomic_write(path, json.dumps(doc, indent=1) + "\n")


@contextmanager
def locked(path: Path):
    """An exclusive lock held for the block, so that two runs sharing a cache build, unpack or
    publish one thing once. The kernel drops it when the process ends, however it ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


class ResultLock:
    """A run's hold on its result directory: taken before anything is written there and kept
    until the run ends, so a second run into the same directory stops at once (exit 2)."""

    NAME = ".farm.lock"

    def __init__(self, results: Path, what: str = "farm run"):
        self.path = results / self.NAME
        try:
            self.file = open(self.path, "a+")
        except OSError as e:
            raise os_error(e, str(results)) from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another farm process"
            self.file.close()
            raise UserError(f"{results} is in use by {holder}; give this run another "
                            "--results (or wait for that one to end)") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{what} (pid {os.getpid()})\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()


def claim(path: Path, *, fresh: bool, flag: str = "--results",
          what: str = "farm run") -> ResultLock:
    """A result directory the farm is about to write, created and held: a run writing it
    already is named; a path that is a file, cannot be written or (when fresh) holds an
    earlier run is bad input, said in one line."""
    lock = ResultLock(result_dir(path, flag=flag), what)
    held = [n for n in ("run.json", "results.json", "cases") if (path / n).exists()]
    if fresh and held:
        lock.release()
        raise UserError(f"{flag} {path}: already holds a run ({', '.join(held)}); give a new "
                        "directory: results are never overwritten")
    return lock


def result_dir(path: Path, *, flag: str = "--results") -> Path:
    """Create (or check) a directory the farm is about to write: a path that is a file or
    cannot be written is bad input, said in one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{flag} {path}: exists and is not a directory") from None
    except NotADirectoryError:
        raise UserError(f"{flag} {path}: a parent of it is a file") from None
    except OSError as e:
        raise os_error(e, f"{flag} {path}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot write there (permission denied)")
    return path


def os_error(e: OSError, what: str) -> Exception:
    """An OSError as the farm's own error: a full disk is the machine's problem (exit 3); a
    path that cannot be written is the user's (exit 2)."""
    text = f"{what}: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM):
        return InfraError(text)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST,
                   errno.EISDIR, errno.ENOENT):
        return UserError(text)
    return InfraError(text)


class OwnedDir:
    """A directory that belongs to this process while it lives (a build's work tree): it sits
    beside a lock file this process holds, so `prune` can tell a directory left behind by a
    run that was killed from one that another run is using."""

    def __init__(self, parent: Path, name: str):
        parent.mkdir(parents=True, exist_ok=True)
        self.path = parent / f"{name}.{TOKEN}"
        self._owner = open(parent / f"{name}.{TOKEN}.owner", "w")
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        self.path.mkdir()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        Path(self._owner.name).unlink(missing_ok=True)
        self._owner.close()


def prune(parent: Path, name: str = "*") -> list[Path]:
    """Remove the owned directories (of that name) whose owner is gone: killed, or the
    machine restarted."""
    removed = []
    for owner in sorted(parent.glob(f"{name}.*.owner")) if parent.is_dir() else ():
        try:
            f = open(owner)
        except OSError:
            continue
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            d = owner.with_name(owner.name[:-len(".owner")])
            shutil.rmtree(d, ignore_errors=True)
            owner.unlink(missing_ok=True)
            removed.append(d)
    return removed


def new_run_id(started: datetime) -> str:
    """Sortable, and unique even for two runs started in the same millisecond."""
    return started.strftime("%Y%m%d-%H%M%S-%f")[:-3] + "-" + secrets.token_hex(4)


def fresh_results(parent: Path, started: datetime) -> tuple[str, Path]:
    """A new result directory under parent, made exclusively: a run id taken by another run
    (however unlikely) is never shared, the next one is drawn."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        run_id = new_run_id(started)
        try:
            (parent / run_id).mkdir()
            return run_id, parent / run_id
        except FileExistsError:
            continue


def results_for(given: Path | None, parent: Path, started: datetime) -> tuple[str, Path,
                                                                             ResultLock]:
    """A run's id and its result directory, held for the run: the one given (new, or empty
    of any run), else a new directory under parent."""
    if given:
        results = given.resolve()
        return new_run_id(started), results, claim(results, fresh=True)
    try:
        run_id, results = fresh_results(parent.resolve(), started)
    except OSError as e:
        raise os_error(e, f"results directory {parent}") from None
    point_latest(results)
    return run_id, results, claim(results, fresh=True)


def point_latest(results: Path) -> None:
    """results/latest -> the newest run, replaced in one step (a reader never finds it
    missing); a `latest` that is not a symlink is the user's and is left alone."""
    latest = results.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        return
    tmp = results.parent / f".latest.{TOKEN}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(results.name)
    tmp.replace(latest)


def publish_built(out: Path, build: Callable[[Path], str]) -> str:
    """Build into a directory of this process's own beside `out`, then publish it there
    whole: build(stage) returns '' or why not, kept as error.txt so that it is not tried
    again. A run that published the same key meanwhile wins; a stage left by a failure is
    removed."""
    stage = out.with_name(f".{out.name}.{TOKEN}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        why = build(stage)
        if why:
            (stage / "error.txt").write_text(why)
        try:
            stage.rename(out)
        except OSError:  # another run published it meanwhile
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return why
