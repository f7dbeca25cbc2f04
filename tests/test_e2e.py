"""End to end: the real default kernel built from linux-source-6.12, real QEMU guests for
both variants, real poison from the guest and from the host. Slow (a cold build is ~5 min);
`-m 'not e2e'` leaves it out."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests_support import check_junit, processes_of

from orchestrator.farmfile import load_farm
from orchestrator.options import RunOptions
from orchestrator.plan import select
from orchestrator.registry import ACCESS_STEPS, INJECTORS, PAGE_KINDS

REPO = Path(__file__).parent.parent
# The e2e tests share one A/B run and must not run beside each other: tox runs the suite with
# --dist loadfile, so this whole file goes to one worker.
pytestmark = pytest.mark.e2e
FARM = [sys.executable, "-m", "orchestrator.cli"]
PATCH = next((REPO / "kernels/patches/poison-clean-ptes").glob("*.patch"))


def farm(*args, cwd=REPO):
    return subprocess.run([*FARM, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    results = tmp_path_factory.mktemp("ab") / "results"
    proc = farm("run", "-c", str(REPO / "farm.yaml"), "--results", str(results), "-j", "2")
    doc = json.loads((results / "results.json").read_text())
    return proc, results, doc


def cases(doc, variant):
    return {c["scenario"]: c for c in doc["cases"] if c["variant"] == variant}


def test_default_ab_run_covers_both_variants_and_all_scenarios(ab):
    proc, results, doc = ab
    assert proc.returncode == 1, proc.stderr[-3000:]  # the shipped patch regresses
    base, patched = cases(doc, "baseline"), cases(doc, "poison-clean-ptes")
    assert len(base) >= 60 and set(base) == set(patched)
    pages = [c for c in base.values() if c["page_kind"] != "kselftest"]
    kinds = {c["page_kind"] for c in pages}
    injectors = {c["injector"] for c in pages}
    assert kinds == set(PAGE_KINDS) and injectors == set(INJECTORS)
    for kind in ("anon", "pagecache-clean", "hugetlb-anon"):
        assert {"host-srao", "host-srar"} <= {c["injector"] for c in base.values()
                                              if c["page_kind"] == kind}, kind
    not_passed = {n: (c["status"], c["message"]) for n, c in base.items()
                  if c["status"] != "pass"}
    assert not not_passed, not_passed
    assert doc["run"]["accelerator"] in ("tcg", "kvm")
    # every access step was taken by a real guest, and the page cache's rules held
    taken = {k.partition(".")[0] for c in pages for k in c["observed"] if "." in k}
    assert taken == set(ACCESS_STEPS) - {"read"}
    shm = base["shmem-madvise"]["observed"]
    assert (shm["pread.errno"], shm["remap-read.signal"], shm["truncate-extend.data"]) == (
        5, "BUS_MCEERR_AR", "zeroed")
    assert base["pagecache-dirty-madvise"]["observed"]["pread.data"] == "zeroed"
    for c in doc["cases"]:
        for log in ("console", "agent"):
            assert (results / c["logs"][log]).stat().st_size > 0, c["id"]
    assert "| scenario | baseline | poison-clean-ptes |" in proc.stdout


def test_default_ab_run_observes_real_hwpoison_behaviour(ab):
    _, _, doc = ab
    base = cases(doc, "baseline")
    obs = base["anon-madvise"]["observed"]
    assert obs["inject_signal"] == "BUS_MCEERR_AR" and obs["si_addr_lsb"] == 12
    assert obs["recovery"] == ["dirty LRU page: Recovered"]
    assert obs["hardware_corrupted_kb"] == 4
    srar = base["anon-host-srar"]
    assert srar["observed"]["injections"][0]["monitor"].startswith("mce 0 9 0xbd80000000000134")
    assert srar["observed"]["inject_signal"] == "BUS_MCEERR_AR"
    assert base["pagecache-dirty-madvise"]["observed"]["fsync_errno"] == 5
    assert base["anon-host-srar-in-kernel"]["observed"]["guest"] == "panicked"
    assert base["hugetlb-anon-madvise"]["observed"]["si_addr_lsb"] == 21
    unpoisoned = base["anon-corrupt-pfn-unpoison"]["observed"]
    assert unpoisoned["hardware_corrupted_kb_after_unpoison"] == 0
    assert base["swap-clean-madvise"]["observed"]["recovery"] == [
        "clean swapcache page: Recovered"]


def test_kselftests_of_the_tree_run_in_the_guest_as_ktap_cases(ab):
    _, results, doc = ab
    base = cases(doc, "baseline")
    program = base["kselftest-hugetlb-soft-offline"]
    assert program["status"] == "pass", program["message"]
    ktap = {n: c for n, c in base.items() if n.startswith("kselftest-hugetlb-soft-offline/")}
    assert sorted(ktap) == ["kselftest-hugetlb-soft-offline/1",
                            "kselftest-hugetlb-soft-offline/2"]
    assert {c["status"] for c in ktap.values()} == {"pass"}
    assert "soft-offline" in ktap["kselftest-hugetlb-soft-offline/2"]["observed"]["ktap_name"]
    junit = (results / "junit.xml").read_text()
    assert 'name="kselftest-hugetlb-soft-offline/1"' in junit


def test_shipped_patch_shows_a_regression_on_clean_page_cache(ab):
    _, _, doc = ab
    verdicts = {c["scenario"]: c["verdict"] for c in doc["comparison"]}
    assert verdicts["pagecache-clean-madvise"] == "regression"
    assert verdicts["anon-madvise"] == "same"
    patched = cases(doc, "poison-clean-ptes")["pagecache-clean-madvise"]
    assert patched["observed"]["recovery"] == ["clean LRU page: Recovered"]
    assert patched["observed"]["access_signal"] == "BUS_MCEERR_AR"
    assert patched["observed"]["data"] == "unreadable"
    assert "regression" not in {v for s, v in verdicts.items() if s.startswith("anon")}


def test_a_kselftest_line_builds_no_kernel_and_a_killing_signal_is_named(ab, tmp_path):
    """One more of the tree's selftests, added as one scenario line: the kernel the default
    run built is found, not rebuilt (kselftests are keyed apart); hugetlb-read-hwpoison is
    killed by the SIGBUS its own MADV_HWPOISON sends, and what it printed before reaches the
    agent (its stdout is line-buffered by the farm)."""
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text(textwrap.dedent("""\
        scenarios:
        - name: kselftest-hugetlb-read-hwpoison
          kselftest: mm/hugetlb-read-hwpoison
          sysctl: {vm.nr_hugepages: 12}
          why: the tree's own test of read() on a hugetlbfs file with a poisoned page
        """))
    text = (REPO / "farm.yaml").read_text().replace("kernels/", f"{REPO}/kernels/")
    text = text.replace("scenarios: guest-tests/scenarios.yaml",
                        f"scenarios: {scenarios}\nguest_tests: {REPO}/guest-tests")
    (tmp_path / "farm.yaml").write_text(text)
    results = tmp_path / "r"
    proc = farm("run", "-c", str(tmp_path / "farm.yaml"), "--variants", "baseline",
                "--results", str(results), "-j", "2")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "baseline: kernel 6.12" in proc.stderr and "already built" in proc.stderr
    assert "kselftest program(s) built" in proc.stderr or \
        "1 kselftest program(s) found in the cache" in proc.stderr
    doc = json.loads((results / "results.json").read_text())
    (case,) = doc["cases"]
    assert case["status"] == "fail" and case["message"].startswith("killed by SIGBUS"), case
    agent = (results / case["logs"]["agent"]).read_text()
    assert "HugeTLB read regression test" in agent  # printed before the signal


def test_kselftest_auto_runs_every_memory_failure_program_of_the_tree(ab, tmp_path):
    """kselftest: auto in 6.12: hugetlb-read-hwpoison (killed by SIGBUS, named so) and
    hugetlb-soft-offline (two KTAP tests), each a KTAP test of one case, found in the tree."""
    results = tmp_path / "r"
    proc = farm("run", "-c", str(REPO / "farm.yaml"), "--variants", "baseline", "--scenarios",
                "kselftest-auto", "--tier", "full", "--results", str(results), "-j", "2")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "already built" in proc.stderr  # no kernel built for it
    doc = json.loads((results / "results.json").read_text())
    case = next(c for c in doc["cases"] if c["scenario"] == "kselftest-auto")
    subs = {c["scenario"]: c for c in doc["cases"] if c.get("parent") == case["id"]}
    assert sorted(subs) == ["kselftest-auto/1", "kselftest-auto/2", "kselftest-auto/2.1",
                            "kselftest-auto/2.2"]
    one, two = subs["kselftest-auto/1"], subs["kselftest-auto/2"]
    assert one["observed"]["ktap_name"] == "mm-hugetlb-read-hwpoison"
    assert one["status"] == "fail" and "killed by SIGBUS" in one["message"]
    assert two["observed"]["ktap_name"] == "mm-hugetlb-soft-offline" and two["status"] == "pass"
    agent = (results / case["logs"]["agent"]).read_text()
    assert "HugeTLB read HWPOISON test..." in agent  # printed before it was killed


def test_default_ab_run_junit_validates_and_matches_results(ab):
    _, results, doc = ab
    check_junit(results, doc)


def test_default_ab_run_writes_a_kcidb_document_kcidb_io_validates(ab):
    from kcidb_io.schema import LATEST
    _, results, doc = ab
    k = json.loads((results / "kcidb.json").read_text())
    LATEST.validate(k)
    assert len(k["checkouts"]) == len(k["builds"]) == 2
    assert all(b["status"] == "PASS" and b["compiler"].startswith("gcc") for b in k["builds"])
    assert all(b["config_url"].endswith(".config") for b in k["builds"])
    assert len(k["tests"]) == sum(1 + len(c.get("subcases") or []) for c in doc["cases"])
    assert {t["status"] for t in k["tests"]} <= {"PASS", "FAIL", "SKIP"}
    assert any(t["path"].startswith("hwpoison.kselftest-") and t["path"].count(".") >= 2
               for t in k["tests"])  # KTAP subtests under their program


def test_default_ab_run_boots_the_vmlinux_through_its_pvh_entry(ab):
    _, results, doc = ab
    for v in ("baseline", "poison-clean-ptes"):
        build = doc["variants"][v]["build"]
        assert build["boot_via"] == "pvh" and build["boot"].endswith("/vmlinux"), build
    qemu = (results / doc["cases"][0]["logs"]["qemu"]).read_text()
    assert " -kernel " in qemu and "/vmlinux " in qemu
    assert '<property name="boot" value="pvh"' in (results / "junit.xml").read_text()


def test_shards_of_a_run_merge_into_one_result(ab, tmp_path):
    names = "anon-madvise,pagecache-clean-madvise,anon-host-srao"
    shards = []
    for k in (1, 2):
        shards.append(tmp_path / f"shard-{k}")
        proc = farm("run", "-c", str(REPO / "farm.yaml"), "--scenarios", names,
                    "--shard", f"{k}/2", "--results", str(shards[-1]), "-j", "2")
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
    ran = [{c["scenario"] for c in json.loads((d / "results.json").read_text())["cases"]}
           for d in shards]
    assert ran == [{"anon-madvise", "pagecache-clean-madvise"}, {"anon-host-srao"}]
    proc = farm("merge", *map(str, shards), "--out", str(tmp_path / "merged"))
    assert proc.returncode == 1, proc.stderr[-3000:]  # the clean page-cache regression
    doc = json.loads((tmp_path / "merged" / "results.json").read_text())
    first = [c for c in doc["cases"] if not c["confirm"]]
    assert len(first) == 6 and {c["status"] for c in doc["cases"]} == {"pass", "fail"}
    # the regression was confirmed in its shard: base and variant twice more each
    assert sorted((c["variant"], c["repeat"]) for c in doc["cases"] if c["confirm"]) == [
        ("baseline", 2), ("baseline", 3), ("poison-clean-ptes", 2), ("poison-clean-ptes", 3)]
    verdicts = {c["scenario"]: c["verdict"] for c in doc["comparison"]}
    assert verdicts == {"anon-madvise": "same", "anon-host-srao": "same",
                        "pagecache-clean-madvise": "regression"}
    check_junit(tmp_path / "merged", doc)


@pytest.fixture(scope="module")
def pool(sshd, tmp_path_factory):
    """Two "hosts" that are this machine through a real sshd on loopback, each with a
    directory of its own (kept for the module: the hosts keep their virtualenvs)."""
    top = tmp_path_factory.mktemp("pool")
    conf = top / "conf"
    for d in ("kernels", "guest-tests"):
        shutil.copytree(REPO / d, conf / d)
    hosts = [top / "host1", top / "host2"]
    (conf / "farm.yaml").write_text(textwrap.dedent(f"""\
        source: {{tarball: /usr/src/linux-source-6.12.tar.xz}}
        config: {{fragments: [kernels/base.config]}}
        variants:
          baseline: {{}}
          poison-clean-ptes:
            patches: [kernels/patches/poison-clean-ptes/{PATCH.name}]
        hosts:
        """) + "".join(f"  - {{ssh: \"{sshd.target}\", dir: {h}, jobs: 1, key: {sshd.key}, "
                       f"known_hosts: {sshd.known_hosts}}}\n" for h in hosts))
    return conf / "farm.yaml", hosts


def test_a_pool_of_hosts_over_ssh_runs_one_shard_each_and_merges(ab, sshd, pool, tmp_path):
    """The farm and farm.yaml are copied to each host, each runs its shard with its own
    virtualenv, and the results come back into one result directory."""
    conf_yaml, hosts = pool
    results = tmp_path / "results"
    proc = farm("run", "-c", str(conf_yaml), "--results", str(results),
                "--scenarios", "anon-madvise,pagecache-clean-madvise,anon-host-srao")
    assert proc.returncode == 1, proc.stderr[-4000:]  # the clean page-cache regression
    doc = json.loads((results / "results.json").read_text())
    verdicts = {c["scenario"]: c["verdict"] for c in doc["comparison"]}
    assert verdicts == {"anon-madvise": "same", "anon-host-srao": "same",
                        "pagecache-clean-madvise": "regression"}
    assert len(doc["run"]["merged"]) == 2 and doc["run"]["missing_shards"] == []
    for h in hosts:
        assert (h / "farm" / ".venv" / "bin" / "farm").is_file()
    assert "(1/2): running shard 1/2" in proc.stderr and "(2/2): [" in proc.stderr
    log = (results / "farm.log").read_text()
    assert f"ssh -p {sshd.port} -i {sshd.key}" in log and "--shard 2/2" in log
    check_junit(results, doc)
    for c in doc["cases"]:
        assert (results / c["logs"]["console"]).stat().st_size > 0, c["id"]


def test_an_interrupted_pool_run_stops_the_hosts_runs_and_reports(ab, pool, tmp_path):
    """SIGTERM to the farm here: the connections close, each host's terminal hangs up, and
    the host's farm stops as it does on Ctrl-C, guests and all."""
    conf_yaml, hosts = pool
    results = tmp_path / "results"

    def cases_on_hosts():
        return {p for h in hosts for p in h.glob("results/*/cases/*/*/*/case.json")}

    earlier = cases_on_hosts()  # the hosts keep the shards of the test before
    proc = subprocess.Popen([*FARM, "run", "-c", str(conf_yaml), "--results", str(results),
                             "--scenarios", "anon-*,pagecache-*"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 900
    while not cases_on_hosts() - earlier:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no host finished a case"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("the pool run did not stop within 120 s of SIGTERM")
    assert proc.returncode == 3, err[-3000:]
    assert "Traceback" not in err
    deadline = time.monotonic() + 30
    while (left := processes_of(*hosts)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left
    doc = json.loads((results / "results.json").read_text())
    assert doc["run"]["interrupted"] and {c["status"] for c in doc["cases"]} <= {"pass", "error"}
    assert any("interrupted (SIGTERM)" in c["message"] for c in doc["cases"])
    check_junit(results, doc)


def test_a_a_run_shows_no_regression(tmp_path):
    farm_yaml = tmp_path / "farm.yaml"
    farm_yaml.write_text(textwrap.dedent(f"""\
        source: {{tarball: /usr/src/linux-source-6.12.tar.xz}}
        config: {{fragments: [{REPO / 'kernels/base.config'}]}}
        variants:
          baseline: {{}}
          baseline-copy: {{}}
        scenarios: {REPO / 'guest-tests/scenarios.yaml'}
        """))
    proc = farm("run", "-c", str(farm_yaml), "--results", str(tmp_path / "r"), "-j", "2")
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    verdicts = [c["verdict"] for c in doc["comparison"]]
    assert len(verdicts) >= 60
    assert "regression" not in verdicts, doc["comparison"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_patch_that_does_not_apply_exits_2_naming_patch_file_and_hunk(tmp_path):
    patch = tmp_path / "0001-stale.patch"
    patch.write_text("--- a/mm/memory-failure.c\n+++ b/mm/memory-failure.c\n"
                     "@@ -992,3 +992,3 @@\n {\n-\tint ret = MF_IGNORED;\n"
                     "+\tint ret = MF_RECOVERED;\n \n")
    farm_yaml = tmp_path / "farm.yaml"
    farm_yaml.write_text(textwrap.dedent(f"""\
        source: {{tarball: /usr/src/linux-source-6.12.tar.xz}}
        config: {{fragments: [{REPO / 'kernels/base.config'}]}}
        variants:
          stale: {{patches: [{patch}]}}
        scenarios: {REPO / 'guest-tests/scenarios.yaml'}
        """))
    proc = farm("run", "-c", str(farm_yaml), "--results", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert f"stale: patch 1/1 does not apply: {patch}: file mm/memory-failure.c, hunk #1" \
        in proc.stderr
    assert "make -j" not in proc.stderr
    # the summary says the exit code the farm gave, and why
    assert "\nexit code 2: bad input\n" in (tmp_path / "r" / "summary.md").read_text()


def test_ctrl_c_keeps_the_finished_cases_and_reports_them(tmp_path):
    results = tmp_path / "r"
    proc = subprocess.Popen([*FARM, "run", "-c", str(REPO / "farm.yaml"), "--results",
                             str(results), "-j", "1"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            # a test runner started in the background of a script has SIGINT
                            # ignored, and children inherit that: give the farm a real Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 1200
    while not list(results.glob("cases/*/*/*/case.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no case finished"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired as e:
        os.killpg(proc.pid, signal.SIGKILL)  # no guests left behind by a failed test
        proc.wait()
        pytest.fail(f"the farm did not stop within 120 s of Ctrl-C: {(e.stderr or b'')[-2000:]}")
    assert proc.returncode == 3, err[-3000:]
    doc = json.loads((results / "results.json").read_text())
    assert doc["run"]["interrupted"] == "Ctrl-C"
    _, default_tier = select(load_farm(REPO / "farm.yaml"), RunOptions())
    assert len(doc["cases"]) == 2 * len(default_tier)
    assert any(c["status"] == "pass" for c in doc["cases"])
    not_run = [c for c in doc["cases"] if c["message"].startswith("not run")]
    assert not_run and all(c["status"] == "error" for c in not_run)
    assert {c["status"] for c in doc["cases"]} <= {"pass", "error"}
    check_junit(results, doc)
    assert "INTERRUPTED" in (results / "summary.md").read_text()
