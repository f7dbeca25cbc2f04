"""The SSH side of the runner seam, against a real sshd on loopback (the `sshd` fixture):
commands are lists whose words reach the host whole, each logged as an `ssh` line a user
can paste; a host that cannot be reached is an infrastructure error. And what a pool of
hosts copies to each host."""

import io
import json
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import PurePosixPath

import pytest
from conftest import REPO
from tests_support import check_junit

from orchestrator.errors import InfraError, UserError
from orchestrator.farmfile import load_farm
from orchestrator.pool import _pack, extract, shipped_config
from orchestrator.runner import Runner
from orchestrator.ssh import SSHRunner


@pytest.fixture
def ssh(sshd):
    logged = []
    runner = SSHRunner(sshd.target, sshd.key, on_command=logged.append,
                       known_hosts=sshd.known_hosts)
    yield runner, logged
    runner.close()


def test_words_reach_the_host_whole_and_are_never_shell_code(ssh, tmp_path):
    runner, logged = ssh
    canary = tmp_path / "canary"
    words = ["a b", "$HOME", "'q'", f"; touch {canary}", "*"]
    res = runner.run(["printf", "%s|", *words])
    assert res.returncode == 0 and res.output == "|".join(words) + "|"
    assert not canary.exists()
    assert logged[-1].startswith(f"ssh -p {runner.port} -i {runner.key} -o UserKnownHostsFile="
                                 f"{runner.known_hosts} {runner.user}@")


def test_the_logged_line_pasted_into_a_shell_does_the_same(ssh, tmp_path):
    runner, logged = ssh
    runner.run(["sh", "-c", 'echo "$FOO" "$(pwd)"'], cwd=tmp_path, env={"FOO": "x  y"})
    line = logged[-1].replace("ssh ", "ssh -o BatchMode=yes -o StrictHostKeyChecking=no "
                                     "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR ", 1)
    pasted = subprocess.run(["bash", "-c", line], capture_output=True, text=True)
    assert pasted.returncode == 0, pasted.stderr
    assert pasted.stdout == f"x  y {tmp_path}\n"
    assert runner.run(["sh", "-c", 'echo "$FOO" "$(pwd)"'], cwd=tmp_path,
                      env={"FOO": "x  y"}).output == pasted.stdout


def test_exit_codes_output_lines_and_logs(ssh, tmp_path):
    runner, _ = ssh
    seen = []
    log = tmp_path / "host.log"
    res = runner.run(["sh", "-c", "echo one; echo two >&2; exit 3"], check=False,
                     on_line=seen.append, log_path=log)
    assert res.returncode == 3
    assert sorted(seen) == ["one", "two"] and sorted(log.read_text().split()) == ["one", "two"]
    with pytest.raises(InfraError) as e:
        runner.run(["false"])
    assert "exit code 1" in str(e.value) and runner.target in str(e.value)


