"""`farm bisect`: the search on a series of real patches built by the real build stage on the
fake kernel tree (one prefix does not compile), the reports it writes, and end to end on the
real kernel with the shipped two-patch demonstration series."""

import difflib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import REPO
from tests_support import processes_of, validate

from orchestrator.bisect import GOOD, Patch, Window, junit, outcome_of, search, summary
from orchestrator.build import BuildRequest, build
from orchestrator.caserecords import CaseRecord
from orchestrator.farmfile import Source, Variant
from orchestrator.progress import Progress
from orchestrator.runner import Runner
from orchestrator.source import prepare_source

# What each patch of the fake series adds to mm/memory-failure.c. Scenario "a" regresses
# from patch 6 on (its marker is compiled in), scenario "b" from patch 2 on; patch 5 breaks
# the build and patch 6 mends it, so prefix 5 can only be skipped.
SERIES = [
    "int patch_1 = 1;",
    'const char marker_b[] = "regresses-b";',
    "int patch_3 = 3;",
    "int patch_4 = 4;",
    "#error patch 5 does not compile",
    '/* patch 6 mends it */\nconst char marker_a[] = "regresses-a";',
    "int patch_7 = 7;",
    "int patch_8 = 8;",
]


def write_series(tree, out):
    """The series as `git format-patch` would write it: each patch against the tree with the
    ones before it applied, so only the whole prefix applies."""
    text = (tree / "mm/memory-failure.c").read_text()
    paths = []
    for i, line in enumerate(SERIES, 1):
        new = text + f"\n{line}\n"
        if "mends it" in line:
            new = new.replace("\n#error patch 5 does not compile\n", "\n")
        diff = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                            "a/mm/memory-failure.c", "b/mm/memory-failure.c"))
        p = out / f"{i:04d}-patch-{i}.patch"
        p.write_text(f"From: farm\nSubject: [PATCH {i}/{len(SERIES)}] mm: step {i} of the\n"
                     f" fake series\n\n---\n{diff}")
        paths.append(p)
        text = new
    return paths


@pytest.fixture
def fake_series(tmp_path, fake_kernel):
    patches = write_series(fake_kernel, tmp_path)
    runner, cache = Runner(), tmp_path / "cache"
    progress = Progress(stream=open(tmp_path / "progress.txt", "w"))
    src = prepare_source(Source("dir", fake_kernel), cache, runner, progress)
    frag = tmp_path / "farm.config"
    frag.write_text("CONFIG_MEMORY_FAILURE=y\n")
    built: list[int] = []

    def oracle(k, names):
        """A prefix's outcome, read off the kernel the real build stage made of it."""
        built.append(k)
        b = build(BuildRequest(Variant(f"series.{k}", tuple(patches[:k])), src, "tinyconfig",
                               (frag,), cache, 2), runner, progress)
        if b.status == "failed":
            return {n: ("error", f"the kernel did not build: {b.error}") for n in names}
        image = open(b.kernel, "rb").read()
        return {n: ("bad" if f"regresses-{n}".encode() in image else GOOD, "") for n in names}

    return patches, oracle, built


def test_each_scenario_gets_its_own_first_bad_patch_and_a_broken_prefix_is_skipped(
        fake_series):
    patches, oracle, built = fake_series
    windows = search(len(patches), ["a", "b"], oracle)
    # b: patch 2, found in log2(8) = 3 prefixes
    assert (windows["b"].good, windows["b"].bad) == (1, 2)
    # a: prefix 5 does not build, so the answer is the range 5..6, as `git bisect skip` says
    assert (windows["a"].good, windows["a"].bad) == (4, 6)
    assert list(windows["a"].skipped) == [5]
    assert "did not build" in windows["a"].skipped[5]
    # both were tested together at prefix 4, then split: 4, then 2 and 1 for b, 6 and 5 for a
    assert built == [4, 2, 1, 6, 5]


def test_a_skipped_prefix_is_stepped_around_when_the_window_allows():
    calls = []

    def oracle(k, names):
        calls.append(k)
        if k == 4:
            return {n: ("flaky", "repeats disagree: pass, fail") for n in names}
        return {n: ("bad" if k >= 3 else GOOD, "") for n in names}

    (w,) = search(8, ["x"], oracle).values()
    assert (w.good, w.bad, w.skipped) == (2, 3, {4: "repeats disagree: pass, fail"})
    assert calls[:2] == [4, 3]  # the neighbour nearest the middle is tried next


def test_window_next_prefers_the_middle():
    assert Window(0, 16).next() == 8
    assert Window(8, 9).next() is None
    assert Window(4, 6, {5: "x"}).next() is None
    assert Window(0, 8, {4: "x"}).next() == 3


def test_outcomes_follow_the_verdict_rules():
    def case(status, message=""):
        return CaseRecord("v::s::r1", "v", "s", 1, status, message)
    assert outcome_of([case("pass"), case("pass")]) == ("good", "2 pass")
    assert outcome_of([case("fail"), case("skip")]) == ("bad", "fail, skip")
    assert outcome_of([case("pass"), case("fail")])[0] == "flaky"
    assert outcome_of([case("pass"), case("error", "timeout")]) == ("error", "timeout")
    assert outcome_of([])[0] == "error"


