"""End to end: a hostile patch series on Debian's real 6.12 tree. Its probe runs from the top
Makefile (`$(shell)`, every make) and from Kconfig (`$(shell,...)`, every conf) and tries
what the issue saw it do unsandboxed: read the CI token, write the farm user's home, the
cache, the pristine source (through the variant tree's hard link) and a file outside, and
connect to a listener on 127.0.0.1. The build stops itself at the bzImage goal (no compile:
the configuration steps are where the probe runs). Nothing of it may succeed: the pristine
source and another variant's tree keep their manifests. Then guests that flood: ended, and
their logs within the caps."""

import difflib
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.bounds import AGENT_CAP, CONSOLE_CAP, LINE_CAP
from orchestrator.build import BuildRequest, build
from orchestrator.farmfile import Variant, load_farm
from orchestrator.progress import Progress
from orchestrator.runner import Runner
from orchestrator.source import prepare_source, source_changed, tree_manifest, variant_tree

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.e2e
TOKEN = "glpat-farm-e2e-secret-9876543210"
STOP = "farm-probe: the build stops here"


def probe_script(targets: dict[str, Path], port: int) -> str:
    lines = ['who=$1', 'echo "farm-probe[$who]: uid=$(id -u)"',
             'env | sed "s/^/farm-probe[$who] env: /"',
             f'if bash -c "exec 3<>/dev/tcp/127.0.0.1/{port}" 2>/dev/null; then '
             'echo "farm-probe[$who]: connected"; fi',
             # in place, in the variant's own tree: its README is a link to the pristine one
             'echo planted >> "$(dirname "$0")/../README" 2>/dev/null && '
             'echo "farm-probe[$who]: wrote tree-readme"']
    for name, path in targets.items():
        lines.append(f'echo planted >> "{path}" 2>/dev/null && '
                     f'echo "farm-probe[$who]: wrote {name}"')
    return "\n".join(lines) + "\n"


def diff(old: str, new: str, path: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        "/dev/null" if not old else f"a/{path}", f"b/{path}"))


def hostile_patch(src: Path, script: str) -> str:
    makefile = (src / "Makefile").read_text()
    top = makefile.index("\n# ")  # after the version lines
    probe = ("FARM_PROBE := $(shell sh $(realpath $(dir $(lastword $(MAKEFILE_LIST))))"
             "/scripts/farm-probe.sh make >&2)\n"
             f"ifneq ($(filter bzImage,$(MAKECMDGOALS)),)\n$(error {STOP})\nendif\n")
    kconfig = (src / "Kconfig").read_text()
    hook = 'source "scripts/Kconfig.include"\n'
    assert hook in kconfig
    return (diff(makefile, makefile[:top + 1] + probe + makefile[top + 1:], "Makefile")
            + diff(kconfig, kconfig.replace(hook, hook + "farm-probe := $(shell,sh "
                   "$(srctree)/scripts/farm-probe.sh kconfig >&2)\n"), "Kconfig")
            + diff("", script, "scripts/farm-probe.sh"))


