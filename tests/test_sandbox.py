"""The sandbox that code from a kernel tree runs in (sandbox.py, Runner.contained), probed as a
hostile patch would probe it, on this host's real bubblewrap: what runs there is not root, has
no capability and no network, sees no token of the farm's environment, writes only where it
is given, and cannot change the pristine source through the hard links of a variant's tree.
The farm itself never follows a link out of a tree, and a cached source that changed is
found and unpacked again; what the farm checks of a guest's QEMU is read from /proc. The same
probes on a real kernel build: test_e2e_sandbox.py."""

import os
import socket
import subprocess
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator import runner as runner_module
from orchestrator.build import IMAGE_PATH, take
from orchestrator.errors import InfraError, UserError
from orchestrator.farmfile import Source
from orchestrator.progress import Progress
from orchestrator.runner import Runner
from orchestrator.sandbox import is_confined, observed
from orchestrator.source import prepare_source, profile, source_changed

TOKEN = "glpat-farm-test-secret-0123456789"
PROBE = """\
echo "uid=$(id -u) gid=$(id -g)"
grep CapEff /proc/self/status
env > "$TREE/env.txt"
echo mine > "$TREE/mine" && echo wrote-tree
touch "$HIDDEN/written" 2>/dev/null && echo wrote-hidden
touch "$READONLY/written" 2>/dev/null && echo wrote-readonly
touch /root/.farm-probe 2>/dev/null && echo wrote-home
ls "$HIDDEN" >/dev/null 2>&1 && echo saw-hidden
bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null && echo connected
echo "interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')"
"""


@pytest.fixture
def runner() -> Runner:
    r = Runner()
    if r.box() is None:
        pytest.fail(f"this host cannot sandbox: {runner_module.sandbox_here()}")
    return r


def test_a_sandboxed_command_is_unprivileged_offline_sees_no_token_and_writes_only_its_tree(
        runner, tmp_path, monkeypatch):
    monkeypatch.setenv("CI_JOB_TOKEN", TOKEN)
    box = runner.box()
    tree, hidden, readonly = (tmp_path / n for n in ("tree", "hidden", "readonly"))
    for d in (tree, hidden, readonly):
        d.mkdir()
    readonly.chmod(0o777)  # only the read-only mount stands in the way
    box.give(tree)
    (tree / "probe.sh").write_text(PROBE)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        res = runner.contained(["sh", tree / "probe.sh"], rw=[tree], ro=[readonly], check=False,
                               env={"TREE": str(tree), "HIDDEN": str(hidden),
                                    "READONLY": str(readonly),
                                    "PORT": str(listener.getsockname()[1])})
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection ever reached it
    out = res.output
    assert res.returncode == 0, out
    assert "uid=0" not in out and "CapEff:\t0000000000000000" in out, out
    if os.geteuid() == 0:
        assert f"uid={box.uid} gid={box.gid}" in out
    assert "wrote-tree" in out and (tree / "mine").read_text() == "mine\n"
    for word in ("wrote-hidden", "wrote-readonly", "wrote-home", "saw-hidden", "connected"):
        assert word not in out, out
    assert "interfaces: lo" in out  # a network namespace of its own: loopback alone
    assert not (hidden / "written").exists() and not (readonly / "written").exists()
    assert not Path("/root/.farm-probe").exists()
    env = (tree / "env.txt").read_text()
    assert TOKEN not in env and "CI_JOB_TOKEN" not in env and "PATH=" in env


def test_a_variants_hard_links_cannot_change_the_pristine_file_they_share(runner, tmp_path):
    box = runner.box()
    if not box.links_safe:
        pytest.skip("not root: the farm copies a variant's tree (no links to protect)")
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    (pristine / "README").write_text("pristine\n")
    before = os.stat(pristine / "README")
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["cp", "-al", pristine, work / "src"], check=True)
    box.give(work)
    box.dirs_only(work / "src")
    script = textwrap.dedent("""\
        cd "$1"
        echo evil >> README 2>/dev/null && echo appended
        chmod 666 README 2>/dev/null && echo chmodded
        touch -d 2000-01-01 README 2>/dev/null && echo touched
        cp README README.new && echo patched >> README.new && mv README.new README && echo replaced
        """)
    res = runner.contained(["sh", "-c", script, "probe", work / "src"], rw=[work])
    assert "replaced" in res.output
    for word in ("appended", "chmodded", "touched"):
        assert word not in res.output
    after = os.stat(pristine / "README")
    assert (pristine / "README").read_text() == "pristine\n"
    assert (after.st_mode, after.st_mtime_ns, after.st_nlink) == (
        before.st_mode, before.st_mtime_ns, 1)
    assert (work / "src/README").read_text() == "pristine\npatched\n"


