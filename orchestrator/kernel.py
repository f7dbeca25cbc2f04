"""Kernel builds: the source unpacked once, a patched tree per variant, config from a base
target plus fragments (checked after olddefconfig), out-of-tree make with ccache, and a
build cache keyed by content so an unchanged variant is never rebuilt."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import KSELFTEST_AUTO, KSELFTEST_AUTO_RE, Source, Variant, kselftest_file
from .errors import InfraError, UserError
from .files import TOKEN, OwnedDir, atomic_write, locked, prune, write_json
from .progress import Progress, fmt_seconds
from .runner import Runner

TARGET = "bzImage"  # builds vmlinux on the way
IMAGE_PATH = "arch/x86/boot/bzImage"
# What a coverage build adds to the config (checked like every fragment), and to the
# Makefile of each profiled file's directory.
COVERAGE_CONFIG = "CONFIG_DEBUG_FS=y\nCONFIG_GCOV_KERNEL=y\n"
CONFIG_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$|^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class SourceTree:
    path: Path
    digest: str


@dataclass(frozen=True)
class BuildRequest:
    variant: Variant
    source: SourceTree
    base_config: str
    fragments: tuple[Path, ...]
    cache: Path
    jobs: int
    kselftests: tuple[str, ...] = ()  # programs of the tree's own selftests to build
    log: Path | None = None  # where this run keeps the build log (default: in the cache)
    coverage: tuple[str, ...] = ()  # files of the tree built with gcov (README: coverage)
    layers: tuple[str, ...] = ()  # the config layers among the fragments, by name (a record)


@dataclass
class BuildResult:
    variant: str
    status: str  # built | cached | failed
    key: str
    kernel: str
    config: str
    log: str
    release: str
    seconds: float
    patches: list[dict]
    # What QEMU boots: the vmlinux through its PVH entry point when the config has one
    # (CONFIG_PVH: no firmware boot loader, no decompression), else the bzImage.
    boot: str = ""
    boot_via: str = ""  # pvh | bzimage
    # kselftest program -> its static binary, or "" with the reason in kselftest_errors
    kselftests: dict[str, str] = field(default_factory=dict)
    kselftest_errors: dict[str, str] = field(default_factory=dict)
    error: str = ""  # why a failed build failed, and the build log's error lines
    error_lines: list[str] = field(default_factory=list)
    # A coverage build: the directory with each profiled file's patched source and .gcno
    # (same relative paths as in the tree), and the files the config did not compile.
    coverage: str = ""
    coverage_files: list[str] = field(default_factory=list)
    coverage_missing: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # the config layers it was built with

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict:
        return asdict(self)


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
        st = source.path.stat()
        memo = cache / "sources" / "digests.json"
        try:
            seen = json.loads(memo.read_text())
        except (OSError, ValueError):
            seen = {}
        stamp = f"{source.path}:{st.st_size}:{st.st_mtime_ns}"
        if stamp not in seen:
            seen[stamp] = "sha256:" + sha256_file(source.path)
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_json(memo, seen)
        return seen[stamp]
    if source.kind == "git":
        out = runner.run(["git", "-C", source.path, "rev-parse", "--verify",
                          f"{source.ref}^{{commit}}"], check=False)
        if out.returncode:
            raise UserError(f"source.git: {source.path}: no commit '{source.ref}'")
        return "git:" + out.output.strip()
    h = hashlib.sha256()
    for root, dirs, files in os.walk(source.path):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            p = Path(root, name)
            st = p.lstat()
            h.update(f"{p.relative_to(source.path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "dir:" + h.hexdigest()


def prepare_source(source: Source, cache: Path, runner: Runner, progress: Progress) -> SourceTree:
    """The pristine tree, unpacked once into the cache (a directory source is used in place)."""
    digest = source_digest(source, cache, runner)
    if source.kind == "dir":
        return SourceTree(source.path, digest)
    dest = cache / "sources" / digest.replace(":", "-")[:40]
    with locked(cache / "locks" / f"{dest.name}.lock"):
        if (dest / "Makefile").is_file():
            return SourceTree(dest, digest)
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
        tops[0].rename(dest)
        shutil.rmtree(tmp)
    return SourceTree(dest, digest)


def patch_records(variant: Variant) -> list[dict]:
    return [{"path": str(p), "sha256": sha256_file(p)} for p in variant.patches]


def build_key(req: BuildRequest, compiler: str) -> str:
    h = hashlib.sha256()
    h.update(f"farm-build-2\0{req.source.digest}\0{req.base_config}\0{TARGET}\0{compiler}\n"
             .encode())
    if req.coverage:  # a coverage build never mixes with a plain one
        h.update(("coverage\0" + "\0".join(sorted(req.coverage)) + COVERAGE_CONFIG
                  + profile_lines("x")).encode())
    for p in req.variant.patches:
        h.update(b"patch\0" + p.read_bytes())
    for p in (*req.fragments, *req.variant.fragments):
        h.update(b"fragment\0" + p.read_bytes())
    return h.hexdigest()[:20]


def _hunk_failures(output: str) -> list[str]:
    """'file X, hunk #N at line L' for each hunk GNU patch could not apply."""
    failures, current = [], "?"
    for line in output.splitlines():
        m = re.match(r"(?:patching|checking) file (.+)", line)
        if m:
            current = m.group(1).strip("'")
            continue
        m = re.match(r"Hunk #(\d+) FAILED at (\d+)", line)
        if m:
            failures.append(f"file {current}, hunk #{m.group(1)} (at line {m.group(2)})")
            continue
        if "can't find file to patch" in line:
            failures.append("a file it patches does not exist in the tree")
        elif "Reversed (or previously applied) patch detected" in line:
            failures.append(f"file {current}: already applied (or reversed)")
    return failures


def apply_patch(tree: Path, patch: Path, runner: Runner, log: Path | None = None) -> str:
    """Apply one patch strictly (no fuzz), as every build does: '' when it applied, else
    where it did not (file and hunk)."""
    out = runner.run(["patch", "-p1", "--forward", "--batch", "--fuzz=0",
                      "--no-backup-if-mismatch", "--reject-file=-", "-d", tree, "-i", patch],
                     check=False, log_path=log)
    if not out.returncode:
        return ""
    return "; ".join(_hunk_failures(out.output)) or out.output.strip()[-300:]


def apply_patches(tree: Path, patches: tuple[Path, ...], runner: Runner, log: Path) -> None:
    """Apply a patch series strictly (no fuzz); a patch that does not apply is bad input."""
    for i, patch in enumerate(patches, 1):
        where = apply_patch(tree, patch, runner, log)
        if where:
            raise UserError(f"patch {i}/{len(patches)} does not apply: {patch}: {where}")


def parse_config(text: str) -> dict[str, str]:
    """CONFIG_X -> value ('n' for '# CONFIG_X is not set')."""
    out = {}
    for line in text.splitlines():
        m = CONFIG_LINE.match(line.strip())
        if m:
            if m.group(1):
                out[m.group(1)] = m.group(2)
            else:
                out[m.group(3)] = "n"
    return out


def check_config(config_text: str, fragments: tuple[Path, ...]) -> list[str]:
    """Every option a fragment asks for must hold in the final .config."""
    final = parse_config(config_text)
    problems = []
    for frag in fragments:
        for n, line in enumerate(frag.read_text().splitlines(), 1):
            want = parse_config(line)
            for opt, val in want.items():
                got = final.get(opt, "n")
                if got != val:
                    problems.append(f"{frag}:{n}: {opt}={val} requested, but the kernel's "
                                    f".config has {opt}={got} (a dependency is missing?)")
    return problems


def compiler_version(runner: Runner) -> str:
    return runner.run(["gcc", "--version"]).output.splitlines()[0]


def _make_env(work: Path, cache: Path) -> dict[str, str]:
    return {"CCACHE_DIR": str(cache / "ccache"), "CCACHE_BASEDIR": str(work),
            "CCACHE_NOHASHDIR": "1", "KBUILD_BUILD_TIMESTAMP": "farm",
            "KBUILD_BUILD_USER": "farm", "KBUILD_BUILD_HOST": "farm"}


@dataclass
class BuildPlan:
    key: str
    out: Path  # the published build: cache/builds/<key>, complete or absent
    log: Path  # this run's build log
    cached: BuildResult | None = None
    work: OwnedDir | None = None  # this run's private tree and objects, while it builds


def published(req: BuildRequest, out: Path) -> BuildResult | None:
    """The build published under this key, if there is a whole one."""
    try:
        res = BuildResult(**json.loads((out / "record.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if Path(res.kernel).is_file() and Path(res.boot).is_file():
        res.status, res.variant, res.seconds = "cached", req.variant.name, 0.0
        res.layers = list(req.layers)  # the same content may go by another name here
        return res
    return None


def plan_build(req: BuildRequest, runner: Runner) -> BuildPlan:
    """The build's key, and its earlier result if a build with that key is already done."""
    key = build_key(req, compiler_version(runner))
    out = req.cache / "builds" / key
    log = req.log or req.cache / "logs" / f"{key}.{TOKEN}.log"
    return BuildPlan(key, out, log, published(req, out))


