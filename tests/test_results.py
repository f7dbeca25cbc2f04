"""A/B verdicts and exit codes, over cases built from recorded real runs."""

from dataclasses import replace
from pathlib import Path

import pytest
from tests_support import run_info

from orchestrator.build import BuildResult
from orchestrator.caserecords import CaseRecord, CaseSpec, read_plan
from orchestrator.judge import expected_of, judge
from orchestrator.parse import observe, parse_agent, parse_console
from orchestrator.plan import confirmations
from orchestrator.results import VariantInfo, assemble, exit_code, missing_cases, read_results
from orchestrator.scenarios import load_scenarios
from orchestrator.verdicts import compare

REPO = Path(__file__).parent.parent
SCEN = {s.name: s for s in load_scenarios(REPO / "guest-tests" / "scenarios.yaml")}


def case(datadir, variant, scenario, recording=None, repeat=1, **obs_changes):
    d = datadir / "recorded" / (recording or scenario)
    with open(d / "console.log", errors="replace") as f:
        obs = observe(parse_console(f), parse_agent((d / "agent.log").read_text().splitlines()),
                      timed_out=False)
    steps = {**obs.steps}
    for k, v in obs_changes.items():  # a step's observable: "populate-read.data"
        if "." in k:
            step, _, name = k.partition(".")
            steps[step] = {**steps.get(step, {}), name: v}
    obs = replace(obs, steps=steps, **{k: v for k, v in obs_changes.items() if "." not in k})
    s = SCEN[scenario]
    status, message = judge(s, obs)
    return CaseRecord(f"{variant}::{scenario}::r{repeat}", variant, scenario, repeat, status,
                      message, expected=expected_of(s), observed=obs.to_json(), seconds=2.0,
                      logs={})


@pytest.fixture
def ab(data):
    def make(scenario, recording=None, repeat=1, **changes):
        return case(data, "patched", scenario, recording, repeat, **changes)
    return make


