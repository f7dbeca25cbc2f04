"""A variant's own selftests: programs of its tree's tools/testing/selftests, compiled
statically from the patched tree so that each kernel is held to its own expectations, and
cached under keys of their own (the source, the variant's patches, the program, the
compiler; never the kernel's config), so that a kselftest scenario added or removed rebuilds
no kernel and a kernel change rebuilds no test."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from .build import BuildPlan, BuildRequest, compiler_version, prepare_tree
from .files import TOKEN
from .progress import Progress
from .registry import KSELFTEST_AUTO, KSELFTEST_AUTO_RE, kselftest_file
from .runner import Runner

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
        why = _publish(src, prog, out, exe.name, runner, plan.log)
        if why:
            failed[prog] = why
        else:
            built[prog] = str(exe)
    progress.say(f"{req.variant.name}: {len(todo)} kselftest program(s) built, "
                 f"{len(req.kselftests) - len(todo)} found in the cache")
    return built, failed


def _publish(src: Path, prog: str, out: Path, name: str, runner: Runner, log: Path) -> str:
    """Build one program (or `auto`'s set) aside and publish it under its key, whole: ''
    when it built, else why not (kept there as error.txt, so it is not tried again)."""
    stage = out.with_name(f".{out.name}.{TOKEN}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        if prog == KSELFTEST_AUTO:
            _, why = build_auto(src, stage / name, runner, log)
        else:
            _, why = build_kselftest(src, prog, stage / name, runner, log)
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
