"""The runner seam, the QEMU command line, the initramfs writer and the git source."""

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.build import BuildRequest, build
from orchestrator.errors import InfraError, UserError
from orchestrator.farmfile import Source, Variant
from orchestrator.image import write_cpio
from orchestrator.progress import Progress
from orchestrator.qemu import GuestRequest, Machine, qemu_command
from orchestrator.runner import Runner, quote
from orchestrator.source import prepare_source


def test_quote_pastes_back_into_a_shell():
    cmd = ["make", "-C", "/src/linux tree", "CC=ccache gcc", "it's"]
    line = quote(cmd, cwd="/tmp/x y", env={"CCACHE_DIR": "/c d"})
    assert line == ("(cd '/tmp/x y' && CCACHE_DIR='/c d' make -C '/src/linux tree' "
                    "'CC=ccache gcc' 'it'\"'\"'s')")
    assert shlex.split(quote(cmd)) == cmd


def test_runner_logs_streams_and_fails_loudly(tmp_path):
    seen, lines = [], []
    r = Runner(on_command=seen.append)
    out = r.run(["sh", "-c", "echo one; echo two >&2"], log_path=tmp_path / "log",
                on_line=lines.append)
    assert out.returncode == 0 and lines == ["one", "two"]
    assert (tmp_path / "log").read_text() == "one\ntwo\n"
    assert seen == ["sh -c 'echo one; echo two >&2'"]
    with pytest.raises(InfraError, match="exit code 3: sh -c 'exit 3'"):
        r.run(["sh", "-c", "exit 3"])
    with pytest.raises(InfraError, match="cannot run no-such-tool"):
        r.run(["no-such-tool"])


def test_qemu_command_is_a_list_with_intel_cpu_no_network_and_private_sockets(tmp_path):
    req = GuestRequest(Machine(accel="tcg"), Path("/k/bzImage"), Path("/i/initramfs.cpio"),
                       "console=ttyS0 panic=-1", tmp_path / "case", 60.0,
                       drives=((Path("/d.ext2"), "throttling.bps-write=16384"),
                               (Path("/swap.img"), "")))
    cmd = qemu_command(req, tmp_path / "qmp.sock", tmp_path / "agent.sock")
    assert cmd[0] == "qemu-system-x86_64"
    assert cmd[cmd.index("-cpu") + 1] == "Skylake-Server"
    assert cmd[cmd.index("-append") + 1] == "console=ttyS0 panic=-1"
    assert "-nodefaults" in cmd and "-no-reboot" in cmd
    assert not any("net" in c for c in cmd)
    assert f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off" in cmd
    assert [cmd[i + 1] for i, c in enumerate(cmd) if c == "-drive"] == [
        "file=/d.ext2,format=raw,if=virtio,snapshot=on,throttling.bps-write=16384",
        "file=/swap.img,format=raw,if=virtio,snapshot=on"]


def test_kernel_command_line_names_the_disks_in_order():
    from orchestrator.case import drives, kernel_cmdline
    from orchestrator.scenarios import Scenario
    s = Scenario("x", "swap-dirty", "host-srao", "read", "why", early_kill=1, recovery=0,
                 cleanup="unpoison")
    line = kernel_cmdline(s)
    assert "farm.swap=/dev/vda" in line and "farm.disk" not in line
    # a loaded TCG host misses the boot-time timer check's ticks: the guest panicked
    # "IO-APIC + timer doesn't work!" on CI before its workload started
    assert "no_timer_check" in line.split()
    assert "farm.sysctl=vm.memory_failure_early_kill=1,vm.memory_failure_recovery=0" in line
    assert "farm.run=hwpoison-case:--kind:swap-dirty:--injector:host-srao:--access:read:" \
           "--cleanup:unpoison" in line
    wb = Scenario("w", "writeback", "madvise", "read", "why")
    assert drives(wb, Path("/d"), Path("/s")) == ((Path("/d"), "throttling.bps-write=16384"),)


