"""End to end: selftests built the way the tree builds them. A variant's patches
(kernels/patches/selftest-demo/) add two programs to the 6.12 tree's mm/ selftests: one that
links the directory's vm_util.c (pagemap_get_pfn) and checks that it runs from a directory on
a disk file system, and one that does not build. Each is built by mm/'s own Makefile against
the tree's exported headers; the first passes in the guest, the second is an error naming its
compiler error (never a skip), and `kselftest: auto` reports it as a failed test of its own;
the memory-failure selftests the tree ships run as well."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.e2e
SCENARIOS = """\
scenarios:
  - name: kselftest-pagemap
    kselftest: mm/hwpoison-pagemap
    why: 'the farm''s own selftest, which links vm_util.c'
  - name: kselftest-broken
    kselftest: mm/hwpoison-broken
    why: 'a selftest that does not build'
  - name: kselftest-hugetlb-soft-offline
    kselftest: mm/hugetlb-soft-offline
    sysctl: {vm.nr_hugepages: 8}
    why: 'the tree''s own'
  - name: kselftest-auto
    kselftest: auto
    sysctl: {vm.nr_hugepages: 12}
    why: 'every memory-failure selftest of the tree'
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("kself")
    (d / "scenarios.yaml").write_text(SCENARIOS)
    patches = sorted((REPO / "kernels/patches/selftest-demo").glob("*.patch"))
    (d / "farm.yaml").write_text(textwrap.dedent(f"""\
        source: {{tarball: /usr/src/linux-source-6.12.tar.xz}}
        config: {{base: tinyconfig, fragments: [{REPO}/kernels/base.config]}}
        scenarios: scenarios.yaml
        guest_tests: {REPO}/guest-tests
        variants:
          baseline: {{}}
          selftests: {{patches: [{', '.join(map(str, patches))}]}}
        base: baseline
        """))
    results = d / "results"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-c",
                           str(d / "farm.yaml"), "--confirm", "0", "-j", "2", "--results",
                           str(results)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    doc = json.loads((results / "results.json").read_text())
    return proc, {(c["variant"], c["scenario"]): c for c in doc["cases"]}


def test_a_selftest_that_links_its_directorys_helpers_builds_and_runs_from_the_disk(run):
    proc, cases = run
    # 1: kselftest-auto fails (hugetlb-read-hwpoison, below), which outranks the error of
    # the program that does not build
    assert proc.returncode == 1, proc.stderr[-3000:]
    mine = cases[("selftests", "kselftest-pagemap")]
    assert mine["status"] == "pass", mine["message"]
    subtests = {k[1]: c for k, c in cases.items() if k[0] == "selftests"
                and k[1].startswith("kselftest-pagemap/")}
    assert [c["status"] for c in subtests.values()] == ["pass"] * 3
    assert "runs from a directory on a disk file system" in subtests["kselftest-pagemap/1"][
        "message"]
    assert cases[("baseline", "kselftest-pagemap")]["status"] == "skip"
    assert "not in this kernel tree" in cases[("baseline", "kselftest-pagemap")]["message"]


def test_a_selftest_that_does_not_build_is_an_error_with_its_first_error_lines(run):
    _, cases = run
    broken = cases[("selftests", "kselftest-broken")]
    assert broken["status"] == "error"
    assert "did not build" in broken["message"]
    assert "undeclared_on_purpose" in broken["message"]
    auto = {k[1]: c for k, c in cases.items() if k[0] == "selftests"
            and k[1].startswith("kselftest-auto/")}
    names = {c["observed"]["ktap_name"]: c["status"] for c in auto.values()}
    assert names["mm-hwpoison-broken"] == "fail"
    assert names["mm-hwpoison-pagemap"] == "pass" and names["mm-hugetlb-soft-offline"] == "pass"


def test_the_memory_failure_selftests_the_tree_ships_run_as_before(run):
    _, cases = run
    for v in ("baseline", "selftests"):
        assert cases[(v, "kselftest-hugetlb-soft-offline")]["status"] == "pass", v
        auto = {c["observed"]["ktap_name"]: c for k, c in cases.items() if k[0] == v
                and k[1].startswith("kselftest-auto/")}
        # its own MADV_HWPOISON kills it with SIGBUS on 6.12 (docs/scenarios.md)
        assert "killed by SIGBUS" in auto["mm-hugetlb-read-hwpoison"]["message"]
