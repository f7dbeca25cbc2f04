import getpass
import os
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture
def data() -> Path:
    return DATA


@pytest.fixture
def fake_kernel(tmp_path) -> Path:
    """A copy of the fake kernel tree: real make, a real compiler, a second to build."""
    dest = tmp_path / "fake-kernel"
    shutil.copytree(DATA / "fake-kernel", dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on loopback, for this user, with a key of its own: what the
    farm's SSH runner and host pool are tested against."""
    sshd_bin = Path("/usr/sbin/sshd")
    if not sshd_bin.is_file():
        pytest.fail("/usr/sbin/sshd is missing (Debian: apt-get install openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / name],
                       check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {d / 'host_key'}
        PidFile {d / 'sshd.pid'}
        AuthorizedKeysFile {d / 'authorized_keys'}
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        Subsystem sftp /usr/lib/openssh/sftp-server
        """))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # the privilege separation directory
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", d / "sshd_config"], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.05)
    # what `ssh-keyscan -p PORT 127.0.0.1 >> known_hosts` writes, read from the key itself
    host_key = (d / "host_key.pub").read_text().split()[:2]
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
    yield SimpleNamespace(target=f"{getpass.getuser()}@127.0.0.1:{port}", port=port,
                          key=d / "client_key", user=getpass.getuser(), dir=d,
                          known_hosts=d / "known_hosts")
    proc.terminate()
    proc.wait()
    log.close()
