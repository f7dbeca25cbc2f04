"""Kernel builds: config from a base target plus fragments (every option checked after
olddefconfig), out-of-tree make of the variant's tree with ccache, and a build cache keyed
by content, so that an unchanged variant is never rebuilt and a build is published whole."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from .caserecords import Record
from .errors import InfraError, UserError
from .farmfile import Variant
from .files import TOKEN, OwnedDir, atomic_write, inside, locked, write_json
from .progress import Progress, fmt_seconds
from .runner import Runner
from .source import SourceTree, profile_lines, sha256_file, variant_tree

TARGET = "bzImage"  # builds vmlinux on the way
IMAGE_PATH = "arch/x86/boot/bzImage"
# What a coverage build adds to the config (checked like every fragment), and to the
# Makefile of each profiled file's directory.
COVERAGE_CONFIG = "CONFIG_DEBUG_FS=y\nCONFIG_GCOV_KERNEL=y\n"
CONFIG_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$|^# (CONFIG_[A-Za-z0-9_]+) is not set$")


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
    coverage: tuple[str, ...] = ()  # files of the tree built with gcov (docs: coverage)
    layers: tuple[str, ...] = ()  # the config layers among the fragments, by name (a record)


@dataclass(frozen=True)
class BuildResult(Record):
    """A variant's kernel as the build stage left it: built, found in the cache, or failed.
    run.json and results.json hold it; the fields after `patches` came with later farms,
    and read as None from an older run's record."""
    WHAT: ClassVar[str] = "build record"
    KEEPS_ORDER: ClassVar[bool] = True
    variant: str
    status: str  # built | cached | failed
    key: str
    kernel: str
    config: str
    log: str
    release: str
    seconds: float
    patches: list[dict]  # {"path", "sha256"} of each
    # What QEMU boots: the vmlinux through its PVH entry point when the config has one
    # (CONFIG_PVH: no firmware boot loader, no decompression), else the bzImage.
    boot: str | None = ""
    boot_via: str | None = ""  # pvh | bzimage
    # kselftest program -> its static binary, or "" with the reason in kselftest_errors
    kselftests: dict[str, str] | None = field(default_factory=dict)
    kselftest_errors: dict[str, str] | None = field(default_factory=dict)
    error: str | None = ""  # why a failed build failed, and the build log's error lines
    error_lines: list[str] | None = field(default_factory=list)
    # A coverage build: the directory with each profiled file's patched source and .gcno
    # (same relative paths as in the tree), and the files the config did not compile.
    coverage: str | None = ""
    coverage_files: list[str] | None = field(default_factory=list)
    coverage_missing: list[str] | None = field(default_factory=list)
    layers: list[str] | None = field(default_factory=list)  # the config layers it was built with

    @property
    def ok(self) -> bool:
        return self.status != "failed"


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


def trusted(req: BuildRequest) -> bool:
    """A build of Debian's pristine kernel source with no patch: the one kind whose compiler
    results go into the shared ccache. Every other build (a patch series, a git or directory
    tree) reads that ccache and adds nothing to it, so no tree can plant an object another
    build would take."""
    origin = req.source.origin
    return not req.variant.patches and origin is not None and origin.kind == "tarball"


@dataclass(frozen=True)
class Sandboxed:
    """What a build's commands see in the sandbox, and their whole environment."""
    rw: tuple[Path, ...]
    ro: tuple[Path, ...]
    env: dict[str, str]
    untrusted: bool
    cwd: Path  # the object directory: merge_config.sh makes its temporary files in the cwd

    def run(self, runner: Runner, cmd: list, **kw):
        return runner.contained(cmd, rw=self.rw, ro=self.ro, env=self.env, cwd=self.cwd,
                                untrusted=self.untrusted, **kw)