def prepare_tree(req: BuildRequest, plan: BuildPlan, runner: Runner,
                 progress: Progress) -> None:
    """A tree of this run's own for the variant: hard links to the pristine source (GNU patch
    replaces the files it changes, so the source stays pristine), with the patch series
    applied. Private, so two runs never touch each other's trees; a run that was killed
    leaves one behind, which the next run removes."""
    prune(req.cache / "work")
    for old in (req.cache / "work").glob("[0-9a-f]" * 20):  # trees of farm 0.1's layout
        shutil.rmtree(old, ignore_errors=True)
    plan.log.parent.mkdir(parents=True, exist_ok=True)
    plan.work = OwnedDir(req.cache / "work", plan.key)
    work = plan.work.path
    try:
        (work / "obj").mkdir()
        progress.say(f"{req.variant.name}: preparing tree with {len(req.variant.patches)} "
                     f"patch(es) in {work}")
        copy = ["cp", "-al"] if _same_fs(req.source.path, work) else ["cp", "-a"]
        runner.run([*copy, req.source.path, work / "src"], log_path=plan.log)
        apply_patches(work / "src", req.variant.patches, runner, plan.log)
        profile(work / "src", req.coverage)
    except UserError as e:
        plan.work.remove()
        raise UserError(f"{req.variant.name}: {e}") from None
    except BaseException:
        plan.work.remove()
        raise


