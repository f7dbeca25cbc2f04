"""The kernel source and a variant's tree: the source unpacked once into the cache (or used
in place), its digest, and for each build a private tree of hard links to it with the
variant's patch series applied strictly (and, for a coverage build, its profiled files'
Makefiles written anew). The patched tree is also where a variant's own selftests come
from (kselftests.py); the kernel build (build.py) compiles it out of tree."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import InfraError, UserError
from .farmfile import Source, Variant
from .files import OwnedDir, inside, locked, prune, write_json
from .progress import Progress
from .runner import Runner
from .versions import version_of_makefile


@dataclass(frozen=True)
class SourceTree:
    path: Path
    digest: str
    origin: Source | None = None  # what it was unpacked from (None: used in place)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_digest(source: Source, cache: Path, runner: Runner) -> str:
    """A digest of the kernel source: the tarball's sha256 (remembered by size and mtime),
    a git commit, or a walk of a directory's names, sizes and mtimes."""
    if source.kind == "tarball":
        return remembered(cache / "sources" / "digests.json", source.path,
                          lambda: "sha256:" + sha256_file(source.path))
    if source.kind == "git":
        sha = commit_of(source.path, source.ref or "HEAD", runner)
        if sha is None:
            raise UserError(f"source.git: {source.path}: no commit '{source.ref}'")
        return "git:" + sha
    h = hashlib.sha256()
    for root, dirs, files in os.walk(source.path):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            p = Path(root, name)
            st = p.lstat()
            h.update(f"{p.relative_to(source.path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "dir:" + h.hexdigest()


def source_version(source: Source, cache: Path, runner: Runner) -> str:
    """The kernel version a source holds ('6.12.118'), from its own top Makefile: a
    directory's, the commit's (`git show`), or a tarball's, read from the archive alone and
    remembered by its size and mtime. Nothing is unpacked; a source that is no kernel tree is
    bad input."""
    def version(text: str) -> str:
        found = version_of_makefile(text)
        if found is None:
            raise UserError(f"source {source.describe()}: no kernel version in its top "
                            "Makefile (VERSION, PATCHLEVEL, SUBLEVEL): is it a kernel tree?")
        return found

    if source.kind == "dir":
        return version(_read(source.path / "Makefile"))
    if source.kind == "git":
        out = runner.run(["git", "-C", source.path, "show", f"{source.ref}:Makefile"],
                         check=False)
        return version(out.output if not out.returncode else "")
    return remembered(cache / "sources" / "versions.json", source.path,
                      lambda: version(_tarball_makefile(source.path)))


def remembered(memo: Path, path: Path, compute: Callable[[], str]) -> str:
    """What compute() says of a file, remembered in memo (JSON) by the file's path, size and
    mtime: a tarball is read once, however many runs ask."""
    st = path.stat()
    stamp = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    try:
        seen = json.loads(memo.read_text())
    except (OSError, ValueError):
        seen = {}
    if stamp not in seen:
        seen[stamp] = compute()
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_json(memo, seen)
    return seen[stamp]


def commit_of(repo: Path, ref: str, runner: Runner) -> str | None:
    """The commit id a ref of a git repository names, or None when it names none."""
    out = runner.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                     check=False)
    sha = out.output.strip()
    return sha if not out.returncode and re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", sha) else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tarball_makefile(path: Path) -> str:
    """The top Makefile of the one tree in a tarball, read as the archive streams by."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                if m.isfile() and m.name.count("/") == 1 and m.name.endswith("/Makefile"):
                    f = tar.extractfile(m)
                    return f.read(8192).decode(errors="replace") if f else ""
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"source tarball {path}: cannot read it ({e})") from None
    return ""


def prepare_source(source: Source, cache: Path, runner: Runner, progress: Progress,
                   verify: bool = False) -> SourceTree:
    """The pristine tree, unpacked once into the cache (a directory source is used in place).
    verify (before a tree is made from it): a cached tree is checked against the manifest
    made when it was unpacked, and unpacked again when it differs."""
    digest = source_digest(source, cache, runner)
    if source.kind == "dir":
        return SourceTree(source.path, digest)
    dest = cache / "sources" / digest.replace(":", "-")[:40]
    with locked(cache / "locks" / f"{dest.name}.lock"):
        if (dest / "Makefile").is_file():
            changed = source_changed(dest) if verify else ""
            if not changed:
                return SourceTree(dest, digest, source)
            progress.say(f"the cached source {dest} is not as it was unpacked ({changed}): "
                         "unpacking it again")
            old = dest.with_name(dest.name + ".changed")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        progress.say(f"unpacking {source.describe()} into {dest}")
        if source.kind == "tarball":
            runner.run(["tar", "-xf", source.path, "-C", tmp])
        else:
            archive = tmp / "src.tar"
            runner.run(["git", "-C", source.path, "archive", "--format=tar", "-o", archive,
                        digest.split(":", 1)[1]])
            (tmp / "src").mkdir()
            runner.run(["tar", "-xf", archive, "-C", tmp / "src"])
            archive.unlink()
        tops = [p for p in tmp.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "Makefile").is_file():
            raise InfraError(f"{source.describe()}: expected one kernel tree with a Makefile")
        seal(tops[0], _manifest_path(dest))
        tops[0].rename(dest)
        shutil.rmtree(tmp)
    return SourceTree(dest, digest, source)


def _manifest_path(tree: Path) -> Path:
    return tree.with_name(tree.name + ".manifest")


def tree_manifest(tree: Path, fix: bool = False) -> str:
    """A digest of a tree as the file system holds it: each entry's path, type, mode, size,
    mtime and link target. A build (another user, no capabilities) can change none of these
    on a file it does not own, so any change means the pristine tree was written. fix: first
    take write permission from group and others (the build user is one of the others)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            p = os.path.join(root, name)
            st = os.lstat(p)
            if fix and st.st_mode & 0o022 and not os.path.islink(p):
                os.chmod(p, st.st_mode & 0o7755)
                st = os.lstat(p)
            link = os.readlink(p) if os.path.islink(p) else ""
            h.update(f"{os.path.relpath(p, tree)}\0{st.st_mode:o}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\0{link}\n".encode())
    return h.hexdigest()


