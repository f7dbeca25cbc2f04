"""Selftest programs of the kernel tree as guest tests: judged and split into KTAP cases,
on recorded real guest runs."""

from dataclasses import replace
from pathlib import Path

from orchestrator.caserecords import CaseRecord, CaseSpec
from orchestrator.judge import judge_kselftest, ktap_subcases
from orchestrator.ktap import parse_ktap
from orchestrator.parse import observe, parse_agent, parse_console
from orchestrator.scenarios import Scenario

SOFT = Scenario("kselftest-hugetlb-soft-offline", "kselftest", "kselftest", "none",
                "the tree's own test", kselftest="mm/hugetlb-soft-offline",
                sysctl={"vm.nr_hugepages": "8"})
READ = Scenario("kselftest-hugetlb-read-hwpoison", "kselftest", "kselftest", "none",
                "the tree's own test", kselftest="mm/hugetlb-read-hwpoison")


def recorded(data: Path, name: str, cut_after: str | None = None):
    d = data / "recorded" / name
    lines = (d / "agent.log").read_text().splitlines()
    if cut_after:  # the same run, its output ending early as a crash would end it
        lines = lines[: next(i for i, ln in enumerate(lines) if ln.startswith(cut_after)) + 1]
    with open(d / "console.log") as f:
        obs = observe(parse_console(f), parse_agent(lines), timed_out=False)
    ktap = parse_ktap(ln for ln in lines if not ln.startswith('{"event"'))
    return obs, ktap


def record_for(s, obs, status, message):
    spec = CaseSpec.planned("baseline", s, 1)
    return CaseRecord.of_spec(spec, status, message, observed=obs.to_json(),
                              logs={"agent": "a.log"}, started=0.0)


def test_passing_selftest_and_its_ktap_cases(data):
    obs, ktap = recorded(data, "kselftest-hugetlb-soft-offline")
    status, message = judge_kselftest(SOFT, obs, ktap)
    assert (status, message) == ("pass", "2 KTAP tests, as expected")
    subs = ktap_subcases(record_for(SOFT, obs, status, message), ktap)
    assert [(c.scenario, c.status) for c in subs] == [
        ("kselftest-hugetlb-soft-offline/1", "pass"), ("kselftest-hugetlb-soft-offline/2", "pass")]
    assert subs[1].observed["ktap_name"] == "Test soft-offline when enabled_soft_offline=0"
    assert subs[0].id == "baseline::kselftest-hugetlb-soft-offline/1::r1"
    assert subs[0].parent == "baseline::kselftest-hugetlb-soft-offline::r1"
    assert subs[0].logs == {"agent": "a.log"} and subs[0].page_kind == "kselftest"
    assert subs[0].why.startswith("KTAP test 1 of ")


def test_selftest_cut_off_after_its_first_result_fails_and_says_where(data):
    obs, ktap = recorded(data, "kselftest-hugetlb-soft-offline", cut_after="ok 1 ")
    obs = replace(obs, workload_rc=None)  # it never exited
    status, message = judge_kselftest(SOFT, obs, ktap)
    assert status == "fail"
    assert "2 (test 2)" in message and "planned 2 tests, got 1" in message
    subs = ktap_subcases(record_for(SOFT, obs, status, message), ktap)
    assert [c.status for c in subs] == ["pass", "fail"]


def test_selftest_killed_by_sigbus_before_any_output(data):
    obs, ktap = recorded(data, "kselftest-hugetlb-read-hwpoison-sigbus")
    assert obs.value("workload_rc") == 135 and obs.value("sigbus_sent") == ["mm-hugetlb-read:40"]
    assert obs.value("recovery") == ["huge page: Recovered"]
    status, message = judge_kselftest(READ, obs, ktap)
    assert status == "fail" and message.startswith("killed by SIGBUS; ")
    assert ktap_subcases(record_for(READ, obs, status, message), ktap) == ()


def test_selftest_missing_from_the_tree_is_a_skip(data):
    obs, ktap = recorded(data, "kselftest-hugetlb-soft-offline")
    status, message = judge_kselftest(SOFT, obs, ktap, missing="not in this kernel tree: x.c")
    assert status == "skip" and "not in this kernel tree" in message


def test_selftest_in_a_panicked_guest_fails(data):
    obs, ktap = recorded(data, "kselftest-hugetlb-soft-offline")
    obs = replace(obs, guest="panicked", panic="Fatal machine check")
    assert judge_kselftest(SOFT, obs, ktap) == ("fail", "guest panicked: Fatal machine check")