def compile_kernel(req: BuildRequest, plan: BuildPlan, runner: Runner,
                   progress: Progress) -> BuildResult:
    """Configure and build a prepared tree out of tree, with ccache, and publish the result
    under its key. Under the key's lock: a build another run finished meanwhile is taken as
    it is, and a build is published whole (made aside, then renamed), never rewritten under
    a guest that boots from it. A build that fails is a result (status "failed"), not an
    exception: the other variants still build and run."""
    assert plan.work is not None, "prepare_tree first"
    try:
        with locked(req.cache / "locks" / f"build-{plan.key}.lock"):
            done = published(req, plan.out)
            if done:
                progress.say(f"{req.variant.name}: kernel {done.release} was built by another "
                             f"run meanwhile ({plan.key})")
                return done
            return _compile(req, plan, runner, progress)
    finally:
        plan.work.remove()
        plan.work = None  # gone: whatever needs the tree again prepares it again


def _compile(req: BuildRequest, plan: BuildPlan, runner: Runner,
             progress: Progress) -> BuildResult:
    start = time.monotonic()
    name = req.variant.name
    work = plan.work.path
    src, obj, log = work / "src", work / "obj", plan.log
    make = ["make", "-C", src, f"O={obj}", "CC=ccache gcc", "HOSTCC=ccache gcc"]
    env = _make_env(work, req.cache)
    runner.run([*make, req.base_config], env=env, log_path=log)
    fragments = (*req.fragments, *req.variant.fragments)
    if req.coverage:
        gcov = work / "coverage.config"
        gcov.write_text(COVERAGE_CONFIG)
        fragments = (*fragments, gcov)
    if fragments:
        runner.run([src / "scripts/kconfig/merge_config.sh", "-m", "-O", obj,
                    obj / ".config", *fragments], env=env, log_path=log)
    runner.run([*make, "olddefconfig"], env=env, log_path=log)
    problems = check_config((obj / ".config").read_text(), fragments)
    if problems:
        raise UserError(f"{name}: the kernel config does not hold what was asked:\n"
                        + "\n".join(problems))

    expected = _expected_objects(req.cache)
    count = 0

    def on_line(line: str) -> None:
        nonlocal count
        if line.startswith("  CC "):
            count += 1
            total = f"/~{expected}" if expected else ""
            progress.status(f"{name}: building, {count}{total} objects compiled")

    progress.say(f"{name}: make -j{req.jobs} {TARGET} (log {log})")
    res = runner.run([*make, f"-j{req.jobs}", TARGET], env=env, log_path=log,
                     on_line=on_line, check=False)
    if res.returncode:
        lines = res.output.splitlines()
        errors = [ln for ln in lines if "error" in ln.lower()][:10] or lines[-15:]
        progress.say(f"{name}: kernel build FAILED (exit {res.returncode}); log: {log}")
        return BuildResult(variant=name, status="failed", key=plan.key, kernel="", config="",
                           log=str(log), release="", patches=patch_records(req.variant),
                           seconds=round(time.monotonic() - start, 1),
                           error=f"kernel build failed (exit {res.returncode})",
                           error_lines=errors)
    if count > 1000:  # a full build: remember its size for the next progress line
        (req.cache / "builds").mkdir(parents=True, exist_ok=True)
        atomic_write(req.cache / "builds" / "expected-objects", str(count))
    release = (obj / "include/config/kernel.release").read_text().strip()
    out = plan.out
    stage = out.with_name(f".{out.name}.{TOKEN}")  # made aside, renamed into place whole
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        shutil.copy2(obj / IMAGE_PATH, stage / "bzImage")
        shutil.copy2(obj / ".config", stage / "config")
        via = boot_image(obj, stage)
        shutil.copy2(log, stage / "build.log")
        found, missing = publish_coverage(src, obj, req.coverage, stage / "coverage")
        result = BuildResult(variant=name, status="built", key=plan.key,
                             kernel=str(out / "bzImage"), config=str(out / "config"),
                             boot=str(out / ("vmlinux" if via == "pvh" else "bzImage")),
                             boot_via=via, log=str(out / "build.log"), release=release,
                             seconds=round(time.monotonic() - start, 1),
                             patches=patch_records(req.variant),
                             coverage=str(out / "coverage") if req.coverage else "",
                             coverage_files=found, coverage_missing=missing,
                             layers=list(req.layers))
        write_json(stage / "record.json", result.to_json())
        if out.exists():  # an incomplete build of this key (its record names missing files)
            old = out.with_name(f".{out.name}.{TOKEN}.old")
            out.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    progress.say(f"{name}: built {release} in {fmt_seconds(result.seconds)} "
                 f"({count} objects compiled)")
    return result