def sandboxed(req: BuildRequest, work: Path, runner: Runner,
              extra_ro: tuple[Path, ...] = ()) -> Sandboxed:
    ccache = req.cache / "ccache"
    ccache.mkdir(parents=True, exist_ok=True)
    env = {"CCACHE_DIR": str(ccache), "CCACHE_BASEDIR": str(work),
           "CCACHE_NOHASHDIR": "1", "KBUILD_BUILD_TIMESTAMP": "farm",
           "KBUILD_BUILD_USER": "farm", "KBUILD_BUILD_HOST": "farm"}
    ro = (*req.fragments, *req.variant.fragments, *extra_ro)
    if trusted(req):
        box = runner.box()
        if box is not None:
            box.give_tree(ccache)
        return Sandboxed((work, ccache), ro, env, False, work / "obj")
    env.update(CCACHE_READONLY="1", CCACHE_NOSTATS="1", CCACHE_TEMPDIR="/tmp/ccache")
    return Sandboxed((work,), (*ro, ccache), env, True, work / "obj")


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
        res = BuildResult.from_json(json.loads((out / "record.json").read_text()), str(out))
    except (OSError, ValueError, UserError):
        return None
    if Path(res.kernel).is_file() and Path(res.boot or "").is_file():
        # the same content may go by another name, with other layers, in this run
        return replace(res, status="cached", variant=req.variant.name, seconds=0.0,
                       layers=list(req.layers))
    return None


def plan_build(req: BuildRequest, runner: Runner) -> BuildPlan:
    """The build's key, and its earlier result if a build with that key is already done."""
    key = build_key(req, compiler_version(runner))
    out = req.cache / "builds" / key
    log = req.log or req.cache / "logs" / f"{key}.{TOKEN}.log"
    return BuildPlan(key, out, log, published(req, out))


def prepare_tree(req: BuildRequest, plan: BuildPlan, runner: Runner,
                 progress: Progress) -> None:
    """The variant's patched tree, the run's own while its build needs it (source.py)."""
    plan.work = variant_tree(req.source, req.variant, req.coverage, req.cache, plan.key,
                             plan.log, runner, progress)


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
    name, work, log = req.variant.name, plan.work.path, plan.log
    make = ["make", "-C", work / "src", f"O={work / 'obj'}", "CC=ccache gcc",
            "HOSTCC=ccache gcc"]
    box = sandboxed(req, work, runner)
    _configure(req, work, make, box, runner, log)
    progress.say(f"{name}: make -j{req.jobs} {TARGET} (log {log})")
    counter = _Objects(name, _expected_objects(req.cache), progress)
    res = box.run(runner, [*make, f"-j{req.jobs}", TARGET], log_path=log,
                  on_line=counter.line, check=False)
    if res.returncode:
        lines = res.output.splitlines()
        errors = [ln for ln in lines if "error" in ln.lower()][:10] or lines[-15:]
        progress.say(f"{name}: kernel build FAILED (exit {res.returncode}); log: {log}")
        return BuildResult(variant=name, status="failed", key=plan.key, kernel="", config="",
                           log=str(log), release="", patches=patch_records(req.variant),
                           seconds=round(time.monotonic() - start, 1),
                           error=f"kernel build failed (exit {res.returncode})",
                           error_lines=errors)
    if counter.count > 1000:  # a full build: remember its size for the next progress line
        (req.cache / "builds").mkdir(parents=True, exist_ok=True)
        atomic_write(req.cache / "builds" / "expected-objects", str(counter.count))
    result = _publish(req, plan, round(time.monotonic() - start, 1))
    progress.say(f"{name}: built {result.release} in {fmt_seconds(result.seconds)} "
                 f"({counter.count} objects compiled)")
    return result


def _configure(req: BuildRequest, work: Path, make: list, box: Sandboxed, runner: Runner,
               log: Path) -> None:
    """The base target, the fragments merged into it, olddefconfig, and the check that
    every option a fragment asks for holds; one that does not is bad input."""
    src, obj = work / "src", work / "obj"
    box.run(runner, [*make, req.base_config], log_path=log)
    fragments = (*req.fragments, *req.variant.fragments)
    if req.coverage:
        gcov = work / "coverage.config"
        gcov.write_text(COVERAGE_CONFIG)
        fragments = (*fragments, gcov)
    if fragments:
        box.run(runner, [src / "scripts/kconfig/merge_config.sh", "-m", "-O", obj,
                         obj / ".config", *fragments], log_path=log)
    box.run(runner, [*make, "olddefconfig"], log_path=log)
    problems = check_config(read_built(obj, ".config"), fragments)
    if problems:
        raise UserError(f"{req.variant.name}: the kernel config does not hold what was "
                        "asked:\n" + "\n".join(problems))


