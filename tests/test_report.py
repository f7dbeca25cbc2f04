"""Reports rebuilt from a recorded real result directory (the default A/B run)."""

import json
import shutil
from dataclasses import replace

import pytest
from tests_support import check_junit, validate

from orchestrator.cli import main
from orchestrator.html_report import report_html
from orchestrator.junit import junit
from orchestrator.results import read_results

REPO_FARM = __import__("pathlib").Path(__file__).parent.parent / "farm.yaml"


@pytest.fixture
def run_dir(data, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(data / "run-ab", dest)
    (dest / "results.json").unlink()
    return dest


def load(d):
    return json.loads((d / "results.json").read_text())


def test_report_rebuilds_results_and_reports_from_case_files(data, run_dir, capsys):
    assert main(["report", str(run_dir)]) == 1  # the recorded run found a regression
    doc, recorded = load(run_dir), json.loads((data / "run-ab" / "results.json").read_text())
    assert [(c["id"], c["status"]) for c in doc["cases"]] == \
        [(c["id"], c["status"]) for c in recorded["cases"]]
    assert doc["comparison"] == recorded["comparison"]
    check_junit(run_dir, doc)
    out = capsys.readouterr().out
    assert "| pagecache-clean-madvise | pass (clean LRU page: Recovered) | fail" in out
    for name in ("summary.md", "report.html", "junit.xml", "compare.xml"):
        assert (run_dir / name).stat().st_size > 0


def test_a_case_lost_in_a_crash_is_an_error_and_the_rest_survive(run_dir):
    shutil.rmtree(run_dir / "cases" / "baseline" / "anon-madvise")
    assert main(["report", str(run_dir)]) == 1
    doc = load(run_dir)
    lost = [c for c in doc["cases"] if c["id"] == "baseline::anon-madvise::r1"]
    assert lost[0]["status"] == "error" and lost[0]["message"].startswith("not run")
    assert sum(c["status"] == "pass" for c in doc["cases"]) == 17
    verdict = {c["scenario"]: c["verdict"] for c in doc["comparison"]}
    assert verdict["anon-madvise"] == "error"
    check_junit(run_dir, doc)


def test_junit_failure_says_expected_vs_observed_with_console_excerpt(run_dir):
    main(["report", str(run_dir)])
    xml = (run_dir / "junit.xml").read_text()
    assert "access_signal: expected None, observed 'BUS_MCEERR_AR'   &lt;-- differs" in xml
    assert "recovery action for clean LRU page: Recovered" in xml
    assert '<property name="patch_digest"' in xml
    compare = (run_dir / "compare.xml").read_text()
    assert compare.count("<failure") == 2


def with_failed_case(doc, **changes):
    """The document with its first failed case changed."""
    i = next(i for i, c in enumerate(doc.cases) if c.status == "fail")
    cases = list(doc.cases)
    cases[i] = replace(cases[i], **changes)
    return replace(doc, cases=tuple(cases)), cases[i]


def test_guest_text_with_markup_stays_text(run_dir):
    main(["report", str(run_dir)])
    doc = read_results(run_dir)
    failed = next(c for c in doc.cases if c.status == "fail")
    doc, _ = with_failed_case(doc, message="<script>alert('console')</script>", observed={
        **failed.observed, "recovery": ["<b>clean</b> LRU page: Recovered"]})
    page = report_html(doc)
    assert "<script>alert" not in page and "<b>clean</b>" not in page
    assert "&lt;script&gt;alert(&#x27;console&#x27;)&lt;/script&gt;" in page


def test_control_characters_from_a_console_keep_junit_valid(run_dir, tmp_path):
    main(["report", str(run_dir)])
    doc = read_results(run_dir)
    failed = next(c for c in doc.cases if c.status == "fail")
    doc, c = with_failed_case(doc, message=failed.message + "\x08")
    console = run_dir / c.logs["console"]
    console.write_text(console.read_text() + "\x1b[0m Memory failure: \x00\x07 torn\n")
    out = tmp_path / "junit.xml"
    out.write_text(junit(doc, run_dir))
    validate(out)


def test_progress_from_a_recorded_case_runner_log(data, tmp_path):
    import io

    from orchestrator.progress import Progress
    from orchestrator.scheduler import CaseProgress

    shown = io.StringIO()
    cp = CaseProgress(20, Progress(stream=shown), open(tmp_path / "pytest.log", "w"))
    for line in (data / "recorded" / "pytest-progress.log").read_text().splitlines():
        cp.line(line)
    assert cp.counts == {"pass": 18, "fail": 2, "error": 0, "skip": 0}
    assert not cp.running
    text = shown.getvalue()
    assert "PASS  baseline / anon-madvise r1" in text
    assert "FAIL  poison-clean-ptes / pagecache-clean-madvise r1" in text
    assert "access_signal: expected None, observed 'BUS_MCEERR_AR'" in text


def test_compare_saved_result_directories(data, tmp_path, capsys):
    monday, tuesday = tmp_path / "monday", tmp_path / "tuesday"
    shutil.copytree(data / "run-ab", monday)
    shutil.copytree(data / "run-ab", tuesday)
    out = tmp_path / "cmp"
    assert main(["compare", str(monday), str(tuesday), "--base", "tuesday:baseline",
                 "--out", str(out)]) == 1
    doc = load(out)
    assert list(doc["variants"]) == ["monday:baseline", "monday:poison-clean-ptes",
                                     "tuesday:baseline", "tuesday:poison-clean-ptes"]
    verdicts = {(c["variant"], c["scenario"]): c["verdict"] for c in doc["comparison"]}
    assert verdicts[("monday:baseline", "pagecache-clean-madvise")] == "same"
    assert verdicts[("monday:poison-clean-ptes", "pagecache-clean-madvise")] == "regression"
    assert {v for (var, _), v in verdicts.items() if var == "monday:baseline"} == {"same"}
    check_junit(out, doc)
    c = doc["cases"][0]
    assert (out / c["logs"]["console"]).is_file()  # logs point back into the saved runs
    assert main(["compare", str(monday), "--base", "nope", "--out", str(out)]) == 2
    assert main(["compare", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "not a farm result directory" in capsys.readouterr().err


def test_compare_never_pools_two_inputs(data, tmp_path, capsys):
    a, b = tmp_path / "ci" / "run", tmp_path / "local" / "run"  # the same base name
    shutil.copytree(data / "run-ab", a)
    shutil.copytree(data / "run-ab", b)
    assert main(["compare", str(a), str(a), "--out", str(tmp_path / "x")]) == 2
    assert "is given twice" in capsys.readouterr().err
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--base", "ci/run:baseline", "--out",
                 str(out)]) == 1
    doc = load(out)
    assert list(doc["variants"]) == ["ci/run:baseline", "ci/run:poison-clean-ptes",
                                     "local/run:baseline", "local/run:poison-clean-ptes"]
    assert {c["repeat"] for c in doc["cases"]} == {1}  # never repeats of a mixture
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 2  # never overwritten
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("damage,words", [
    ("{not json", "damaged case record"),
    ("[1, 2]", "not a case record (a JSON object was expected)"),
    ('{"id": "x"}', "not a case record (no 'variant')"),
    ('{"id": "x", "variant": "v", "scenario": "s", "repeat": "1", "status": "pass", '
     '"message": ""}', "'repeat' has the wrong type (str)"),
    ('{"id": "x", "variant": "v", "scenario": "s", "repeat": 1, "status": "great", '
     '"message": ""}', "status 'great' is not one of"),
])
def test_report_on_a_damaged_case_record_names_it_and_exits_2(run_dir, capsys, damage, words):
    bad = run_dir / "cases" / "baseline" / "anon-madvise" / "r1" / "case.json"
    bad.write_text(damage)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"farm: error: {bad}") and words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("damage,words", [
    ('{"cases": {}}', "plan.json: not a farm plan (no list of cases)"),
    ('{"cases": [[1]]}', "plan.json (case 0): not a planned case (a JSON object was expected)"),
    ('{"cases": [{"id": "x"}]}', "plan.json (case 0): not a planned case (KeyError: 'variant')"),
    ('{"cases": [{"id": "x", "variant": "v", "repeat": 1, "dir": "d", "scenario": '
     '{"name": "s", "page": "anon"}}]}', "plan.json (case 0): not a scenario ("),
])
def test_report_on_a_damaged_plan_names_it_and_exits_2(run_dir, capsys, damage, words):
    (run_dir / "plan.json").write_text(damage)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"farm: error: {run_dir}") and words in err and "Traceback" not in err