def profile_lines(stem: str) -> str:
    """What a profiled object's Makefile gets: gcov, and its notes naming the source by its
    path in the tree (not the run's private tree, which is gone when a report reads them)."""
    return (f"\nGCOV_PROFILE_{stem}.o := y\n"
            f"CFLAGS_{stem}.o += -fprofile-prefix-map=$(srctree)/=\n")


def profile(src: Path, files: tuple[str, ...]) -> None:
    """Build each file with gcov: `GCOV_PROFILE_<stem>.o := y` in its directory's Makefile.
    The tree is hard links to the pristine source, so the Makefile is written anew, never
    in place."""
    for rel in files:
        path = src / rel
        if not path.is_file():
            raise UserError(f"coverage: {rel} is not a file of the kernel tree")
        makefile = path.parent / "Makefile"
        if not makefile.is_file():
            raise UserError(f"coverage: {rel}: its directory has no Makefile (is it built?)")
        text = makefile.read_text()
        makefile.unlink()
        makefile.write_text(text + profile_lines(path.stem))


def publish_coverage(src: Path, obj: Path, files: tuple[str, ...],
                     dest: Path) -> tuple[list[str], list[str]]:
    """Each profiled file's patched source and its .gcno (gcov reads a guest's counters only
    beside the notes of the very same build) into dest; the files the config did not
    compile have no .gcno and are listed apart."""
    found, missing = [], []
    for rel in files:
        gcno = (obj / rel).with_suffix(".gcno")
        if not gcno.is_file():
            missing.append(rel)
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest / rel)
        shutil.copy2(gcno, (dest / rel).with_suffix(".gcno"))
        found.append(rel)
    return found, missing