def seal(tree: Path, manifest: Path) -> None:
    """Record the manifest of a tree just unpacked, which every later run checks."""
    manifest.write_text(tree_manifest(tree, fix=True) + "\n")


def source_changed(tree: Path) -> str:
    """'' when a cached source is as it was unpacked, else what differs. A source unpacked
    by an older farm has no manifest yet: it gets one now."""
    manifest = _manifest_path(tree)
    try:
        want = manifest.read_text().strip()
    except OSError:
        seal(tree, manifest)
        return ""
    return "" if tree_manifest(tree) == want else f"its manifest {manifest} differs"


def _hunk_failures(output: str) -> list[str]:
    """'file X, hunk #N at line L' for each hunk GNU patch could not apply."""
    failures, current, dangerous = [], "?", False
    for line in output.splitlines():
        m = re.match(r"(?:patching|checking) file (.+)", line)
        if m:
            current = m.group(1).strip("'")
            continue
        m = re.match(r"Hunk #(\d+) FAILED at (\d+)", line)
        if m:
            failures.append(f"file {current}, hunk #{m.group(1)} (at line {m.group(2)})")
            continue
        m = re.search(r"Ignoring potentially dangerous file name (.+)", line)
        if m:
            failures.append(f"file {m.group(1).strip()}: a path out of the tree (GNU patch "
                            "refuses it as a potentially dangerous file name)")
            dangerous = True
        elif "can't find file to patch" in line and not dangerous:
            failures.append("a file it patches does not exist in the tree")
        elif "Reversed (or previously applied) patch detected" in line:
            failures.append(f"file {current}: already applied (or reversed)")
    return failures