def test_a_reader_that_goes_away_never_changes_the_exit_code(run_dir):
    import subprocess
    import sys

    from conftest import REPO
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "report", run_dir],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `farm report DIR | head -0`
    assert proc.wait(timeout=60) == 1  # the recorded run's regression, not 0
    assert b"Traceback" not in proc.stderr.read()
    assert (run_dir / "results.json").is_file() and (run_dir / "report.html").is_file()


def test_a_result_directory_in_use_or_of_the_wrong_kind_is_refused_in_one_line(
        run_dir, tmp_path, capsys):
    from orchestrator.files import ResultLock
    lock = ResultLock(run_dir, "farm run")
    try:
        assert main(["report", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"{run_dir} is in use by farm run (pid " in err and len(err.splitlines()) == 1
    finally:
        lock.release()
    assert main(["report", str(run_dir)]) == 1  # free again
    afile = tmp_path / "afile"
    afile.write_text("")
    capsys.readouterr()
    assert main(["run", "-c", str(REPO_FARM), "--results", str(afile)]) == 2
    assert capsys.readouterr().err == f"farm: error: --results {afile}: exists and is not a " \
                                      "directory\n"
    assert main(["run", "-c", str(REPO_FARM), "--results", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_run_ids_are_unique_within_one_second(tmp_path):
    """Ids come from fresh_results, which makes each run's directory exclusively and draws
    again when one is taken: 2000 ids of one millisecond are 2000 directories. (Drawn alone,
    4 random bytes give two equal ids among 2000 about once in 2000 tries: a fresh-clone
    ./run-tests met one.)"""
    from datetime import UTC, datetime

    from orchestrator.files import fresh_results
    now = datetime.now(UTC)
    ids = {fresh_results(tmp_path, now)[0] for _ in range(2000)}
    assert len(ids) == 2000 and len(list(tmp_path.iterdir())) == 2000
    assert all(i.startswith(now.strftime("%Y%m%d-%H%M%S-")) for i in ids)


HOSTILE = "\x1b[2J\x1b]0;pwned\x07<script>alert(1)</script>\u202eevil"


def test_text_from_a_guest_is_inert_on_the_terminal_in_markdown_and_in_links(run_dir, capsys):
    """A tampered case file (what a guest or a hostile tree could make of one): escape
    sequences and a bidirectional override in its message, 5,000 recovery lines, and a
    javascript: link as its console log. The terminal, summary.md and report.html show it
    all as text, and the summary's cell stays a cell."""
    case = run_dir / "cases/poison-clean-ptes/pagecache-clean-madvise/r1/case.json"
    doc = json.loads(case.read_text())
    doc["message"] = HOSTILE
    doc["observed"]["recovery"] = [f"page {n}: Recovered {HOSTILE}" for n in range(5000)]
    doc["logs"]["console"] = "javascript:alert(document.cookie)"
    case.write_text(json.dumps(doc))
    assert main(["report", str(run_dir)]) == 1
    out = capsys.readouterr().out
    md = (run_dir / "summary.md").read_text()
    for text in (out, md):
        assert not any(ch in text for ch in "\x1b\x07\u202e"), "a control character is live"
        assert "\\x1b[2J\\x1b]0;pwned\\x07&lt;script>alert(1)&lt;/script>\\u202eevil" in text
        assert "<script>" not in text
        row = next(ln for ln in text.splitlines() if ln.startswith("| pagecache-clean-madvise"))
        assert "and 4996 more" in row and len(row) < 2000
    page = (run_dir / "report.html").read_text()
    assert "javascript:" not in page  # no link to it, and the message shows no such text
    assert "\x1b" not in page and "&lt;script&gt;" in page


def test_links_are_relative_paths_into_the_result_directory():
    from orchestrator.inert import relative_link
    assert relative_link("cases/a/anon/r1/console.log") == "cases/a/anon/r1/console.log"
    for bad in ("javascript:alert(1)", "JavaScript:x", "data:text/html,x", "http://x/y",
                "/etc/passwd", "../../etc/passwd", "cases/../../x", "a\\b", "a\x00b", "", None):
        assert relative_link(bad) == "", bad
    assert relative_link("/runs/mon/cases/x.log", ("/runs/mon",)) == "/runs/mon/cases/x.log"
    assert relative_link("/runs/other/x.log", ("/runs/mon",)) == ""
