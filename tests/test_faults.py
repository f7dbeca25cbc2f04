"""The fault suite: the real farm, real kernels and real QEMU guests, ended or disturbed the
ways CI ends and disturbs them: SIGTERM (a cancelled job) and SIGKILL mid-run, two runs on
one result directory, two runs on one cache that need the same new build, a guest that
hangs, a patch that does not compile, a full disk and a read-only one. After each: the exit
code the README documents, reports present (or recoverable with `farm report`), and no
process of that run alive a few seconds later."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests_support import check_junit, processes_of

pytestmark = pytest.mark.e2e
REPO = Path(__file__).parent.parent
FARM = [sys.executable, "-m", "orchestrator.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# The first lines of Debian's 6.12 mm/memory-failure.c: context for a patch that applies and
# then stops the compiler.
BROKEN_PATCH = """\
--- a/mm/memory-failure.c
+++ b/mm/memory-failure.c
@@ -1,3 +1,4 @@
 // SPDX-License-Identifier: GPL-2.0-only
+#error "a patch that applies but does not compile (the farm's fault suite)"
 /*
  * Copyright (C) 2008, 2009 Intel Corporation
"""


def start(tmp_path: Path, *args: str, name: str = "farm") -> subprocess.Popen:
    out = open(tmp_path / f"{name}.out", "w")
    err = open(tmp_path / f"{name}.err", "w")
    # its own session, so that the test's signals reach the farm alone; SIGINT as in a shell
    return subprocess.Popen([*FARM, *args], cwd=REPO, env=ENV, stdout=out, stderr=err,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # no guest left behind by a failing test
        proc.wait()
        pytest.fail(f"the farm did not end within {timeout:.0f} s")


def err_of(tmp_path: Path, name: str = "farm") -> str:
    return (tmp_path / f"{name}.err").read_text()


def none_left(results: Path, within: float = 5.0) -> list[str]:
    deadline = time.monotonic() + within
    while (left := processes_of(results)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_for_cases(results: Path, proc: subprocess.Popen, n: int = 1,
                   timeout: float = 1200) -> None:
    deadline = time.monotonic() + timeout
    while len(list(results.glob("cases/*/*/*/case.json"))) < n:
        assert proc.poll() is None, f"the farm ended early ({proc.returncode})"
        assert time.monotonic() < deadline, "no case finished"
        time.sleep(0.1)


def config(tmp_path: Path, variants: str, *, extra: str = "", guest_tests: Path | None = None,
           base: str = "baseline") -> Path:
    path = tmp_path / "farm.yaml"
    path.write_text("\n".join([
        "source: {tarball: /usr/src/linux-source-6.12.tar.xz}",
        f"config: {{fragments: [{REPO / 'kernels/base.config'}]}}",
        "variants:", textwrap.indent(variants, "  "), f"base: {base}",
        f"scenarios: {REPO / 'guest-tests/scenarios.yaml'}",
        *([f"guest_tests: {guest_tests}"] if guest_tests else []), extra]) + "\n")
    return path


def test_sigterm_mid_run_reports_everything_and_leaves_no_guest(tmp_path):
    """What GitLab, GitHub Actions and Jenkins send on cancel, to the farm alone. A second
    run into the same result directory meanwhile is refused at once."""
    results = tmp_path / "r"
    proc = start(tmp_path, "run", "-c", str(REPO / "farm.yaml"), "--results", str(results),
                 "--scenarios", "anon-*", "-j", "2")
    wait_for_cases(results, proc, 2)
    second = subprocess.run([*FARM, "run", "-c", str(REPO / "farm.yaml"), "--results",
                             str(results), "--scenarios", "anon-madvise"], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert f"{results} is in use by farm run (pid {proc.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    proc.send_signal(signal.SIGTERM)
    assert finish(proc, 120) == 3, err_of(tmp_path)[-3000:]
    assert not none_left(results), processes_of(results)
    assert "interrupted (SIGTERM)" in err_of(tmp_path)
    doc = json.loads((results / "results.json").read_text())
    assert doc["run"]["interrupted"] == "SIGTERM"
    assert any(c["status"] == "pass" for c in doc["cases"])
    not_run = [c for c in doc["cases"] if c["message"].startswith("not run")]
    assert not_run and {c["message"] for c in not_run} == {
        "not run: the run was interrupted (SIGTERM)"}
    assert {c["status"] for c in doc["cases"]} <= {"pass", "error"}
    check_junit(results, doc)
    assert "INTERRUPTED" in (results / "summary.md").read_text()


def test_sigkill_mid_run_leaves_no_guest_and_farm_report_recovers_the_results(tmp_path):
    results = tmp_path / "r"
    proc = start(tmp_path, "run", "-c", str(REPO / "farm.yaml"), "--results", str(results),
                 "--scenarios", "anon-*,pagecache-*", "-j", "2")
    wait_for_cases(results, proc, 2)
    assert processes_of(results), "no guest was running to begin with"
    proc.kill()
    proc.wait()
    assert not none_left(results), processes_of(results)
    assert not (results / "results.json").exists()
    rep = subprocess.run([*FARM, "report", str(results)], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 3, rep.stderr  # cases that never ran are errors
    doc = json.loads((results / "results.json").read_text())
    assert sum(c["status"] == "pass" for c in doc["cases"]) >= 2
    assert any(c["message"] == "not run" for c in doc["cases"])
    check_junit(results, doc)


def test_two_runs_on_one_cache_build_a_new_kernel_once_and_both_pass(tmp_path):
    """Both need the same kernel, which no run has built yet (a patch that adds a comment of
    its own makes a new build key, and leaves ccache warm): one builds it, the other waits for
    it under the key's lock and boots it."""
    tag = random.randint(0, 10**12)
    (tmp_path / "0001-comment.patch").write_text(BROKEN_PATCH.replace(
        '+#error "a patch that applies but does not compile (the farm\'s fault suite)"',
        f"+/* the farm's fault suite: a new build key ({tag}) */"))
    cfg = config(tmp_path, f"fresh: {{patches: [{tmp_path / '0001-comment.patch'}]}}",
                 base="fresh")
    runs = [start(tmp_path, "run", "-c", str(cfg), "--scenarios", "anon-madvise",
                  name=f"run{k}") for k in (1, 2)]
    codes = [finish(p, 1500) for p in runs]
    errs = [err_of(tmp_path, f"run{k}") for k in (1, 2)]
    assert codes == [0, 0], errs
    dirs = sorted((tmp_path / "results").iterdir())
    dirs = [d for d in dirs if d.name != "latest"]
    assert len(dirs) == 2, dirs  # started together, each in a directory of its own
    makes = [d for d in dirs if "bzImage" in (d / "farm.log").read_text()]
    assert len(makes) == 1, "the kernel was built twice"
    assert sum("was built by another run meanwhile" in e or "already built" in e
               for e in errs) == 1, errs
    for d in dirs:
        doc = json.loads((d / "results.json").read_text())
        assert [c["status"] for c in doc["cases"]] == ["pass"]
    keys = {json.loads((d / "results.json").read_text())["variants"]["fresh"]["build"]["key"]
            for d in dirs}
    assert len(keys) == 1