def test_a_hostile_series_reaches_nothing_outside_its_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("CI_JOB_TOKEN", TOKEN)
    cfg = load_farm(REPO / "farm.yaml")
    runner, progress = Runner(), Progress(open(tmp_path / "progress.txt", "w"))
    if runner.box() is None:
        pytest.fail("this host cannot sandbox a build")
    src = prepare_source(cfg.source, cfg.cache, runner, progress)
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    targets = {"home": Path.home() / "farm-probe", "cache": cfg.cache / "farm-probe",
               "ccache": cfg.cache / "ccache" / "farm-probe", "outside": outside / "planted",
               "pristine": src.path / "README", "results": REPO / "results" / "farm-probe"}
    pristine_readme = (src.path / "README").read_bytes()
    other = variant_tree(src, Variant("other"), (), cfg.cache, "sandbox-test",
                         tmp_path / "other.log", runner, progress)
    try:
        other_before = tree_manifest(other.path / "src")
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            patch = tmp_path / "0001-hostile.patch"
            patch.write_text(hostile_patch(src.path, probe_script(
                targets, listener.getsockname()[1])))
            res = build(BuildRequest(Variant("hostile", (patch,)), src, cfg.base_config, (),
                                     cfg.cache, 2, log=tmp_path / "build.log"),
                        runner, progress)
            with pytest.raises(BlockingIOError):
                listener.accept()  # nothing connected
        assert tree_manifest(other.path / "src") == other_before
    finally:
        other.remove()
    log = (tmp_path / "build.log").read_text()
    assert res.status == "failed" and STOP in log, log[-2000:]
    assert "farm-probe[make]: uid=" in log and "farm-probe[kconfig]: uid=" in log, log[-3000:]
    assert "farm-probe[make]: uid=0" not in log and "farm-probe[kconfig]: uid=0" not in log
    assert "farm-probe[make] env: PATH=" in log and TOKEN not in log
    assert ": wrote " not in log and ": connected" not in log, [
        ln for ln in log.splitlines() if ": wrote " in ln or ": connected" in ln]
    for name, path in targets.items():
        if name != "pristine":
            assert not path.exists(), f"the probe wrote {path}"
    assert (src.path / "README").read_bytes() == pristine_readme
    assert source_changed(src.path) == ""


def test_a_flooding_guest_is_ended_with_its_output_kept_within_the_caps(tmp_path):
    """Two real guests of the base kernel that write without end: one its serial console (in
    lines of terminal escapes and markup), one a line that never ends on its agent channel.
    Each is ended long before its timeout, is an `error` that says so, and leaves logs within
    the caps; the summary shows the console's text inert."""
    farm_yaml = tmp_path / "farm.yaml"
    farm_yaml.write_text(textwrap.dedent(f"""\
        source: {{tarball: /usr/src/linux-source-6.12.tar.xz}}
        config: {{fragments: [{REPO / 'kernels/base.config'}]}}
        variants: {{baseline: {{}}}}
        guest: {{timeout: 600, cpu: Skylake-Server, accel: auto}}
        scenarios: {REPO / 'tests/data/flood/scenarios.yaml'}
        """))
    results = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-c", farm_yaml,
                           "--results", results, "-j", "2"], cwd=REPO, capture_output=True,
                          text=True, timeout=1200, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 3, proc.stderr[-3000:]
    # memory: no process of the run (the farm, its pytest workers, QEMU with its 256 MB guest)
    # grew with what the guests wrote: a farm that kept a flooded console or an endless
    # agent line in memory passes 1 GiB within the guests' first minute
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 1024, f"a process of the run reached {peak_mb:.0f} MB"
    doc = json.loads((results / "results.json").read_text())
    cases = {c["scenario"]: c for c in doc["cases"]}
    for name, what, log in (("flood-console", "console", "console"),
                            ("flood-agent", "agent", "agent")):
        c = cases[name]
        assert c["status"] == "error" and f"{what} flood: " in c["message"], c
        assert c["seconds"] < 300, c  # ended by the cap, not by the 600 s timeout
        path = results / c["logs"][log]
        size = path.stat().st_size
        cap = CONSOLE_CAP if log == "console" else AGENT_CAP
        assert size <= cap + 2 * LINE_CAP, (path, size)
        with open(path, "rb") as f:
            assert max(len(line) for line in f) <= LINE_CAP + 100  # every line cut
    assert "[farm: console cut at 8 MiB of" in (
        results / cases["flood-console"]["logs"]["console"]).read_text(errors="replace")
    assert "[farm: line cut at 1 MiB]" in (
        results / cases["flood-agent"]["logs"]["agent"]).read_text()
    for text in (proc.stdout, proc.stderr, (results / "summary.md").read_text()):
        assert "\x1b" not in text and "<script>" not in text
