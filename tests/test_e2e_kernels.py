"""End to end: both of Debian 12's kernels in one run (kernels/two-kernels.yaml), 6.12 and 6.1,
each with its own demonstration patch, each variant compared with the base of its own kernel,
each case held to its own kernel's expectations; and the table of what memory failure does
differently on the two. Builds 6.1 as well as 6.12 (~5 min cold)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml
from tests_support import check_junit

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.e2e
SCENARIOS = ("pagecache-clean-madvise,anon-madvise,kernel-hard-offline,vdso-madvise,"
             "program-madvise-sigbus")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    results = tmp_path_factory.mktemp("two") / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "-c",
         str(REPO / "kernels/two-kernels.yaml"), "--scenarios", SCENARIOS, "--tier", "full",
         "--confirm", "0",
         "-j", "2", "--results", str(results)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc, results, json.loads((results / "results.json").read_text())


def test_each_kernel_is_read_from_its_tree_and_its_base_passes(two):
    proc, results, doc = two
    assert proc.returncode == 1, proc.stderr[-3000:]
    kernels = {v: info["kernel"] for v, info in doc["variants"].items()}
    assert kernels["baseline"].startswith("6.12.") and kernels["baseline-6.1"].startswith("6.1.")
    assert kernels["poison-clean-ptes-6.1"] == kernels["baseline-6.1"]
    for base in ("baseline", "baseline-6.1"):
        got = {c["scenario"]: c["status"] for c in doc["cases"] if c["variant"] == base
               and "/" not in c["scenario"]}
        assert got == dict.fromkeys(SCENARIOS.split(","), "pass"), (base, got)
        # the program from outside the tree, built once for both kernels, its KTAP read
        assert [c["status"] for c in doc["cases"] if c["variant"] == base
                and c["scenario"].startswith("program-madvise-sigbus/")] == ["pass", "pass"]
    by = {(c["variant"], c["scenario"]): c for c in doc["cases"]}
    old = by[("baseline-6.1", "anon-madvise")]
    assert old["expected"]["inject_signal"] is None and old["why"].startswith("6.1: ")
    assert old["observed"]["inject_signal"] is None  # the real 6.1: no signal at injection
    assert by[("baseline", "anon-madvise")]["observed"]["inject_signal"] == "BUS_MCEERR_AR"
    assert by[("baseline-6.1", "vdso-madvise")]["observed"]["guest"] == "panicked"
    assert "truncate_error_page" in by[("baseline-6.1", "pagecache-clean-madvise")]["why"]
    assert "truncate_error_folio" in by[("baseline", "pagecache-clean-madvise")]["why"]


def test_the_demonstration_patch_regresses_on_each_kernel_against_its_own_base(two):
    _, _, doc = two
    verdicts = {(c["base"], c["variant"], c["scenario"]): c["verdict"] for c in doc["comparison"]}
    assert {k for k, v in verdicts.items() if v == "regression"} == {
        ("baseline", "poison-clean-ptes", "pagecache-clean-madvise"),
        ("baseline-6.1", "poison-clean-ptes-6.1", "pagecache-clean-madvise")}
    assert {(b, v) for b, v, _ in verdicts} == {("baseline", "poison-clean-ptes"),
                                                 ("baseline-6.1", "poison-clean-ptes-6.1")}


def test_the_reports_say_which_kernel_each_result_is_from(two):
    _, results, doc = two
    summary = (results / "summary.md").read_text()
    k612, k61 = doc["variants"]["baseline"]["kernel"], doc["variants"]["baseline-6.1"]["kernel"]
    assert f"| baseline-6.1 ({k61}) |" in summary and f"| baseline ({k612}) |" in summary
    assert "| baseline-6.1 → poison-clean-ptes-6.1 |" in summary
    table = summary.split(f"## What memory failure does differently: {k61} → {k612}")[1]
    assert "| anon-madvise | inject_signal | None | 'BUS_MCEERR_AR' |" in table
    assert "| kernel-hard-offline | recovery | ['unknown page: Ignored'] | " \
           "['get hwpoison page: Ignored'] |" in table
    assert "| vdso-madvise | guest | 'panicked' | 'survived' |" in table
    assert "pagecache-clean-madvise" not in table  # alike on both kernels
    check_junit(results, doc)
    props = {s.name: {p.name: p.value for p in s.properties()}
             for s in JUnitXml.fromfile(str(results / "junit.xml"))}
    assert props["baseline-6.1"]["kernel_version"].startswith("6.1.")
    assert props["baseline-6.1"]["kernel_source"] != props["baseline"]["kernel_source"]
    compare = {s.name: s for s in JUnitXml.fromfile(str(results / "compare.xml"))}
    assert set(compare) == {"baseline..poison-clean-ptes", "baseline-6.1..poison-clean-ptes-6.1"}
    kcidb = json.loads((results / "kcidb.json").read_text())
    assert {c["misc"]["variant"]: c["misc"]["kernel_version"] for c in kcidb["checkouts"]} == {
        v: info["kernel"] for v, info in doc["variants"].items()}
    html = (results / "report.html").read_text()
    assert f"What memory failure does differently: {k61} → {k612}" in html
