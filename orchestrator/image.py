"""The guest image: an initramfs of busybox-static, the agent as /init and the C workloads
of guest-tests/ compiled statically on the host; and the ext2 disk the file cases use."""

from __future__ import annotations

import hashlib
import io
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import InfraError
from .files import TOKEN, atomic_write
from .registry import kselftest_file
from .runner import Runner

BUSYBOX = Path("/bin/busybox")
DISK_MB = 32


SWAP_MB = 64


@dataclass(frozen=True)
class GuestImage:
    initrd: Path
    disk: Path
    swap: Path
    digest: str


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    """One 'newc' cpio header and its data, padded as the kernel's unpacker expects."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    hdr = b"070701" + b"".join(f"{f:08X}".encode() for f in fields)
    out = io.BytesIO()
    out.write(hdr + name.encode() + b"\0")
    out.write(b"\0" * (-out.tell() % 4))
    out.write(data)
    out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def write_cpio(entries: list[tuple[str, int, bytes]], dest: Path) -> None:
    """entries: (path, mode, data); directories have S_IFDIR modes and no data."""
    with open(dest, "wb") as f:
        for ino, (name, mode, data) in enumerate(entries, 1):
            f.write(_cpio_entry(name, mode, data, ino))
        f.write(_cpio_entry("TRAILER!!!", 0))


def with_kselftests(image: GuestImage, kselftests: dict[str, str], where: Path,
                    programs: dict[str, str] | None = None) -> Path:
    """The image's initramfs with a variant's own selftest binaries appended as a second
    cpio archive (the kernel unpacks concatenated archives in turn) under
    /guest-tests/kselftest/, and the run's programs from outside the tree (scenario ->
    binary) under /guest-tests/program/."""
    programs = programs or {}
    if not kselftests and not programs:
        return image.initrd
    # named by the image and the very binaries (each path holds its own key): another set of
    # programs is another initramfs
    which = hashlib.sha256("\0".join([image.digest, *(f"{p}={exe}" for p, exe in sorted(
        kselftests.items())), *(f"program:{p}={exe}" for p, exe in sorted(
            programs.items()))]).encode()).hexdigest()[:20]
    where.mkdir(parents=True, exist_ok=True)
    dest = where / f"initramfs-{which}.cpio"
    if dest.is_file():
        return dest
    extra = where / f".kselftests.{TOKEN}.cpio"
    entries = [("guest-tests/kselftest", stat.S_IFDIR | 0o755, b"")]
    for prog, exe in sorted(kselftests.items()):
        if Path(exe).is_dir():  # kselftest: auto, a directory of programs
            entries.append(("guest-tests/kselftest/auto", stat.S_IFDIR | 0o755, b""))
            entries += [(f"guest-tests/kselftest/auto/{f.name}", stat.S_IFREG | 0o755,
                         f.read_bytes()) for f in sorted(Path(exe).iterdir())
                        if f.suffix != ".txt"]
            not_built = Path(exe) / "not-built.txt"  # each a failed KTAP test in the guest
            if not_built.is_file():
                entries.append(("guest-tests/kselftest/auto.not-built", stat.S_IFREG | 0o644,
                                "".join(ln.split(":")[0] + "\n" for ln in
                                        not_built.read_text().splitlines()).encode()))
        else:
            entries.append((f"guest-tests/kselftest/{kselftest_file(prog)}",
                            stat.S_IFREG | 0o755, Path(exe).read_bytes()))
    if programs:
        entries.append(("guest-tests/program", stat.S_IFDIR | 0o755, b""))
        entries += [(f"guest-tests/program/{name}", stat.S_IFREG | 0o755,
                     Path(exe).read_bytes()) for name, exe in sorted(programs.items())]
    write_cpio(entries, extra)
    try:
        atomic_write(dest, image.initrd.read_bytes() + extra.read_bytes())
    finally:
        extra.unlink(missing_ok=True)
    return dest


def workload_sources(guest_tests: Path) -> list[Path]:
    return sorted((guest_tests / "workloads").glob("*.c"))


def image_digest(guest_tests: Path) -> str:
    h = hashlib.sha256(b"farm-image-2\n")
    for p in [*workload_sources(guest_tests), guest_tests / "agent" / "init", BUSYBOX]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:20]


def build_image(guest_tests: Path, cache: Path, runner: Runner) -> GuestImage:
    """Build (or find) the initramfs and the ext2 disk for these guest tests."""
    if not BUSYBOX.is_file():
        raise InfraError(f"{BUSYBOX} is missing (Debian: apt-get install busybox-static)")
    digest = image_digest(guest_tests)
    out = cache / "images" / digest
    initrd, disk, swap = out / "initramfs.cpio", out / "disk.ext2", out / "swap.img"
    if initrd.is_file() and disk.is_file() and swap.is_file():
        return GuestImage(initrd, disk, swap, digest)
    tmp = out.with_name(f".{out.name}.{TOKEN}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    entries: list[tuple[str, int, bytes]] = [
        (d, stat.S_IFDIR | 0o755, b"") for d in
        ("bin", "dev", "proc", "sys", "mnt", "tmp", "guest-tests")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes()))
    entries.append(("init", stat.S_IFREG | 0o755, (guest_tests / "agent" / "init").read_bytes()))
    box = runner.box()  # guest_tests may come from a merge request: compiled in the sandbox
    if box is not None:
        box.give(tmp / "bin")
    for src in workload_sources(guest_tests):
        exe = tmp / "bin" / src.stem
        runner.contained(["gcc", "-O2", "-Wall", "-static", "-pthread", "-o", exe, src],
                         rw=[tmp / "bin"], ro=[src])
        entries.append((f"guest-tests/{src.stem}", stat.S_IFREG | 0o755, exe.read_bytes()))
    write_cpio(entries, tmp / "initramfs.cpio")
    runner.run(["mke2fs", "-q", "-t", "ext2", "-b", "4096", "-F", "-L", "farm",
                tmp / "disk.ext2", f"{DISK_MB}M"])
    with open(tmp / "swap.img", "wb") as f:  # sparse; the guest runs mkswap on it
        f.truncate(SWAP_MB << 20)
    shutil.rmtree(tmp / "bin")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)
    except OSError:  # another run built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return GuestImage(initrd, disk, swap, digest)
