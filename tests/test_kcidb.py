"""kcidb.json: a run as KCIDB's JSON, checked with kcidb-io's own validation, on the recorded
result directory of a real default A/B run (tests/data/run-ab/) and on one with a kselftest's
KTAP subtests and a case that never ran. Nothing here starts a guest."""

import hashlib
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from kcidb_io.schema import LATEST

from orchestrator.caserecords import CaseRecord
from orchestrator.cli import main
from orchestrator.kcidb import kcidb_doc, patchset_hash, validate
from orchestrator.results import Results, read_results

DATA = Path(__file__).parent / "data"
RUN_AB = DATA / "run-ab"


@pytest.fixture
def saved(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(RUN_AB, d)
    return d


def results_of(d: Path) -> Results:
    return read_results(d)


def test_a_recorded_ab_run_is_a_valid_kcidb_document(saved):
    doc = json.loads((saved / "results.json").read_text())
    k = kcidb_doc(results_of(saved), saved)
    LATEST.validate(k)  # kcidb-io's own check, schema v5
    assert k["version"] == {"major": LATEST.major, "minor": LATEST.minor}
    assert [c["id"] for c in k["checkouts"]] == [
        f"hwpoison_farm:{doc['run']['id']}:{v}" for v in doc["variants"]]
    base, patched = k["checkouts"]
    assert base["patchset_hash"] == "" and base["patchset_files"] == []
    assert patched["patchset_files"][0]["name"].endswith(".patch")
    assert {b["checkout_id"] for b in k["builds"]} == {c["id"] for c in k["checkouts"]}
    assert len(k["tests"]) == len(doc["cases"])
    by_id = {t["id"].split(":", 2)[2]: t for t in k["tests"]}
    for c in doc["cases"]:
        t = by_id[c["id"]]
        assert t["path"] == f"hwpoison.{c['scenario']}"
        assert t["status"] == c["status"].upper()
        assert t["build_id"] == f"hwpoison_farm:{doc['run']['id']}:{c['variant']}:build"
        assert t["misc"]["observed"] == c["observed"] and t["duration"] == c["seconds"]
        assert t["log_url"] == (saved / c["logs"]["console"]).absolute().as_uri()
    regression = next(t for t in k["tests"] if t["misc"].get("verdict") == "regression")
    assert regression["status"] == "FAIL"


def test_the_patchset_hash_is_kcidbs_own_recipe(tmp_path):
    """sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64, by the real tools."""
    for i, text in enumerate(["--- a/x\n+++ b/x\n", "--- a/y\n+++ b/y\n"]):
        (tmp_path / f"000{i}.patch").write_text(text)
    shell = subprocess.run("sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64",
                           shell=True, cwd=tmp_path, capture_output=True, text=True, check=True)
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.iterdir())]
    assert patchset_hash(shas) == shell.stdout.strip()
    assert patchset_hash([]) == ""


def test_ktap_subtests_nest_under_their_program_and_a_case_never_run_is_a_miss(saved):
    doc = results_of(saved)
    ran = doc.cases[0]
    kself = replace(ran, id=f"{ran.variant}::kselftest-hugetlb-soft-offline::r1",
                    scenario="kselftest-hugetlb-soft-offline", status="pass")
    sub = replace(kself, id=f"{ran.variant}::kselftest-hugetlb-soft-offline/1.2::r1",
                  scenario="kselftest-hugetlb-soft-offline/1.2", status="error")
    kself = replace(kself, subcases=(sub,))
    missing = CaseRecord(f"{ran.variant}::never::r1", ran.variant, "odd.name", 1, "error",
                         "not run: the run was interrupted")
    doc = replace(doc, cases=(*doc.cases, kself, missing))
    k = kcidb_doc(doc, saved, origin="my_lab", url="https://ci.example.org/farm/run-42")
    validate(k)
    paths = {t["path"]: t for t in k["tests"]}
    assert paths["hwpoison.kselftest-hugetlb-soft-offline"]["status"] == "PASS"
    assert paths["hwpoison.kselftest-hugetlb-soft-offline.1.2"]["status"] == "ERROR"
    assert paths["hwpoison.odd_name"]["status"] == "MISS"
    one = paths["hwpoison.kselftest-hugetlb-soft-offline"]
    assert one["id"].startswith("my_lab:") and one["log_url"].startswith(
        "https://ci.example.org/farm/run-42/cases/")


def test_a_document_kcidb_would_refuse_fails_validation(saved):
    k = kcidb_doc(results_of(saved), saved)
    k["tests"][0]["status"] = "PASSED"
    with pytest.raises(jsonschema.ValidationError):
        validate(k)


def test_farm_kcidb_writes_a_saved_runs_document_and_refuses_a_bad_origin(saved, capsys):
    (saved / "kcidb.json").unlink(missing_ok=True)
    assert main(["kcidb", str(saved), "--origin", "my_lab"]) == 0
    k = json.loads((saved / "kcidb.json").read_text())
    validate(k)
    assert {c["origin"] for c in k["checkouts"]} == {"my_lab"}
    assert main(["kcidb", str(saved), "--origin", "My Lab"]) == 2
    assert "KCIDB's origin is lower-case letters" in capsys.readouterr().err
    assert main(["kcidb", str(saved), "--url", "ftp://x"]) == 2


def test_farm_report_writes_kcidb_json_beside_the_other_reports(saved):
    assert main(["report", str(saved)]) in (0, 1)
    validate(json.loads((saved / "kcidb.json").read_text()))


def test_farm_yamls_kcidb_settings_are_checked_by_file_and_line(tmp_path):
    from orchestrator.errors import ConfigErrors
    from orchestrator.farmfile import load_farm
    repo = Path(__file__).parent.parent
    text = (repo / "farm.yaml").read_text().replace(
        "scenarios: guest-tests/scenarios.yaml",
        f"scenarios: {repo}/guest-tests/scenarios.yaml\nguest_tests: {repo}/guest-tests\n"
        "kcidb:\n  origin: My-Lab\n  url: https://ci.example.org/farm")
    (tmp_path / "farm.yaml").write_text(text)
    (tmp_path / "kernels").symlink_to(repo / "kernels")
    with pytest.raises(ConfigErrors) as e:
        load_farm(tmp_path / "farm.yaml")
    line = text.splitlines().index("  origin: My-Lab") + 1
    assert e.value.problems == [f"{tmp_path / 'farm.yaml'}:{line}: kcidb.origin: 'My-Lab' "
                                "must look like my_lab (^[a-z0-9_]{1,64}$)"]
    (tmp_path / "farm.yaml").write_text(text.replace("My-Lab", "my_lab"))
    assert load_farm(tmp_path / "farm.yaml").kcidb == {
        "origin": "my_lab", "url": "https://ci.example.org/farm"}