def apply_patch(tree: Path, patch: Path, runner: Runner, log: Path | None = None) -> str:
    """Apply one patch strictly (no fuzz), as every build does, in the sandbox (it sees the
    tree, writable, and the patch): '' when it applied, else where it did not (file and
    hunk). The tree must be the build user's (writable_for_builds)."""
    out = runner.contained(["patch", "-p1", "--forward", "--batch", "--fuzz=0",
                            "--no-backup-if-mismatch", "--reject-file=-", "-d", tree, "-i",
                            patch], rw=[tree], ro=[patch], check=False, log_path=log)
    if not out.returncode:
        return ""
    return "; ".join(_hunk_failures(out.output)) or out.output.strip()[-300:]


def apply_patches(tree: Path, patches: tuple[Path, ...], runner: Runner, log: Path) -> None:
    """Apply a patch series strictly (no fuzz); a patch that does not apply is bad input."""
    for i, patch in enumerate(patches, 1):
        where = apply_patch(tree, patch, runner, log)
        if where:
            raise UserError(f"patch {i}/{len(patches)} does not apply: {patch}: {where}")


def writable_for_builds(top: Path, runner: Runner) -> None:
    """A directory the farm made, and all in it, the sandbox's user's to write."""
    box = runner.box()
    if box is not None:
        box.give_tree(top)


def variant_tree(source: SourceTree, variant: Variant, coverage: tuple[str, ...], cache: Path,
                 key: str, log: Path, runner: Runner, progress: Progress) -> OwnedDir:
    """A tree of this run's own for the variant, with the patch series applied. It shares no
    writable inode with the pristine source or another tree: where builds run as another
    user than the source's owner it is hard links to the source, whose files that user cannot
    write, chmod or touch (its directories are the user's: GNU patch replaces the files it
    changes); elsewhere it is a copy. The source is checked against its manifest first.
    Private, so two runs never touch each other's trees; a run that was killed leaves one
    behind, which the next run removes."""
    prune(cache / "work")
    for old in (cache / "work").glob("[0-9a-f]" * 20):  # trees of farm 0.1's layout
        shutil.rmtree(old, ignore_errors=True)
    if source.origin is not None:
        source = prepare_source(source.origin, cache, runner, progress, verify=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    work = OwnedDir(cache / "work", key)
    box = runner.box()
    try:
        (work.path / "obj").mkdir()
        progress.say(f"{variant.name}: preparing tree with {len(variant.patches)} "
                     f"patch(es) in {work.path}")
        links = box is not None and box.links_safe and _same_fs(source.path, work.path)
        runner.run(["cp", "-al" if links else "-a", source.path, work.path / "src"],
                   log_path=log)
        if box is not None:
            box.give(work.path, work.path / "obj")
            (box.dirs_only if links else box.give_tree)(work.path / "src")
        apply_patches(work.path / "src", variant.patches, runner, log)
        profile(work.path / "src", coverage)
    except UserError as e:
        work.remove()
        raise UserError(f"{variant.name}: {e}") from None
    except BaseException:
        work.remove()
        raise
    return work


def profile_lines(stem: str) -> str:
    """What a profiled object's Makefile gets: gcov, and its notes naming the source by its
    path in the tree (not the run's private tree, which is gone when a report reads them)."""
    return (f"\nGCOV_PROFILE_{stem}.o := y\n"
            f"CFLAGS_{stem}.o += -fprofile-prefix-map=$(srctree)/=\n")


def profile(src: Path, files: tuple[str, ...]) -> None:
    """Build each file with gcov: `GCOV_PROFILE_<stem>.o := y` in its directory's Makefile.
    The tree is hard links to the pristine source, so the Makefile is written anew, never
    in place."""
    src = src.resolve()
    for rel in files:
        path = inside(src, rel, "coverage")
        if not path.is_file():
            raise UserError(f"coverage: {rel} is not a file of the kernel tree")
        makefile = inside(src, path.parent.relative_to(src) / "Makefile", "coverage")
        if not makefile.is_file():
            raise UserError(f"coverage: {rel}: its directory has no Makefile (is it built?)")
        text = makefile.read_text()
        makefile.unlink()
        makefile.write_text(text + profile_lines(path.stem))


def _same_fs(a: Path, b: Path) -> bool:
    b.mkdir(parents=True, exist_ok=True)
    return a.stat().st_dev == b.stat().st_dev