def test_a_guest_that_hangs_is_an_error_and_is_stopped(tmp_path):
    guest_tests = tmp_path / "guest-tests"
    shutil.copytree(REPO / "guest-tests", guest_tests)
    init = guest_tests / "agent" / "init"
    init.write_text(init.read_text().replace('prog=$1; shift\n', 'prog=$1; shift\nsleep 100000\n'))
    cfg = config(tmp_path, "baseline: {}", guest_tests=guest_tests,
                 extra="guest: {timeout: 8}\nconfirm: 0\n")
    results = tmp_path / "r"
    proc = start(tmp_path, "run", "-c", str(cfg), "--results", str(results),
                 "--scenarios", "anon-madvise")
    assert finish(proc, 900) == 3, err_of(tmp_path)[-3000:]
    doc = json.loads((results / "results.json").read_text())
    assert [(c["status"], c["message"]) for c in doc["cases"]] == [
        ("error", "timeout after 8s with no kernel verdict")]
    events = (results / doc["cases"][0]["logs"]["agent"]).read_text().splitlines()
    assert [json.loads(e)["event"] for e in events] == ["agent-start"]  # then it hung
    assert not none_left(results)


def test_a_patch_that_does_not_compile_is_a_result_and_the_base_still_runs(tmp_path):
    (tmp_path / "0001-broken.patch").write_text(BROKEN_PATCH)
    cfg = config(tmp_path, "baseline: {}\n"
                           f"broken: {{patches: [{tmp_path / '0001-broken.patch'}]}}")
    results = tmp_path / "r"
    proc = start(tmp_path, "run", "-c", str(cfg), "--results", str(results),
                 "--scenarios", "anon-madvise,pagecache-clean-madvise")
    assert finish(proc, 1500) == 1, err_of(tmp_path)[-3000:]  # the patch broke the build
    assert "broken: kernel build FAILED" in err_of(tmp_path)
    doc = json.loads((results / "results.json").read_text())
    build = doc["variants"]["broken"]["build"]
    assert build["status"] == "failed" and build["log"] == str(results / "builds/broken.log")
    assert any("#error" in ln for ln in build["error_lines"])
    base = [c for c in doc["cases"] if c["variant"] == "baseline"]
    assert {c["status"] for c in base} == {"pass"} and len(base) == 2
    broken = [c for c in doc["cases"] if c["variant"] == "broken"]
    assert {c["message"] for c in broken} == {
        f"not run: the kernel of broken did not build (kernel build failed (exit 2); "
        f"log {results / 'builds/broken.log'})"}
    junit = (results / "junit.xml").read_text()
    assert '<testcase name="build" ' in junit and 'type="build"' in junit and "#error" in junit
    check_junit(results, doc)
    assert "build FAILED" in (results / "summary.md").read_text()
    assert "build failed" in (results / "report.html").read_text()


@pytest.fixture
def mounted(tmp_path):
    """A tmpfs of our own (the tests run as root, as CI does)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")
    points = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "farm-test", point], check=True)
        points.append(point)
        return point

    yield mount
    for p in points:
        subprocess.run(["umount", "-l", p], check=False)


def test_a_full_disk_is_one_line_exit_3_and_no_guest_left(tmp_path, mounted):
    results = mounted("tiny", "size=192k") / "r"
    proc = start(tmp_path, "run", "-c", str(REPO / "farm.yaml"), "--results", str(results),
                 "--scenarios", "anon-*", "-j", "2")
    assert finish(proc, 900) == 3, err_of(tmp_path)[-3000:]
    err = err_of(tmp_path)
    assert "Traceback" not in err, err[-3000:]
    assert err.splitlines()[-1].startswith("farm: infrastructure error: ")
    assert "No space left on device" in err.splitlines()[-1]
    assert not none_left(results)


def test_results_on_a_read_only_file_system_are_refused_in_one_line(tmp_path, mounted):
    ro = mounted("ro", "ro,size=64k")
    proc = subprocess.run([*FARM, "run", "-c", str(REPO / "farm.yaml"), "--results",
                           str(ro / "r")], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"farm: error: --results {ro / 'r'}: Read-only file system: " \
                          f"{ro / 'r'}\n"
