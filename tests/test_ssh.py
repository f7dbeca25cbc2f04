"""The SSH side of the runner seam, against a real sshd on loopback (the `sshd` fixture):
commands are lists whose words reach the host whole, each logged as an `ssh` line a user
can paste; a host that cannot be reached is an infrastructure error. And what a pool of
hosts copies to each host."""

import subprocess
import tarfile
from pathlib import PurePosixPath

import pytest
from conftest import REPO

from orchestrator.config import load_farm
from orchestrator.errors import InfraError, UserError
from orchestrator.pool import _pack, shipped_config
from orchestrator.runner import Runner, SSHRunner


@pytest.fixture
def ssh(sshd):
    logged = []
    runner = SSHRunner(sshd.target, sshd.key, on_command=logged.append)
    yield runner, logged
    runner.close()


def test_words_reach_the_host_whole_and_are_never_shell_code(ssh, tmp_path):
    runner, logged = ssh
    canary = tmp_path / "canary"
    words = ["a b", "$HOME", "'q'", f"; touch {canary}", "*"]
    res = runner.run(["printf", "%s|", *words])
    assert res.returncode == 0 and res.output == "|".join(words) + "|"
    assert not canary.exists()
    assert logged[-1].startswith(f"ssh -p {runner.port} -i {runner.key} {runner.user}@")


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
    closed = SSHRunner(f"{sshd.user}@127.0.0.1:1", sshd.key, connect_timeout=5)
    with pytest.raises(InfraError) as e:
        closed.run(["true"])
    assert "127.0.0.1:1" in str(e.value) and "ssh -p 1" in str(e.value)
    wrong_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", wrong_key], check=True)
    refused = SSHRunner(sshd.target, wrong_key, connect_timeout=5)
    with pytest.raises(InfraError):
        refused.run(["true"])


def test_a_pool_ships_only_what_it_can_copy_and_refuses_the_rest(tmp_path):
    conf, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    for d in (conf / "guest-tests" / "agent", elsewhere):
        d.mkdir(parents=True)
    (conf / "guest-tests" / "agent" / "init").write_text("#!/bin/sh\n")
    (conf / "guest-tests" / "scenarios.yaml").write_text((REPO / "guest-tests" / "scenarios.yaml")
                                                        .read_text())
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