def verdicts(cases, base="baseline", variants=("baseline", "patched")):
    return {(c.variant, c.scenario): (c.verdict, c.detail)
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


def test_changed_when_only_an_access_step_differs(data, ab):
    """A step observable the scenario does not expect (shmem-madvise expects populate-read's
    errno, not its data) still makes the verdict `changed`, with the step named."""
    cases = [case(data, "baseline", "shmem-madvise"),
             ab("shmem-madvise", **{"populate-read.data": "intact"})]
    assert verdicts(cases)[("patched", "shmem-madvise")] == (
        "changed", "populate-read.data: 'unchecked' -> 'intact'")


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
    err = replace(ab("anon-madvise"), status="error", message="QEMU exited with 1")
    cases = [case(data, "baseline", "anon-madvise"), err]
    assert verdicts(cases)[("patched", "anon-madvise")] == (
        "error", "patched r1: QEMU exited with 1")


def test_a_a_run_has_no_regression(data):
    base = [case(data, "baseline", n) for n in
            ("anon-madvise", "anon-host-srao", "pagecache-clean-madvise")]
    copy_ = [replace(c, variant="baseline-copy") for c in base]
    vs = verdicts(base + copy_, variants=("baseline", "baseline-copy"))
    assert {v for v, _ in vs.values()} == {"same"}


def test_more_than_two_variants_are_each_compared_with_the_base(data, ab):
    cases = [case(data, "baseline", "anon-madvise"), ab("anon-madvise"),
             replace(case(data, "baseline", "anon-madvise"), variant="third")]
    vs = verdicts(cases, variants=("baseline", "patched", "third"))
    assert set(vs) == {("patched", "anon-madvise"), ("third", "anon-madvise")}


def run_doc(cases, interrupted=False, fail_on=()):
    return assemble(run_info(interrupted=interrupted, fail_on=list(fail_on)),
                    {"baseline": VariantInfo(), "patched": VariantInfo()}, cases)


def test_exit_codes(data, ab):
    ok = [case(data, "baseline", "anon-madvise"), ab("anon-madvise")]
    assert exit_code(run_doc(ok)) == 0
    assert exit_code(run_doc(ok, interrupted=True)) == 3
    err = [ok[0], replace(ok[1], status="error", message="lost channel")]
    assert exit_code(run_doc(err)) == 3
    fail = [ok[0], ab("anon-madvise", data="intact")]
    assert exit_code(run_doc(fail)) == 1
    assert exit_code(run_doc(fail + err)) == 1


def test_cases_never_run_are_errors_with_the_reason(data):
    s = SCEN["anon-madvise"]
    done = [case(data, "baseline", "anon-madvise")]
    plan = [CaseSpec.planned("baseline", s, 1), CaseSpec.planned("patched", s, 1),
            CaseSpec.planned("patched", s, 2, not_run="not run: host h never answered")]
    missing = missing_cases(plan, done, "not run: interrupted")
    assert [(m.id, m.status, m.message) for m in missing] == [
        ("patched::anon-madvise::r1", "error", "not run: interrupted"),
        ("patched::anon-madvise::r2", "error", "not run: host h never answered")]
    assert missing[0].page_kind == "anon" and missing[0].logs == {}
    assert "started" not in missing[0].to_json() and "command" not in missing[0].to_json()


def test_a_guest_whose_workload_never_reported_is_an_error_never_survived(data):
    d = data / "recorded" / "workload-killed"
    with open(d / "console.log", errors="replace") as f:
        obs = observe(parse_console(f), parse_agent((d / "agent.log").read_text().splitlines()),
                      timed_out=False)
    assert (obs.guest, obs.reported, obs.workload_rc) == ("survived", False, 139)
    assert judge(SCEN["anon-madvise"], obs) == (
        "error", "the workload ended without reporting its result (killed by SIGSEGV)")
    oops = replace(obs, kernel_errors=("BUG: Bad page state in process hwpoison-case",))
    status, message = judge(SCEN["anon-madvise"], oops)
    assert status == "fail" and message.endswith(
        "the kernel reported: BUG: Bad page state in process hwpoison-case")
    panic = SCEN["anon-host-srar-in-kernel"]  # expects a panic: no result is its due
    assert judge(panic, obs)[0] == "fail"  # ... and a guest that lived on is the kernel's fault


def test_a_variant_that_loses_a_capability_regresses_and_one_that_gains_it_is_fixed(data, ab):
    skip = {"inject_errno": 22}
    lost = [case(data, "baseline", "anon-soft-offline"), ab("anon-soft-offline", **skip)]
    assert lost[1].status == "skip"
    verdict, detail = verdicts(lost)[("patched", "anon-soft-offline")]
    assert verdict == "regression" and detail.startswith("patched: skip: the kernel refused")
    gained = [case(data, "baseline", "anon-soft-offline", **skip), ab("anon-soft-offline")]
    assert verdicts(gained)[("patched", "anon-soft-offline")][0] == "fixed"


def test_flaky_and_changed_fail_the_run_only_when_asked(data, ab):
    flaky = [case(data, "baseline", "anon-madvise"),
             case(data, "baseline", "anon-madvise", repeat=2),
             ab("anon-madvise"), ab("anon-madvise", repeat=2, data="intact")]
    assert exit_code(run_doc(flaky)) == 0  # a failure its own repeat did not confirm
    assert exit_code(run_doc(flaky, fail_on=["flaky"])) == 1
    changed = [case(data, "baseline", "anon-host-srar"), ab("anon-host-srar", access_signal=None)]
    assert [c.verdict for c in run_doc(changed).comparison] == ["changed"]
    assert exit_code(run_doc(changed)) == 0
    assert exit_code(run_doc(changed, fail_on=["changed"])) == 1


def test_a_patched_kernel_that_does_not_build_fails_the_run_and_a_broken_base_is_an_error(
        data, ab):
    ok = [case(data, "baseline", "anon-madvise")]
    not_run = replace(ab("anon-madvise"), status="error", message="not run: the kernel of "
                      "patched did not build (kernel build failed (exit 2); log x)")

    def build(status):
        return VariantInfo(build=BuildResult("v", status, "k", "", "", "x", "", 0.0, [],
                                             error="kernel build failed (exit 2)"))
    doc = assemble(run_info(), {"baseline": build("built"), "patched": build("failed")},
                   ok + [not_run])
    assert exit_code(doc) == 1
    doc = assemble(run_info(), {"baseline": build("failed"), "patched": VariantInfo()},
                   [replace(ok[0], status="error", message="not run"), ab("anon-madvise")])
    assert exit_code(doc) == 3


def test_confirmations_rerun_base_and_variant_of_each_verdict_not_same(data):
    import json
    plan = read_plan(json.loads((data / "run-ab" / "plan.json").read_text()), "plan.json")
    doc = read_results(data / "run-ab")
    extra = confirmations(list(doc.cases), plan, "baseline", 2)
    regressed = sorted(c.scenario for c in doc.comparison if c.verdict != "same")
    assert regressed and sorted({e.scenario.name for e in extra}) == regressed
    assert sorted((e.variant, e.repeat) for e in extra if
                  e.scenario.name == regressed[0]) == [
        ("baseline", 2), ("baseline", 3), ("poison-clean-ptes", 2), ("poison-clean-ptes", 3)]
    assert all(e.confirm and e.dir.endswith(f"/r{e.repeat}") and e.id.endswith(f"::r{e.repeat}")
               and e.kernel for e in extra)
    assert confirmations(list(doc.cases), plan, "baseline", 0) == []
