"""A variant's own selftests: programs of its tree's tools/testing/selftests, built the way
kselftest builds them (the directory's own Makefile, against the tree's exported headers,
`make headers`, with the helpers the directory links: mm/ links vm_util.c and others),
statically, from the patched tree, so that each kernel is held to its own expectations; and
cached under keys of their own (the source, the variant's patches, the program, the
compiler; never the kernel's config), so that a kselftest scenario added or removed rebuilds
no kernel and a kernel change rebuilds no test. A program its tree does not have cannot run
there (a skip); one that does not build is an error, with the build's first error lines."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from .build import BuildPlan, BuildRequest, compiler_version, prepare_tree
from .files import inside, publish_built
from .progress import Progress
from .registry import (
    KSELFTEST_AUTO,
    KSELFTEST_AUTO_RE,
    KSELFTEST_NOT_BUILT,
    KSELFTEST_NOT_HERE,
    kselftest_file,
)
from .runner import Runner

LINEBUF = Path(__file__).with_name("linebuf.c")
ERROR_LINE = re.compile(r"\berror:|\bError \d|undefined reference|\*\*\*")


def kselftest_key(req: BuildRequest, compiler: str, prog: str) -> str:
    """A selftest program's own key: the variant's tree (source and patches), the program,
    the compiler and how the farm builds it; never the kernel's config, so adding or
    removing a kselftest scenario rebuilds no kernel, and a kernel change rebuilds no test."""
    h = hashlib.sha256()
    h.update(f"farm-kselftest-2\0{req.source.digest}\0{compiler}\0{prog}\n".encode())
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
    headers = exported_headers(src, plan.work.path / "headers", runner, plan.log)
    for prog, out, exe in todo:
        why = _publish(src, headers, prog, out, exe.name, runner, plan.log)
        if why:
            failed[prog] = why
        else:
            built[prog] = str(exe)
    progress.say(f"{req.variant.name}: {len(todo)} kselftest program(s) built, "
                 f"{len(req.kselftests) - len(todo)} found in the cache")
    return built, failed


def exported_headers(src: Path, dest: Path, runner: Runner, log: Path) -> Path | None:
    """The tree's UAPI headers as `make headers` exports them (dest/usr/include), which
    kselftest builds against; None when the tree cannot export them (its programs are then
    built against this host's headers, and say so in the log)."""
    res = runner.contained(["make", "-s", "-C", src, f"O={dest}", "headers"],
                           rw=[src.parent], log_path=log, check=False)
    inc = dest / "usr" / "include"
    return inc if not res.returncode and inc.is_dir() else None


def _publish(src: Path, headers: Path | None, prog: str, out: Path, name: str, runner: Runner,
             log: Path) -> str:
    """Build one program (or `auto`'s set) aside and publish it under its key: '' when it
    built, else why not."""
    if prog == KSELFTEST_AUTO:
        return publish_built(out, lambda stage: build_auto(src, headers, stage / name, runner,
                                                           log)[1])
    return publish_built(out, lambda stage: build_kselftest(src, headers, prog, stage / name,
                                                            runner, log)[1])


def auto_programs(src: Path) -> list[str]:
    """`kselftest: auto`: the tree's selftest programs whose name says they test memory
    failure (hwpoison, memory-failure, soft-offline), as dir/name."""
    top = src / "tools" / "testing" / "selftests"
    return sorted(f"{c.parent.relative_to(top)}/{c.stem}" for c in top.glob("*/*.c")
                  if KSELFTEST_AUTO_RE.search(c.stem))


def build_auto(src: Path, headers: Path | None, dest: Path, runner: Runner,
               log: Path) -> tuple[Path, str]:
    """The programs of `kselftest: auto` built into dest (one directory, run in name order);
    one that does not build is left out and named in dest/not-built.txt (the guest reports
    it as a failed KTAP test of its own)."""
    progs = auto_programs(src)
    if not progs:
        return dest, ("no program of this tree's tools/testing/selftests names memory "
                      "failure (hwpoison, memory-failure, soft-offline)")
    dest.mkdir(parents=True)
    problems = []
    for prog in progs:
        _, why = build_kselftest(src, headers, prog, dest / kselftest_file(prog), runner, log)
        if why:
            problems.append(f"{kselftest_file(prog)}: {why}")
    if len(problems) == len(progs):
        return dest, "; ".join(problems)
    if problems:
        (dest / "not-built.txt").write_text("\n".join(problems) + "\n")
    return dest, ""


def build_kselftest(src: Path, headers: Path | None, prog: str, dest: Path, runner: Runner,
                    log: Path) -> tuple[Path, str]:
    """One of the tree's own selftest programs, built by its directory's Makefile as
    kselftest builds it (`make -C tools/testing/selftests/mm OUTPUT=... .../prog`, so the
    helpers the directory links come along), statically, against the tree's exported
    headers, its stdout line-buffered (LINEBUF, linked in): (binary, "") or (path, why not)
    for one that is missing or does not build."""
    top = src / "tools" / "testing" / "selftests"
    source = top / f"{prog}.c"
    if not source.is_file():
        return dest, f"{KSELFTEST_NOT_HERE}: {source.relative_to(src)}"
    # the build's own OUTPUT, in the variant's work directory (the one place the sandbox
    # lets it write), removed after
    out = src.parent / "kselftest" / dest.name
    out.mkdir(parents=True, exist_ok=True)
    box = runner.box()
    if box is not None:
        box.give(out.parent, out)
    try:
        linebuf = out / "linebuf.o"
        runner.contained(["gcc", "-c", "-O2", "-o", linebuf, LINEBUF], rw=[src.parent],
                         ro=[LINEBUF], log_path=log)
        target = out / Path(prog).name
        res = runner.contained(["make", "-C", source.parent, f"OUTPUT={out}",
                                *([f"KHDR_INCLUDES=-isystem {headers}"] if headers else []),
                                f"EXTRA_CFLAGS=-static {linebuf}", target],
                               rw=[src.parent], log_path=log, check=False)
        built = inside(out, target.name, f"kselftest {prog}")
        if res.returncode or not built.is_file():
            return dest, f"{KSELFTEST_NOT_BUILT} (make -C {source.parent.relative_to(src)} " \
                         f"{target.name}): " + " | ".join(first_errors(res.output))
        shutil.copyfile(built, dest)
        dest.chmod(0o755)
        return dest, ""
    finally:
        shutil.rmtree(out, ignore_errors=True)


def first_errors(output: str, n: int = 3) -> list[str]:
    """The build's first error lines (a compiler's `error:`, a linker's `undefined reference`,
    make's `***`), else its last lines."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ERROR_LINE.search(ln)]
    return [ln[:200] for ln in (errors or lines[-n:])[:n]]