def boot_image(obj: Path, out: Path) -> str:
    """How QEMU is to boot the build: a vmlinux with a PVH entry point (copied into out) is
    loaded by QEMU itself and starts in the kernel proper, so a guest skips the firmware's
    Linux loader and the decompressor; under TCG both are slow. Else the bzImage."""
    config = parse_config((obj / ".config").read_text())
    # A KASAN kernel does not start through the PVH entry (no console at all; probed here):
    # it boots the bzImage.
    if config.get("CONFIG_PVH") == "y" and config.get("CONFIG_KASAN") != "y":
        shutil.copy2(obj / "vmlinux", out / "vmlinux")
        return "pvh"
    return "bzimage"


LINEBUF = Path(__file__).with_name("linebuf.c")


def kselftest_key(req: BuildRequest, compiler: str, prog: str) -> str:
    """A selftest program's own key: the variant's tree (source and patches), the program,
    the compiler and how the farm builds it; never the kernel's config, so adding or
    removing a kselftest scenario rebuilds no kernel, and a kernel change rebuilds no test."""
    h = hashlib.sha256()
    h.update(f"farm-kselftest-1\0{req.source.digest}\0{compiler}\0{prog}\n".encode())
    h.update(LINEBUF.read_bytes())
    for p in req.variant.patches:
        h.update(b"patch\0" + p.read_bytes())
    return h.hexdigest()[:20]