def test_files_go_to_the_host_and_come_back(ssh, tmp_path):
    runner, logged = ssh
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 100)
    runner.put(src, tmp_path / "there.bin")
    assert logged[-1].startswith(f"scp -P {runner.port} ")
    runner.get(tmp_path / "there.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_a_host_that_cannot_be_reached_is_an_infrastructure_error(sshd, tmp_path):
    closed = SSHRunner(f"{sshd.user}@127.0.0.1:1", sshd.key, connect_timeout=5,
                       known_hosts=sshd.known_hosts)
    with pytest.raises(InfraError) as e:
        closed.run(["true"])
    assert "127.0.0.1:1" in str(e.value) and "ssh -p 1" in str(e.value)
    wrong_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", wrong_key], check=True)
    refused = SSHRunner(sshd.target, wrong_key, connect_timeout=5,
                        known_hosts=sshd.known_hosts)
    with pytest.raises(InfraError):
        refused.run(["true"])


def test_a_pool_ships_only_what_it_can_copy_and_refuses_the_rest(tmp_path):
    conf, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    for d in (conf / "guest-tests" / "agent", elsewhere):
        d.mkdir(parents=True)
    (conf / "guest-tests" / "agent" / "init").write_text("#!/bin/sh\n")
    (conf / "guest-tests" / "scenarios.yaml").write_text((REPO / "guest-tests" / "scenarios.yaml")
                                                        .read_text())
    shutil.copytree(REPO / "guest-tests" / "programs", conf / "guest-tests" / "programs")
    (conf / "linux.tar.xz").write_bytes(b"")
    (conf / "fix.patch").write_text("--- a/x\n+++ b/x\n")
    (elsewhere / "other.patch").write_text("--- a/x\n+++ b/x\n")
    farm = conf / "farm.yaml"
    farm.write_text("source: {tarball: linux.tar.xz}\nvariants:\n  baseline: {}\n"
                    "  fixed: {patches: [fix.patch]}\nhosts: [{ssh: build1}]\n")
    cfg = load_farm(farm)
    assert shipped_config(cfg) == (conf, PurePosixPath("config/farm.yaml"))
    pack = tmp_path / "farm.tar"
    assert _pack(cfg, pack, Runner()) == PurePosixPath("config/farm.yaml")
    names = set(tarfile.open(pack).getnames())
    assert {"config/farm.yaml", "config/fix.patch", "farm/orchestrator/pool.py",
            "farm/scripts/setup.sh"} <= names
    assert not any(n.startswith(("farm/.git/", "farm/.venv/", "farm/results/")) or
                   "__pycache__" in n for n in names)
    farm.write_text(farm.read_text().replace("fix.patch", "../elsewhere/other.patch"))
    with pytest.raises(UserError) as e:
        shipped_config(load_farm(farm))
    assert str(elsewhere / "other.patch") in str(e.value)
    assert shipped_config(load_farm(REPO / "farm.yaml")) == (REPO, PurePosixPath("farm/farm.yaml"))


def test_an_unknown_host_key_is_refused_and_says_how_to_trust_it(sshd, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the default, ~/.ssh/known_hosts, is empty
    with pytest.raises(InfraError) as e:
        SSHRunner(sshd.target, sshd.key, connect_timeout=5).run(["true"])
    msg = str(e.value)
    assert f"{sshd.target}: its host key (ssh-ed25519 SHA256:" in msg
    assert f"is not in {tmp_path}/.ssh/known_hosts" in msg
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {tmp_path}/.ssh/known_hosts" in msg
    assert "accept_new: true" in msg
    assert not (tmp_path / ".ssh" / "known_hosts").exists()


def test_accept_new_trusts_a_first_key_remembers_it_and_refuses_a_changed_one(sshd, tmp_path):
    known = tmp_path / "kh" / "known_hosts"
    first = SSHRunner(sshd.target, sshd.key, known_hosts=known, accept_new=True)
    assert first.run(["echo", "hi"]).output == "hi\n"
    assert known.read_text() == sshd.known_hosts.read_text()
    first.close()
    again = SSHRunner(sshd.target, sshd.key, known_hosts=known)  # now known: no opt-in needed
    assert again.run(["true"]).returncode == 0
    again.close()
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    known.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(
        (tmp_path / "other_host_key.pub").read_text().split()[:2]) + "\n")
    with pytest.raises(InfraError, match=r"the host key has CHANGED .*ssh-keygen -R"):
        SSHRunner(sshd.target, sshd.key, known_hosts=known, accept_new=True).run(["true"])


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                data = target.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("bad", [("/etc/evil", "file", "x"), ("run/../../evil", "file", "x"),
                                 ("run/link", "sym", "/etc/passwd"), ("other/x", "file", "x"),
                                 ("run/up", "sym", "../../x")])
def test_a_result_archive_from_a_host_is_unpacked_only_if_every_member_is_safe(tmp_path, bad):
    good = [("run", "dir", ""), ("run/results.json", "file", "{}")]
    _tar(tmp_path / "ok.tar.gz", good)
    extract(tmp_path / "ok.tar.gz", tmp_path / "out", "run", "host1")
    assert (tmp_path / "out" / "run" / "results.json").read_text() == "{}"
    _tar(tmp_path / "bad.tar.gz", [*good, bad])
    with pytest.raises(InfraError, match=r"host1: the result archive holds .* refused"):
        extract(tmp_path / "bad.tar.gz", tmp_path / "out2", "run", "host1")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "evil").exists()


def test_every_host_down_still_writes_reports_with_each_case_an_error(sshd, tmp_path):
    """One host whose port is closed, one whose key is unknown: no traceback, exit 3, and a
    result directory where every case names its host and why it did not run."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "guest-tests", conf / "guest-tests")
    (conf / "farm.yaml").write_text(textwrap.dedent(f"""\
        source: {{tarball: /usr/src/linux-source-6.12.tar.xz}}
        variants: {{baseline: {{}}, again: {{}}}}
        hosts:
          - {{ssh: "{sshd.user}@127.0.0.1:1", key: {sshd.key}, known_hosts: {sshd.known_hosts}}}
          - {{ssh: "{sshd.target}", key: {sshd.key}, known_hosts: {tmp_path / 'empty'}}}
        """))
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-c",
                           conf / "farm.yaml", "--results", results, "--scenarios",
                           "anon-madvise,anon-host-srao,pagecache-clean-madvise"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr, proc.stderr
    doc = json.loads((results / "results.json").read_text())
    assert len(doc["cases"]) == 6 and {c["status"] for c in doc["cases"]} == {"error"}
    why = {c["message"] for c in doc["cases"]}
    assert any(m.startswith(f"not run: host {sshd.user}@127.0.0.1:1: ") for m in why), why
    assert f"not run: host {sshd.target}: its host key (ssh-ed25519 SHA256:" in "".join(why)
    check_junit(results, doc)


def test_a_command_on_a_terminal_is_hung_up_when_the_connection_closes(ssh, tmp_path):
    """What stops a host's farm run when the farm here stops: the command leads its
    terminal's session, and closing the connection sends it SIGHUP."""
    import threading
    import time
    runner, logged = ssh
    flag = tmp_path / "hup"
    script = (f"trap 'echo hup > {flag}; exit 0' HUP; echo ready; "
              "while :; do sleep 0.1; done")
    seen = []
    t = threading.Thread(target=lambda: runner.run(["sh", "-c", script], check=False,
                                                   pty=True, on_line=seen.append), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while "ready" not in seen:
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    assert " -tt -- " in logged[-1] and "exec " in logged[-1]
    runner.close()
    while not flag.exists():
        assert time.monotonic() < deadline, "the command never got SIGHUP"
        time.sleep(0.05)
    assert flag.read_text() == "hup\n"
