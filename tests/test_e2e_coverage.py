"""End to end: a real coverage run of the default kernel and its demonstration patch (gcov
in real guests, gcovr on the host), then --affected choosing from what it measured, and
measuring what it lacks. One coverage build per variant (cold ~4 min, warm ccache ~30 s)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from orchestrator.affected import coverage_key, saved_path
from orchestrator.farmfile import load_farm
from orchestrator.progress import Progress
from orchestrator.runner import Runner
from orchestrator.source import prepare_source

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.e2e
MF = "mm/memory-failure.c"
FOUR = ("anon-madvise", "pagecache-clean-madvise", "pagecache-clean-corrupt-pfn",
        "pagecache-dirty-madvise")


def farm(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The default farm.yaml profiling memory-failure.c alone, with no saved coverage of its
    base: whatever an earlier run of this test saved is removed first."""
    d = tmp_path_factory.mktemp("coverage")
    for p in ("kernels", "guest-tests"):
        os.symlink(REPO / p, d / p)
    (d / "farm.yaml").write_text((REPO / "farm.yaml").read_text() + f"coverage: [{MF}]\n")
    cfg = load_farm(d / "farm.yaml")
    runner = Runner()
    src = prepare_source(cfg.source, cfg.cache, runner, Progress(stream=open(os.devnull, "w")))
    saved_path(cfg.cache, coverage_key(cfg, "baseline", (MF,), src, runner)).unlink(
        missing_ok=True)
    return d


@pytest.fixture(scope="module")
def run(setup):
    d = setup
    proc = farm("run", "-c", str(d / "farm.yaml"), "--coverage", "--scenarios", ",".join(FOUR),
                "--confirm", "0", "-j", "2", "--results", str(d / "r1"))
    return proc, d / "r1", json.loads((d / "r1/results.json").read_text())


def test_each_case_knows_which_functions_its_guest_reached(run):
    proc, results, doc = run
    assert proc.returncode == 1, proc.stderr[-3000:]  # the patch regresses clean page cache
    funcs = {(c["variant"], c["scenario"]): set(c["coverage"]["files"][MF]["functions"])
             for c in doc["cases"]}
    assert len(funcs) == 8
    for v in ("baseline", "poison-clean-ptes"):
        # truncate_error_folio is the file branch of me_pagecache_clean: the page cache's
        assert "truncate_error_folio" in funcs[(v, "pagecache-clean-madvise")]
        assert "truncate_error_folio" in funcs[(v, "pagecache-clean-corrupt-pfn")]
        assert "truncate_error_folio" not in funcs[(v, "anon-madvise")]
        # a dirty anonymous page passes me_pagecache_dirty and me_pagecache_clean's anon branch
        assert {"me_pagecache_dirty", "me_pagecache_clean"} <= funcs[(v, "anon-madvise")]
    build = doc["variants"]["baseline"]["build"]
    assert build["coverage_files"] == [MF]
    assert "CONFIG_GCOV_KERNEL=y" in Path(build["config"]).read_text()


def test_the_union_is_cobertura_xml_and_an_annotated_file(run):
    _, results, doc = run
    cov = doc["coverage"]["variants"]["baseline"]
    t = cov["files"][MF]
    assert t["lines_total"] > 700 and 0 < t["lines_reached"] < t["lines_total"]
    xml = etree.parse(str(results / cov["cobertura"])).getroot()
    assert xml.tag == "coverage" and int(xml.get("lines-valid")) == t["lines_total"]
    assert int(xml.get("lines-covered")) == t["lines_reached"]
    assert xml.find(".//class").get("filename") == MF
    page = (results / cov["html"][MF]).read_text()
    assert 'id="L1"' in page and 'href="#set-0"' in page
    assert "<li>pagecache-clean-madvise</li>" in page


def test_ab_coverage_shows_the_patchs_lines_and_whether_anything_reached_them(run):
    proc, results, doc = run
    ab = doc["coverage"]["ab"]["poison-clean-ptes"][MF]
    reached = {x["text"]: x["scenarios"] for x in ab["changed_reached"]}
    line = next(t for t in reached if "folio_mkclean" in t)
    assert {"pagecache-clean-madvise", "pagecache-clean-corrupt-pfn"} <= set(reached[line])
    assert "anon-madvise" not in reached[line]
    assert "changed but not reached by any scenario" in proc.stdout
    assert "changed but not reached" in (results / "report.html").read_text()


def test_affected_selects_the_scenarios_that_reach_the_changed_lines(run, setup):
    plan = farm("plan", "-c", str(setup / "farm.yaml"), "--affected", "--scenarios",
                ",".join(FOUR))
    assert plan.returncode == 0, plan.stderr
    assert "--affected: 2 of 4 scenarios reach what the patches change" in plan.stderr
    assert "comments only, selects nothing" in plan.stderr
    table = plan.stdout.split("\n\n", 1)[1].splitlines()  # after the matrix and its kernels
    chosen = [ln.split()[0] for ln in table[1:] if ln.strip()]
    assert chosen == ["pagecache-clean-madvise", "pagecache-clean-corrupt-pfn"]


def test_affected_measures_the_base_first_where_nothing_is_saved(run, setup):
    proc = farm("run", "-c", str(setup / "farm.yaml"), "--affected", "--scenarios",
                "anon-madvise,pagecache-clean-madvise,file-hole-madvise", "--confirm", "0",
                "-j", "2", "--results", str(setup / "r3"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "no saved coverage of baseline for 1 scenario(s): measuring it first" in proc.stderr
    doc = json.loads((setup / "r3/results.json").read_text())
    assert {c["scenario"] for c in doc["cases"]} == {"pagecache-clean-madvise",
                                                     "file-hole-madvise"}
    assert "2 of 3 scenarios" in doc["run"]["affected"]
    assert "--affected: 2 of 3 scenarios" in proc.stdout  # the summary's headline
