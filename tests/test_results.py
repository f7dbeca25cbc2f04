"""A/B verdicts and exit codes, over cases built from recorded real runs."""

import copy
from pathlib import Path

import pytest

from orchestrator.case import expected_of, judge
from orchestrator.config import load_scenarios
from orchestrator.parse import observe, parse_agent, parse_console
from orchestrator.results import assemble, compare, exit_code, missing_cases

REPO = Path(__file__).parent.parent
SCEN = {s.name: s for s in load_scenarios(REPO / "guest-tests" / "scenarios.yaml")}


def case(datadir, variant, scenario, recording=None, repeat=1, **obs_changes):
    d = datadir / "recorded" / (recording or scenario)
    with open(d / "console.log", errors="replace") as f:
        obs = observe(parse_console(f), parse_agent((d / "agent.log").read_text().splitlines()),
                      timed_out=False)
    obs.update(obs_changes)
    s = SCEN[scenario]
    status, message = judge(s, obs)
    return {"id": f"{variant}::{scenario}::r{repeat}", "variant": variant,
            "scenario": scenario, "repeat": repeat, "status": status, "message": message,
            "expected": expected_of(s), "observed": obs, "seconds": 2.0, "logs": {}}


@pytest.fixture
def ab(data):
    def make(scenario, recording=None, repeat=1, **changes):
        return case(data, "patched", scenario, recording, repeat, **changes)
    return make


def verdicts(cases, base="baseline", variants=("baseline", "patched")):
    return {(c["variant"], c["scenario"]): (c["verdict"], c["detail"])
            for c in compare(cases, base, list(variants))}


def test_same(data, ab):
    cases = [case(data, "baseline", "anon-madvise"), ab("anon-madvise")]
    assert verdicts(cases) == {("patched", "anon-madvise"): ("same", "")}


def test_regression_when_base_passes_and_variant_fails(data, ab):
    cases = [case(data, "baseline", "pagecache-clean-madvise"),
             ab("pagecache-clean-madvise", recovery=["clean LRU page: Failed"],
                data="unreadable", access_signal="BUS_MCEERR_AR")]
    verdict, detail = verdicts(cases)[("patched", "pagecache-clean-madvise")]
    assert verdict == "regression"
    assert "recovery: expected ['clean LRU page: Recovered'], observed " \
           "['clean LRU page: Failed']" in detail


def test_fixed_when_base_fails_and_variant_passes(data, ab):
    cases = [case(data, "baseline", "anon-madvise", hardware_corrupted_kb=0),
             ab("anon-madvise")]
    assert verdicts(cases)[("patched", "anon-madvise")][0] == "fixed"


def test_changed_when_both_pass_with_different_observables(data, ab):
    cases = [case(data, "baseline", "anon-host-srar"),
             ab("anon-host-srar", access_signal=None)]  # not in the scenario's expect
    assert verdicts(cases)[("patched", "anon-host-srar")] == (
        "changed", "access_signal: 'BUS_MCEERR_AR' -> None")


def test_flaky_when_repeats_disagree(data, ab):
    cases = [case(data, "baseline", "anon-madvise"),
             case(data, "baseline", "anon-madvise", repeat=2),
             ab("anon-madvise"), ab("anon-madvise", repeat=2, data="intact")]
    verdict, detail = verdicts(cases)[("patched", "anon-madvise")]
    assert verdict == "flaky"
    assert detail.startswith("patched: repeats disagree on status: r1=pass, r2=fail")


def test_regression_needs_every_repeat_to_agree(data, ab):
    bad = {"recovery": ["dirty LRU page: Failed"]}
    cases = [case(data, "baseline", "anon-madvise"),
             case(data, "baseline", "anon-madvise", repeat=2),
             ab("anon-madvise", **bad), ab("anon-madvise", repeat=2, **bad)]
    assert verdicts(cases)[("patched", "anon-madvise")][0] == "regression"


def test_error_verdict_when_a_case_errored(data, ab):
    err = ab("anon-madvise")
    err.update(status="error", message="QEMU exited with 1")
    cases = [case(data, "baseline", "anon-madvise"), err]
    assert verdicts(cases)[("patched", "anon-madvise")] == (
        "error", "patched r1: QEMU exited with 1")


def test_a_a_run_has_no_regression(data):
    base = [case(data, "baseline", n) for n in
            ("anon-madvise", "anon-host-srao", "pagecache-clean-madvise")]
    copy_ = [dict(copy.deepcopy(c), variant="baseline-copy") for c in base]
    vs = verdicts(base + copy_, variants=("baseline", "baseline-copy"))
    assert {v for v, _ in vs.values()} == {"same"}


def test_more_than_two_variants_are_each_compared_with_the_base(data, ab):
    cases = [case(data, "baseline", "anon-madvise"), ab("anon-madvise"),
             dict(case(data, "baseline", "anon-madvise"), variant="third")]
    vs = verdicts(cases, variants=("baseline", "patched", "third"))
    assert set(vs) == {("patched", "anon-madvise"), ("third", "anon-madvise")}


def run_doc(cases, interrupted=False):
    return assemble({"base": "baseline", "interrupted": interrupted},
                    {"baseline": {}, "patched": {}}, cases, "baseline")


def test_exit_codes(data, ab):
    ok = [case(data, "baseline", "anon-madvise"), ab("anon-madvise")]
    assert exit_code(run_doc(ok)) == 0
    assert exit_code(run_doc(ok, interrupted=True)) == 3
    err = copy.deepcopy(ok)
    err[1].update(status="error", message="lost channel")
    assert exit_code(run_doc(err)) == 3
    fail = [ok[0], ab("anon-madvise", data="intact")]
    assert exit_code(run_doc(fail)) == 1
    assert exit_code(run_doc(fail + err)) == 1


def test_cases_never_run_are_errors_with_the_reason(data):
    spec = {"id": "patched::anon-madvise::r1", "variant": "patched", "repeat": 1,
            "scenario": {"name": "anon-madvise", "page": "anon", "injector": "madvise",
                         "access": "read", "early_kill": 0, "why": "w"}}
    done = [case(data, "baseline", "anon-madvise")]
    spec0 = dict(spec, id="baseline::anon-madvise::r1", variant="baseline")
    missing = missing_cases([spec0, spec], done, "not run: interrupted")
    assert [(m["id"], m["status"], m["message"]) for m in missing] == [
        ("patched::anon-madvise::r1", "error", "not run: interrupted")]