def test_patch_subject_and_files_are_read_from_the_patch():
    p = Patch.read(2, REPO / "kernels/patches/poison-clean-ptes/"
                   "0001-mm-memory-failure-keep-poison-entries-for-clean-page-cache.patch")
    assert p.subject == ("mm/memory-failure: keep poison entries in mappings of clean "
                         "page-cache folios")
    assert p.files == ("mm/memory-failure.c",)


def test_reports_name_the_patch_and_the_junit_is_valid(tmp_path):
    doc = {"variant": "series", "base": "baseline", "repeat": 2, "seconds": 61.0,
           "interrupted": None, "builds": [0, 1, 2],
           "patches": [{"index": 1, "subject": "one"}, {"index": 2, "subject": "two"}],
           "results": [
               {"scenario": "pagecache-clean-madvise", "status": "found", "first_bad": 2,
                "subject": "two", "files": ["mm/memory-failure.c"],
                "changed": ["data: 'intact' -> 'unreadable'"]},
               {"scenario": "x", "status": "range", "first_bad": None,
                "skipped": {"1": "the kernel did not build"},
                "candidates": [{"index": 1, "subject": "one"}, {"index": 2, "subject": "two"}]}]}
    text = summary(doc)
    assert ("| pagecache-clean-madvise | 2/2 | two | mm/memory-failure.c | data: 'intact' -> "
            "'unreadable' |") in text
    assert "| x | one of 1, 2 | (prefixes skipped: 1: the kernel did not build) |" in text
    cut = {**doc, "results": [], "interrupted": "SIGTERM", "builds": []}
    assert "No answer: the first round (the base and the whole series) did not end." in \
        summary(cut)
    assert "nothing to bisect" in summary({**cut, "interrupted": None})
    (tmp_path / "bisect.xml").write_text(junit(doc))
    validate(tmp_path / "bisect.xml")
    assert 'name="first_bad.pagecache-clean-madvise" value="2: two"' in junit(doc)


@pytest.mark.e2e
def test_git_bisect_step_turns_the_farms_exit_into_what_git_bisect_reads(tmp_path):
    """scripts/git-bisect-step on real runs: a passing case is good (0), a failing one bad
    (1), a kernel that does not build is skipped (125), bad input stops the bisection (255)."""
    from test_faults import BROKEN_PATCH, config

    def step(*args):
        return subprocess.run([str(REPO / "scripts/git-bisect-step"), *map(str, args)],
                              cwd=REPO, capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "PYTHONPATH": str(REPO)}).returncode

    assert step("-c", tmp_path / "missing.yaml") == 255
    assert step("-c", REPO / "farm.yaml", "--variants", "baseline", "--scenarios",
                "anon-madvise", "--results", tmp_path / "good") == 0
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copytree(REPO / "guest-tests/programs", wrong / "programs")  # beside its scenarios
    scen = (REPO / "guest-tests/scenarios.yaml").read_text()
    i = scen.index("- name: anon-madvise-write")
    (wrong / "scenarios.yaml").write_text(
        scen[:i].replace("    data: unreadable\n", "    data: intact\n", 1) + scen[i:])
    cfg = config(wrong, "baseline: {}", extra=f"scenarios: {wrong / 'scenarios.yaml'}")
    cfg.write_text(cfg.read_text().replace(f"scenarios: {REPO / 'guest-tests/scenarios.yaml'}\n",
                                           ""))
    assert step("-c", cfg, "--scenarios", "anon-madvise", "--results", wrong / "r") == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0001-broken.patch").write_text(BROKEN_PATCH)
    cfg = config(broken, f"broken: {{patches: [{broken / '0001-broken.patch'}]}}", base="broken")
    assert step("-c", cfg, "--scenarios", "anon-madvise", "--results", broken / "r") == 125


@pytest.mark.e2e
def test_sigterm_mid_bisect_writes_what_was_found_and_leaves_no_guest(tmp_path):
    """A CI cancel in the middle of a bisection: exit 3, bisect.json says so, and nothing
    the bisection started lives on."""
    from test_faults import finish, none_left, start, wait_for_cases
    out = tmp_path / "bisect"
    proc = start(tmp_path, "bisect", "-c", str(REPO / "farm.yaml"), "--scenarios",
                 "pagecache-clean-madvise,anon-madvise", "--results", str(out))
    deadline = time.monotonic() + 1200
    while not (out / "steps").is_dir() or not list((out / "steps").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    (first,) = (out / "steps").iterdir()
    wait_for_cases(first, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    assert finish(proc, 120) == 3
    doc = json.loads((out / "bisect.json").read_text())
    assert doc["interrupted"] == "SIGTERM"
    assert "Interrupted (SIGTERM)" in (out / "bisect.md").read_text()
    assert not none_left(out), processes_of(out)
