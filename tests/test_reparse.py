"""`farm reparse DIR` on the recorded result directory of a real A/B run
(tests/data/run-ab/): a corrected expectation and a case judged by an older parser take effect
from the logs, the reports follow, and it says which cases changed status and why. Nothing
here boots a guest."""

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from orchestrator.cli import main

REPO = Path(__file__).parent.parent
RUN_AB = Path(__file__).parent / "data" / "run-ab"
SCENARIO = """\
scenarios:
- name: anon-madvise
  page: anon
  injector: madvise
  access: read
  why: 'MADV_HWPOISON on a mapped dirty anonymous page: unmapped, the caller killed at once.'
  expect:
    recovery: [{recovery}]
    inject_signal: BUS_MCEERR_AR
    access_signal: BUS_MCEERR_AR
    data: unreadable
    hardware_corrupted_kb: 4
"""


@pytest.fixture
def saved(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(RUN_AB, d)
    return d


def farm_with(tmp_path: Path, recovery: str) -> Path:
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text(SCENARIO.format(recovery=recovery))
    text = (REPO / "farm.yaml").read_text().replace("kernels/", f"{REPO}/kernels/")
    text = text.replace("scenarios: guest-tests/scenarios.yaml",
                        f"scenarios: {scenarios}\nguest_tests: {REPO}/guest-tests")
    (tmp_path / "farm.yaml").write_text(text)
    return tmp_path / "farm.yaml"


def case(d: Path, variant: str = "baseline") -> dict:
    return json.loads((d / f"cases/{variant}/anon-madvise/r1/case.json").read_text())


def test_a_corrected_expectation_takes_effect_on_a_saved_run(saved, tmp_path, capsys):
    wrong = farm_with(tmp_path, "'dirty LRU page: Ignored'")
    main(["reparse", str(saved), "-c", str(wrong)])
    out = capsys.readouterr().out
    assert "20 cases judged again" in out and "2 changed status" in out
    assert ("- baseline / anon-madvise r1: pass → fail: recovery: expected "
            "['dirty LRU page: Ignored'], observed ['dirty LRU page: Recovered'] "
            "(was: as expected)") in out
    assert "its scenario is not in" in out  # the other 18: kept as they were
    assert case(saved)["status"] == "fail"
    doc = json.loads((saved / "results.json").read_text())
    assert doc["totals"]["baseline"]["fail"] == 1  # the reports follow
    assert "anon-madvise" in (saved / "summary.md").read_text()

    right = farm_with(tmp_path, "'dirty LRU page: Recovered'")
    main(["reparse", str(saved), "-c", str(right)])
    out = capsys.readouterr().out
    assert "- baseline / anon-madvise r1: fail → pass: as expected" in out
    main(["reparse", str(saved), "-c", str(right)])
    assert "0 changed status, 0 changed what they observe" in capsys.readouterr().out


def test_what_an_older_parser_saw_is_observed_again_from_the_logs(saved, tmp_path, capsys):
    """A case.json whose observations a parser got wrong (the recovery line missed): its
    logs still have the line, so reparsing finds it and the case passes again."""
    path = saved / "cases/baseline/anon-madvise/r1/case.json"
    rec = json.loads(path.read_text())
    rec["observed"]["recovery"] = []
    rec.update(status="fail", message="recovery: expected ['dirty LRU page: Recovered'], "
                                      "observed []")
    path.write_text(json.dumps(rec))
    main(["reparse", str(saved), "-c", str(farm_with(tmp_path, "'dirty LRU page: Recovered'"))])
    out = capsys.readouterr().out
    assert "- baseline / anon-madvise r1: fail → pass: as expected (was: recovery:" in out
    new = case(saved)
    assert new["observed"]["recovery"] == ["dirty LRU page: Recovered"]
    assert new["logs"] == rec["logs"] and new["seconds"] == rec["seconds"]  # the rest kept


def test_reparse_of_what_is_not_a_result_directory_is_bad_input(tmp_path, capsys):
    assert main(["reparse", str(tmp_path), "-c", str(REPO / "farm.yaml")]) == 2
    assert "not a farm result directory" in capsys.readouterr().err


def test_a_case_whose_logs_are_gone_is_kept_and_said(saved, tmp_path, capsys):
    (saved / "cases/poison-clean-ptes/anon-madvise/r1/agent.log").unlink()
    main(["reparse", str(saved), "-c", str(farm_with(tmp_path, "'dirty LRU page: Recovered'"))])
    out = capsys.readouterr().out
    assert textwrap.dedent("""\
        - poison-clean-ptes / anon-madvise r1: no logs (it never ran): kept as it was""") in out