class _Objects:
    """The build's progress line: objects compiled so far, of about how many."""

    def __init__(self, name: str, expected: int, progress: Progress):
        self.name, self.expected, self.progress, self.count = name, expected, progress, 0

    def line(self, line: str) -> None:
        if line.startswith("  CC "):
            self.count += 1
            total = f"/~{self.expected}" if self.expected else ""
            self.progress.status(f"{self.name}: building, {self.count}{total} objects compiled")


def _publish(req: BuildRequest, plan: BuildPlan, seconds: float) -> BuildResult:
    """The build's kernel, config, log (and coverage notes) under its key: made aside, then
    renamed into place whole."""
    src, obj, out = plan.work.path / "src", plan.work.path / "obj", plan.out
    release = read_built(obj, "include/config/kernel.release").strip()
    stage = out.with_name(f".{out.name}.{TOKEN}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        take(obj, IMAGE_PATH, stage / "bzImage")
        take(obj, ".config", stage / "config")
        via = boot_image(obj, stage)
        shutil.copy2(plan.log, stage / "build.log")
        found, missing = publish_coverage(src, obj, req.coverage, stage / "coverage")
        result = BuildResult(variant=req.variant.name, status="built", key=plan.key,
                             kernel=str(out / "bzImage"), config=str(out / "config"),
                             boot=str(out / ("vmlinux" if via == "pvh" else "bzImage")),
                             boot_via=via, log=str(out / "build.log"), release=release,
                             seconds=seconds, patches=patch_records(req.variant),
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
    return result


def publish_coverage(src: Path, obj: Path, files: tuple[str, ...],
                     dest: Path) -> tuple[list[str], list[str]]:
    """Each profiled file's patched source and its .gcno (gcov reads a guest's counters only
    beside the notes of the very same build) into dest; the files the config did not
    compile have no .gcno and are listed apart."""
    found, missing = [], []
    for rel in files:
        gcno = str(Path(rel).with_suffix(".gcno"))
        if not inside(obj, gcno, "coverage").is_file():
            missing.append(rel)
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        take(src, rel, dest / rel)
        take(obj, gcno, dest / gcno)
        found.append(rel)
    return found, missing


def boot_image(obj: Path, out: Path) -> str:
    """How QEMU is to boot the build: a vmlinux with a PVH entry point (copied into out) is
    loaded by QEMU itself and starts in the kernel proper, so a guest skips the firmware's
    Linux loader and the decompressor; under TCG both are slow. Else the bzImage."""
    config = parse_config(read_built(obj, ".config"))
    # A KASAN kernel does not start through the PVH entry (no console at all; probed here):
    # it boots the bzImage.
    if config.get("CONFIG_PVH") == "y" and config.get("CONFIG_KASAN") != "y":
        take(obj, "vmlinux", out / "vmlinux")
        return "pvh"
    return "bzimage"


def build(req: BuildRequest, runner: Runner, progress: Progress) -> BuildResult:
    """Build one variant's kernel, or find it already built under the same key."""
    plan = plan_build(req, runner)
    if plan.cached:
        return plan.cached
    prepare_tree(req, plan, runner, progress)
    return compile_kernel(req, plan, runner, progress)


def take(top: Path, rel: str, dest: Path) -> None:
    """Copy a file a build made (or its tree holds) out of it: a regular file inside the
    tree, never what a link the build left there leads to."""
    path = inside(top, rel, "build output")
    if not path.is_file():
        raise InfraError(f"the build left no file {rel} in {top}")
    shutil.copyfile(path, dest)
    shutil.copystat(path, dest)


def read_built(top: Path, rel: str) -> str:
    path = inside(top, rel, "build output")
    if not path.is_file():
        raise InfraError(f"the build left no file {rel} in {top}")
    return path.read_text(errors="replace")


def _expected_objects(cache: Path) -> int:
    try:
        return int((cache / "builds" / "expected-objects").read_text())
    except (OSError, ValueError):
        return 0
