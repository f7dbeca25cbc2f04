"""The typed records at the stage boundaries (orchestrator/caserecords.py, parse.Observed) read
and write the files of real runs as they are: plan.json and case.json of a recorded A/B run,
and the observables of every recorded guest."""

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator import registry
from orchestrator.caserecords import CaseRecord, CaseSpec, plan_json, read_plan
from orchestrator.errors import UserError
from orchestrator.parse import ABSENT, Observed, observe, parse_agent, parse_console
from orchestrator.scenarios import Scenario, load_scenarios

DATA = Path(__file__).parent / "data"
RUN = DATA / "run-ab"
SCENARIOS = Path(__file__).parent.parent / "guest-tests" / "scenarios.yaml"


def test_saved_case_records_read_back_as_they_were_written():
    paths = sorted(RUN.glob("cases/*/*/r*/case.json"))
    assert len(paths) == 20
    for p in paths:
        saved = json.loads(p.read_text())
        again = CaseRecord.from_json(saved, str(p)).to_json()
        assert {k: v for k, v in saved.items() if v is not None} == {
            k: v for k, v in again.items() if k in saved}, p
        assert set(again) - set(saved) <= {"confirm"}  # older records had no confirm


def test_a_plan_reads_back_typed_and_writes_the_same():
    doc = json.loads((RUN / "plan.json").read_text())
    plan = read_plan(doc, "plan.json")
    assert len(plan) == len(doc["cases"]) and all(s.runnable for s in plan)
    first = plan[0]
    assert isinstance(first.scenario, Scenario) and first.machine.memory_mb > 0
    assert first.dir == f"cases/{first.variant}/{first.scenario.name}/r{first.repeat}"
    assert read_plan(json.loads(json.dumps(plan_json(plan))), "again") == plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.kernel = "elsewhere"


def test_each_way_a_case_ends_is_one_constructor():
    s = next(s for s in load_scenarios(SCENARIOS) if s.name == "anon-madvise")
    spec = CaseSpec.planned("patched", s, 2)
    assert (spec.id, spec.runnable) == ("patched::anon-madvise::r2", False)
    lost = CaseRecord.not_run(spec, "not run: the run was interrupted (SIGTERM)")
    assert lost.to_json() == {
        "id": "patched::anon-madvise::r2", "variant": "patched", "scenario": "anon-madvise",
        "repeat": 2, "status": "error", "message": "not run: the run was interrupted (SIGTERM)",
        "confirm": False, "page_kind": "anon", "injector": "madvise", "access": s.access,
        "policy": {"early_kill": 0, "recovery": 1}, "cleanup": "none", "why": s.why,
        "expected": {}, "observed": {}, "seconds": 0.0, "logs": {}}
    told = CaseRecord.not_run(dataclasses.replace(spec, not_run="not run: host h never "
                                                  "answered"), "not run")
    assert told.message == "not run: host h never answered"
    ran = CaseRecord.of_spec(spec, "pass", "as expected", observed={"guest": "survived"},
                             logs={"console": "c.log"}, started=1.0, seconds=2.0, qemu_exit=0)
    sub = ran.subcase("1.2", "fail", "a KTAP test", {"ktap_status": "fail"})
    assert (sub.id, sub.parent, sub.logs, sub.qemu_exit) == (
        "patched::anon-madvise/1.2::r2", ran.id, {"console": "c.log"}, None)


@pytest.mark.parametrize("change, message", [
    ({"repeat": "1"}, "'repeat' has the wrong type (str)"),
    ({"repeat": True}, "'repeat' has the wrong type (bool)"),
    ({"seconds": "2"}, "'seconds' has the wrong type (str)"),
    ({"observed": []}, "'observed' has the wrong type (list)"),
    ({"confirm": 1}, "'confirm' has the wrong type (int)"),
    ({"status": "great"}, "status 'great' is not one of pass, fail, error, skip"),
    ({"subcases": [{"id": "x"}]}, "c.json (subcase 0): not a case record (no 'variant')"),
])
def test_a_damaged_record_is_bad_input_naming_the_field(change, message):
    saved = json.loads(next(RUN.glob("cases/*/*/r*/case.json")).read_text())
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CaseRecord.from_json({**saved, **change}, "c.json")
    assert CaseRecord.from_json({**saved, "seconds": 2}, "c.json").seconds == 2  # an int is a float


def observed_of(name: str) -> Observed:
    d = DATA / "recorded" / name
    with open(d / "console.log", errors="replace") as f:
        console = parse_console(f)
    return observe(console, parse_agent((d / "agent.log").read_text().splitlines()),
                   timed_out=False)


def test_every_observable_a_scenario_may_expect_is_a_field_judging_can_read():
    names = {f.name for f in dataclasses.fields(Observed)}
    assert set(registry.OBSERVABLES) <= names
    obs = observed_of("shmem-madvise")
    flat = obs.to_json()
    for name in [*registry.OBSERVABLES, *(k for k in flat if "." in k)]:
        assert obs.value(name) == flat.get(name), name
    assert obs.value("no-such-step.errno") is None and obs.value("nonsense") is None
    assert obs.sibling_data is ABSENT and "sibling_data" not in flat  # it had no sibling