def kselftests_of(req: BuildRequest, plan: BuildPlan, runner: Runner,
                  progress: Progress) -> tuple[dict[str, str], dict[str, str]]:
    """The variant's selftest binaries (req.kselftests), each found in the cache under its
    own key or built from the variant's tree (prepared here if the kernel came from the
    cache) and published there: program -> binary, and program -> why there is none."""
    compiler = compiler_version(runner)
    built: dict[str, str] = {}
    failed: dict[str, str] = {}
    todo = []
    for prog in req.kselftests:
        out = req.cache / "kselftests" / kselftest_key(req, compiler, prog)
        exe = out / ("auto" if prog == KSELFTEST_AUTO else kselftest_file(prog))
        if exe.exists():
            built[prog] = str(exe)
        elif (out / "error.txt").is_file():
            failed[prog] = (out / "error.txt").read_text()
        else:
            todo.append((prog, out, exe))
    if not todo:
        progress.say(f"{req.variant.name}: {len(req.kselftests)} kselftest program(s) found "
                     "in the cache")
        return built, failed
    if not plan.work:  # the kernel came from the cache: the tree is prepared for them alone
        prepare_tree(req, plan, runner, progress)
    src = plan.work.path / "src"
    for prog, out, exe in todo:
        stage = out.with_name(f".{out.name}.{TOKEN}")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        try:
            if prog == KSELFTEST_AUTO:
                _, why = build_auto(src, stage / exe.name, runner, plan.log)
            else:
                _, why = build_kselftest(src, prog, stage / exe.name, runner, plan.log)
            if why:
                (stage / "error.txt").write_text(why)
            try:
                stage.rename(out)
            except OSError:  # another run published it meanwhile
                shutil.rmtree(stage, ignore_errors=True)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if why:
            failed[prog] = why
        else:
            built[prog] = str(exe)
    progress.say(f"{req.variant.name}: {len(todo)} kselftest program(s) built, "
                 f"{len(req.kselftests) - len(todo)} found in the cache")
    return built, failed


def auto_programs(src: Path) -> list[str]:
    """`kselftest: auto`: the tree's selftest programs whose name says they test memory
    failure (hwpoison, memory-failure, soft-offline), as dir/name."""
    top = src / "tools" / "testing" / "selftests"
    return sorted(f"{c.parent.relative_to(top)}/{c.stem}" for c in top.glob("*/*.c")
                  if KSELFTEST_AUTO_RE.search(c.stem))


def build_auto(src: Path, dest: Path, runner: Runner, log: Path) -> tuple[Path, str]:
    """The programs of `kselftest: auto` built into dest (one directory, run in name order);
    one that does not build is left out and named in dest/not-built.txt."""
    progs = auto_programs(src)
    if not progs:
        return dest, ("no program of this tree's tools/testing/selftests names memory "
                      "failure (hwpoison, memory-failure, soft-offline)")
    dest.mkdir(parents=True)
    problems = []
    for prog in progs:
        _, why = build_kselftest(src, prog, dest / kselftest_file(prog), runner, log)
        if why:
            problems.append(f"{prog}: {why}")
    if len(problems) == len(progs):
        return dest, "; ".join(problems)
    if problems:
        (dest / "not-built.txt").write_text("\n".join(problems) + "\n")
    return dest, ""


def build_kselftest(src: Path, prog: str, dest: Path, runner: Runner,
                    log: Path) -> tuple[Path, str]:
    """A static binary of one of the tree's own selftest programs, so a variant is tested
    against its own expectations, its stdout line-buffered (LINEBUF): (binary, "") or
    (path, why not) for one that is missing or does not build, which is reported, not fatal."""
    top = src / "tools" / "testing" / "selftests"
    source = top / f"{prog}.c"
    if not source.is_file():
        return dest, f"not in this kernel tree: {source.relative_to(src)}"
    res = runner.run(["gcc", "-static", "-O2", "-I", top, "-I", source.parent, "-o", dest,
                      source, LINEBUF], log_path=log, check=False)
    if res.returncode:
        return dest, "did not build: " + " | ".join(res.output.splitlines()[-3:])
    return dest, ""


def build(req: BuildRequest, runner: Runner, progress: Progress) -> BuildResult:
    """Build one variant's kernel, or find it already built under the same key."""
    plan = plan_build(req, runner)
    if plan.cached:
        return plan.cached
    prepare_tree(req, plan, runner, progress)
    return compile_kernel(req, plan, runner, progress)


def _expected_objects(cache: Path) -> int:
    try:
        return int((cache / "builds" / "expected-objects").read_text())
    except (OSError, ValueError):
        return 0


def _same_fs(a: Path, b: Path) -> bool:
    b.mkdir(parents=True, exist_ok=True)
    return a.stat().st_dev == b.stat().st_dev