def test_a_host_that_cannot_sandbox_refuses_untrusted_code_unless_told(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "_PROBED", {})
    monkeypatch.setenv("PATH", str(tmp_path))  # no bubblewrap on it
    monkeypatch.setenv("CI_JOB_TOKEN", TOKEN)
    with pytest.raises(InfraError, match=r"cannot sandbox a build: bubblewrap \(bwrap\) is not "
                                         r"installed.*--no-sandbox builds it"):
        Runner().contained(["/usr/bin/env"], rw=[tmp_path])
    # the pristine source, and a run that said --no-sandbox: outside, in a clean environment
    for res in (Runner().contained(["/usr/bin/env"], rw=[tmp_path], untrusted=False),
                Runner(sandbox=False).contained(["/usr/bin/env"], rw=[tmp_path])):
        assert "PATH=/usr/local/bin:" in res.output and TOKEN not in res.output


def test_the_farm_never_follows_a_link_out_of_a_tree(fake_kernel, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Makefile").write_text("obj-y += x.o\n")
    (outside / "x.c").write_text("int x;\n")
    (fake_kernel / "evil").symlink_to(outside)
    with pytest.raises(UserError, match=r"coverage: evil/x.c leads out of the tree"):
        profile(fake_kernel, ("evil/x.c",))
    with pytest.raises(UserError, match=r"leads out of the tree"):
        profile(fake_kernel, ("../outside/x.c",))
    assert (outside / "Makefile").read_text() == "obj-y += x.o\n"
    # a build that leaves its kernel as a link to a host file: not copied out
    obj = tmp_path / "obj"
    (obj / IMAGE_PATH).parent.mkdir(parents=True)
    (obj / IMAGE_PATH).symlink_to("/etc/shadow")
    with pytest.raises(UserError, match=r"build output: arch/x86/boot/bzImage leads out"):
        take(obj, IMAGE_PATH, tmp_path / "bzImage")
    assert not (tmp_path / "bzImage").exists()


def test_a_cached_source_changed_after_unpacking_is_found_and_unpacked_again(
        fake_kernel, tmp_path):
    tarball = tmp_path / "linux.tar.gz"
    with tarfile.open(tarball, "w:gz") as t:
        t.add(fake_kernel, arcname="linux-fake")
    cache, runner = tmp_path / "cache", Runner()
    progress = Progress(stream=open(tmp_path / "progress.txt", "w"))
    src = prepare_source(Source("tarball", tarball), cache, runner, progress)
    assert source_changed(src.path) == ""
    c = src.path / "mm/memory-failure.c"
    pristine = c.read_text()
    assert not c.stat().st_mode & 0o022, "a sealed source is writable by group or others"
    c.write_text(pristine + "int planted;\n")
    assert "differs" in source_changed(src.path)
    again = prepare_source(Source("tarball", tarball), cache, runner, progress, verify=True)
    assert again.path == src.path and c.read_text() == pristine
    assert "is not as it was unpacked" in (tmp_path / "progress.txt").read_text()
    assert source_changed(src.path) == ""


def test_the_farm_sees_how_a_sandboxed_process_runs(runner):
    """What run_guest checks of every guest's QEMU (qemu.log's `# confined:` line): read from
    /proc, here of a real process in the sandbox, which has no seccomp filter of its own."""
    proc = runner.start(runner.box().argv(["sleep", "60"]))
    try:
        for _ in range(500):
            seen = observed(proc.pid, "sleep")
            if seen:
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    words = dict(w.split("=") for w in seen.split())
    assert words["uid"] != "0" and words["no_new_privs"] == "1", seen
    assert words["cap_eff"] == "0" * 16 and words["seccomp"] == "0", seen
    assert not is_confined(seen)  # no seccomp filter
    assert is_confined("uid=999 seccomp=2 no_new_privs=1 cap_eff=0000000000000000")
    assert not is_confined("uid=0 seccomp=2 no_new_privs=1 cap_eff=0000000000000000")
    assert not is_confined("")


def test_what_runs_in_the_sandbox_dies_with_the_farm_process_however_it_dies(tmp_path):
    """A process that started a sandboxed command is SIGKILLed: the command goes with it.
    (Sandbox.guard also covers a parent that dies while bwrap sets up, which bwrap's own
    --die-with-parent misses: a race seen only under load, in test_faults' SIGKILL test.)"""
    marker = f"{os.getpid()}{time.monotonic_ns() % 10**6}"
    script = tmp_path / "starter.py"
    script.write_text(textwrap.dedent(f"""\
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from orchestrator.runner import Runner
        r = Runner()
        r.start(r.box().argv(["sleep", "{marker}"]))
        print("started", flush=True)
        time.sleep(600)
        """))
    starter = subprocess.Popen([os.sys.executable, script], stdout=subprocess.PIPE, text=True)
    assert starter.stdout.readline() == "started\n"
    for _ in range(500):
        if subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True).stdout:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the sandboxed command never started")
    starter.kill()
    starter.wait()
    for _ in range(500):
        left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True,
                              text=True).stdout.split()
        if not left:
            break
        time.sleep(0.01)
    assert not left, "the sandboxed command outlived the process that started it"