def test_initramfs_is_a_newc_archive_cpio_reads(tmp_path):
    import stat
    archive = tmp_path / "initramfs.cpio"
    write_cpio([("bin", stat.S_IFDIR | 0o755, b""),
                ("bin/hello", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
                ("init", stat.S_IFREG | 0o755, b"odd length")], archive)
    listing = subprocess.run(["cpio", "-itv"], stdin=open(archive, "rb"),
                             capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in listing.splitlines()]
    assert names == ["bin", "bin/hello", "init"]
    assert listing.splitlines()[1].startswith("-rwxr-xr-x")
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id"], cwd=out, stdin=open(archive, "rb"), check=True,
                   capture_output=True)
    assert (out / "init").read_bytes() == b"odd length"


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_git_source_is_exported_at_its_ref_and_built(tmp_path, fake_kernel):
    git(fake_kernel, "init", "-q")
    git(fake_kernel, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(fake_kernel, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    git(fake_kernel, "tag", "v1")
    (fake_kernel / "mm/memory-failure.c").write_text("int uncommitted;\n")  # not at v1
    runner, progress = Runner(), Progress(stream=open(tmp_path / "p", "w"))
    cache = tmp_path / "cache"
    src = prepare_source(Source("git", fake_kernel, "v1"), cache, runner, progress)
    assert src.digest.startswith("git:") and "truncate_error_folio" in \
        (src.path / "mm/memory-failure.c").read_text()
    res = build(BuildRequest(Variant("b"), src, "tinyconfig", (), cache, 2), runner, progress)
    assert res.status == "built"
    with pytest.raises(UserError, match="no commit 'v9'"):
        prepare_source(Source("git", fake_kernel, "v9"), cache, runner, progress)


def _marker() -> str:
    """A sleep duration no other process on the machine has on its command line."""
    import random
    return f"{random.randint(1000, 9999)}.{random.randint(100000, 999999)}"


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True, text=True)
    return out.stdout.split()


def _gone(marker: str, within: float = 5.0) -> bool:
    import time
    deadline = time.monotonic() + within
    while _alive(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _script(body: str) -> list[str]:
    import sys
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + body]


REPO = Path(__file__).parent.parent


def test_sigterm_stops_a_commands_whole_process_group_and_says_so():
    import signal
    m = _marker()
    proc = subprocess.Popen(_script(f"""
from orchestrator.runner import Runner
from orchestrator.signals import handle_stop_signals
handle_stop_signals()
try:
    Runner().run(["sh", "-c", "sleep {m} & sleep {m} & echo started; wait"],
                 on_line=lambda line: print(line, flush=True))
except KeyboardInterrupt as e:
    print("stopped by", e.how, flush=True)
"""), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    for _ in range(600):  # the two sleeps are forked; wait until both have exec'd
        if len(_alive(m)) == 2:
            break
        time.sleep(0.05)
    assert len(_alive(m)) == 2
    proc.send_signal(signal.SIGTERM)  # to the farm alone, as a CI runner's cancel may
    out, _ = proc.communicate(timeout=60)
    assert out == "stopped by SIGTERM\n"
    assert _gone(m), "a child of the stopped command outlived it"


def test_what_the_farm_starts_dies_with_it_even_when_it_is_killed():
    import signal
    m1, m2 = _marker(), _marker()
    proc = subprocess.Popen(_script(f"""
from orchestrator.runner import Runner
Runner().start(["sleep", "{m1}"])
print("started", flush=True)
Runner().run(["sleep", "{m2}"])
"""), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    while len(_alive(m2)) < 1:
        pass
    assert _alive(m1)
    proc.send_signal(signal.SIGKILL)  # no handler runs: the kernel's parent-death signal does
    proc.wait()
    assert _gone(m1) and _gone(m2), "a child outlived the farm that was killed"


def test_qemu_option_values_escape_commas_and_qemus_own_words_are_the_error(tmp_path):
    """A path with a comma stays one path in QEMU's option lists; when QEMU refuses to
    start, what it said is the error, not the channel that never opened."""
    from orchestrator.guest import run_guest
    from orchestrator.qemu import opt
    work = tmp_path / "case,with=comma"
    req = GuestRequest(Machine(accel="tcg", cpu="nonsense"), tmp_path / "no-kernel",
                       tmp_path / "no-initrd", "console=ttyS0", work, 30.0)
    cmd = qemu_command(req, tmp_path / "q.sock", tmp_path / "a.sock")
    assert f"file,id=con,path={tmp_path}/case,,with=comma/console.log" in cmd
    assert opt("a,b,,c") == "a,,b,,,,c"
    run = run_guest(req, Runner())
    assert run.infra_error.startswith("QEMU exited with 1: ")
    assert "unable to find CPU model 'nonsense'" in run.infra_error
    assert (work / "qemu.log").is_file() and not (tmp_path / "case").exists()


@pytest.mark.parametrize("value,ok", [
    ("0x17e7000", "0x17e7000"), ("0", "0x0"), (0x2000, "0x2000"),
    ("0x17e7001", None), ("0x10000000", None), ("-0x1000", None), ("0x1000 0x8c; quit", None),
    ("0x1000\nquit", None), (None, None), ("", None), ([1], None)])
def test_the_address_a_guest_asks_to_poison_is_checked_before_the_monitor_sees_it(value, ok):
    from orchestrator.qemu import guest_address
    machine = Machine(memory_mb=256)
    if ok:
        assert guest_address(value, machine) == ok
    else:
        with pytest.raises(InfraError, match="the guest asked to poison"):
            guest_address(value, machine)
