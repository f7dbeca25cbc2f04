"""Test programs from outside the kernel tree: what a scenario's `program:` names (a directory
of C sources, compiled statically into one program, or a static binary), the way users bring
LTP's or mce-test's tests, or a newer tree's selftest to an older kernel. Each is keyed and
cached by its content (never a kernel's), built once per run for every variant, and run in
the guest as a selftest is, from a directory of its own on the ext2 disk; its result is read
as KTAP or by its exit code (0 pass, 4 skip)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .build import compiler_version
from .files import publish_built
from .kselftests import LINEBUF, first_errors
from .registry import KSELFTEST_NOT_BUILT
from .runner import Runner
from .scenarios import Scenario

ELF = b"\x7fELF"


def program_key(path: Path, compiler: str) -> str:
    """A program's key: every file of its directory (names and bytes) or the binary's bytes,
    the compiler and how the farm builds it."""
    h = hashlib.sha256(f"farm-program-2\0{compiler}\n".encode())
    h.update(LINEBUF.read_bytes())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:20]


def programs_of(scenarios: list[Scenario], cache: Path, runner: Runner,
                log: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Each out-of-tree program of these scenarios, found in the cache or built there:
    (scenario -> binary, scenario -> why there is none)."""
    compiler = compiler_version(runner)
    built, failed = {}, {}
    for s in scenarios:
        if not s.program:
            continue
        path = Path(s.program)
        out = cache / "programs" / program_key(path, compiler)
        exe = out / "program"  # one build for every scenario that runs it
        if not exe.is_file() and not (out / "error.txt").is_file():
            publish_built(out, lambda stage, p=path: _build(p, stage / "program", runner, log))
        if exe.is_file():
            built[s.name] = str(exe)
        else:
            failed[s.name] = (out / "error.txt").read_text()
    return built, failed


def _build(path: Path, dest: Path, runner: Runner, log: Path) -> str:
    """'' when dest holds the program, else why not."""
    if path.is_file():
        data = path.read_bytes()
        if not data.startswith(ELF):
            return f"{KSELFTEST_NOT_BUILT}: {path.name} is not an ELF binary"
        dest.write_bytes(data)
        dest.chmod(0o755)
        return ""
    sources = sorted(path.glob("*.c"))
    if not sources:
        return f"{KSELFTEST_NOT_BUILT}: {path} has no .c file"
    # in the sandbox: a scenario file (and its program) comes from a merge request, and an
    # #include of a host file would carry it into the guest
    box = runner.box()
    if box is not None:
        box.give(dest.parent)
    res = runner.contained(["gcc", "-static", "-O2", "-Wall", "-I", path, "-o", dest,
                            *sources, LINEBUF], rw=[dest.parent], ro=[path, LINEBUF],
                           log_path=log, check=False)
    os.chown(dest.parent, os.geteuid(), os.getegid())  # the cache's entry, not the build's
    if dest.exists():
        os.chown(dest, os.geteuid(), os.getegid())
    if res.returncode:
        return f"{KSELFTEST_NOT_BUILT} (gcc -static {path.name}/*.c): " + " | ".join(
            first_errors(res.output))
    return ""
