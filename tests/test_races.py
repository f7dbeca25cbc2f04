"""Race scenarios: their validation, selection and seeds, and their judging on recorded real
guests (tests/data/recorded/races/: the race set on the debug layer's and the plain kernel,
and the race demo patch's NULL dereference). Nothing here starts a process."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from tests_support import run_info

from orchestrator.case import kernel_cmdline
from orchestrator.caserecords import CaseRecord
from orchestrator.errors import ConfigErrors
from orchestrator.farmfile import load_farm
from orchestrator.judge import expected_of, judge
from orchestrator.options import RunOptions
from orchestrator.parse import Observed, observe, parse_agent, parse_console
from orchestrator.plan import Matrix, run_meta, select
from orchestrator.registry import RACE_KINDS, RACES
from orchestrator.results import VariantInfo, assemble
from orchestrator.scenarios import load_scenarios
from orchestrator.summary import summary
from orchestrator.verdicts import signature

REPO = Path(__file__).parent.parent
RACES_DIR = Path(__file__).parent / "data" / "recorded" / "races"
CFG = load_farm(REPO / "farm.yaml")
BY_NAME = {s.name: s for s in CFG.scenarios}


def recorded(name: str, edit=None) -> Observed:
    """The observables of a recorded race guest; edit(round_event) may change its rounds
    (a stand-in for a kernel that got one wrong, built from a real round)."""
    d = RACES_DIR / name
    with open(d / "console.log", errors="replace") as f:
        console = parse_console(f)
    lines = (d / "agent.log").read_text().splitlines()
    events = parse_agent(lines)
    if edit:
        for e in events:
            if e.get("event") == "race-round":
                edit(e)
    return observe(console, events, timed_out=False)


def scenario_of(name: str, **kw):
    """A shipped race scenario as run with seed 7, of the recordings' 10 rounds."""
    return replace(BY_NAME[name], **{"seed": 7, "rounds": 10, **kw})


# ---- the scenario file ----

def test_the_race_set_covers_the_seeds_four_handlers_and_huge_pages_each_under_two_races():
    races = [s for s in CFG.scenarios if s.race]
    by_kind: dict[str, set[str]] = {}
    for s in races:
        by_kind.setdefault(s.page.split("-head")[0].split("-tail")[0].replace(
            "hugetlb-file", "hugetlb").replace("hugetlb-anon", "hugetlb"), set()).add(s.race)
    for kind in ("pagecache-clean", "pagecache-dirty", "swap-clean", "swap-dirty", "hugetlb",
                 "thp", "ksm"):
        assert len(by_kind.get(kind, ())) >= 2, (kind, by_kind)
    for s in races:
        assert s.name.startswith("race-") and s.tier == "race" and s.cpus == 2
        assert s.rounds in (10, 40) and s.page in RACES[s.race] and s.page in RACE_KINDS
    assert {"unpoison", "soft-offline", "poison2", "truncate", "punch-hole", "munmap", "fork",
            "pageout", "compact"} <= {s.race for s in races}


def test_a_race_that_does_not_fit_is_bad_input_with_file_and_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("""\
scenarios:
  - name: race-a
    page: pagecache-clean
    injector: madvise
    race: punch-hole
    why: ext2 cannot punch holes
  - name: race-b
    page: anon
    injector: host-srar
    race: fork
    why: a host machine check ends when the host says
  - name: race-c
    page: vdso
    injector: madvise
    race: fork
    rounds: 0
    why: not set up each round
  - name: race-d
    page: anon
    injector: madvise
    race: fork
    why: a race observes what holds whoever wins
    expect: {data: intact, race.wrong: 0, race.wrong_data: 0}
""")
    with pytest.raises(ConfigErrors) as e:
        load_scenarios(p)
    got = "\n".join(e.value.problems)
    assert f"{p}:5: scenario 'race-a': race 'punch-hole' does not apply to pagecache-clean" in got
    assert f"{p}:9: scenario 'race-b': a race poisons with madvise" in got and "host-srar" in got
    assert f"{p}:16: scenario 'race-c': rounds must be 1 to 200, not 0" in got
    assert f"{p}:13: scenario 'race-c': race mode does not set up vdso pages" in got
    assert f"{p}:23: scenario 'race-d': expect: a race scenario observes" in got
    assert "not 'data'" in got and "not 'race.wrong'" in got
    assert "race.wrong_data" not in got.split("not ")[-1]


# ---- selection and seeds ----

def test_races_stay_out_of_the_default_run_and_run_when_named_or_by_tier():
    _, default = select(CFG, RunOptions())
    assert not any(s.race for s in default) and len(default) == 71
    _, named = select(CFG, RunOptions(scenarios="race-*"))
    assert named and all(s.race for s in named)
    _, tier = select(CFG, RunOptions(tier="race"))
    assert [s.name for s in tier] == [s.name for s in named]
    _, full = select(CFG, RunOptions(tier="full"))
    assert set(s.name for s in named) < set(s.name for s in full)


def test_one_seed_for_every_race_of_a_run_given_or_drawn_and_recorded():
    m = Matrix.of(CFG, RunOptions(scenarios="race-*,anon-madvise", seed=12345))
    assert {s.seed for s in m.every if s.race} == {12345}
    assert next(s for s in m.every if s.name == "anon-madvise").seed == 0
    drawn = Matrix.of(CFG, RunOptions(scenarios="race-*"))
    assert len({s.seed for s in drawn.every}) == 1
    from datetime import UTC, datetime
    assert run_meta(CFG, m, "id", datetime.now(UTC)).to_json()["seed"] == 12345
    assert "seed" not in run_meta(CFG, Matrix.of(CFG, RunOptions()), "id",
                                  datetime.now(UTC)).to_json()


def test_the_pool_hands_its_seed_to_every_host():
    from orchestrator.options import host_args
    opts = RunOptions(scenarios="race-*", seed=None)
    m = Matrix.of(CFG, opts)
    args = host_args(opts, m.seed)
    assert args[args.index("--seed") + 1] == str(m.seed)
    assert args[args.index("--scenarios") + 1] == "race-*"


def test_a_race_guest_runs_the_race_and_panics_on_an_oops():
    s = scenario_of("race-pagecache-dirty-truncate", rounds=40)
    cmd = kernel_cmdline(s)
    assert ("farm.run=hwpoison-case:--kind:pagecache-dirty:--injector:madvise:--race:truncate:"
            "--rounds:40:--seed:7") in cmd
    assert "kernel.panic_on_oops=1" in cmd and "farm.disk=/dev/vda" in cmd
    assert "oops=panic" not in kernel_cmdline(BY_NAME["pagecache-dirty-madvise"]).split()
    exp = expected_of(s)
    assert exp == {"guest": "survived", "race.rounds": 40, "race.wrong_data": 0,
                   "race.hc_overcount": 0, "race.not_back": 0, "kernel_errors": []}


# ---- judging recorded races ----

def test_a_debug_kernel_race_that_held_passes_with_its_rounds_on_record():
    obs = recorded("race-pagecache-dirty-truncate-debug")
    s = scenario_of("race-pagecache-dirty-truncate")
    assert judge(s, obs) == ("pass", "as expected")
    assert obs.value("kernel_reports") == [] and obs.value("race.rounds") == 10
    race = obs.race
    assert race["action"] == "truncate" and race["cpus"] == 2 and race["rounds"] == 10
    assert sum(race["outcomes"].values()) == 10
    # who won is on record, out of the signature: the handlers that ran, the count
    assert obs.value("recovery") == [] and "hardware_corrupted_kb" not in obs.to_json()
    assert isinstance(race["recovery"], dict)


def test_a_second_poisoning_that_hit_a_new_frame_is_not_counted_twice():
    """Recorded: corrupt-pfn won round 9, the clean page was dropped and MADV_HWPOISON
    faulted a new one in and poisoned that: HardwareCorrupted +8 kB for two frames."""
    obs = recorded("race-pagecache-clean-poison2")
    assert judge(scenario_of("race-pagecache-clean-poison2"), obs)[0] == "pass"
    rounds = [e for e in parse_agent((RACES_DIR / "race-pagecache-clean-poison2" /
                                      "agent.log").read_text().splitlines())
              if e.get("event") == "race-round"]
    assert any(r["hc_delta"] == 8 and r["frames_delta"] == 2 for r in rounds)


@pytest.mark.parametrize("name, scenario, edit, observable", [
    ("race-pagecache-clean-poison2", "race-pagecache-clean-poison2",
     lambda e: e.update(frames_delta=1) if e["hc_delta"] == 8 else None, "race.hc_overcount"),
    ("race-pagecache-dirty-truncate-debug", "race-pagecache-dirty-truncate",
     lambda e: e.update(data="changed") if e["round"] == 3 else None, "race.wrong_data"),
    ("race-ksm-fork", "race-ksm-fork",
     lambda e: e.update(child_data="zeroed") if e["round"] == 0 else None, "race.wrong_data"),
    ("race-anon-unpoison", "race-anon-unpoison",
     lambda e: e.update(poisoned_end=True) if e["racer_errno"] == 0 else None, "race.not_back"),
])
def test_a_round_that_went_wrong_fails_the_race_naming_what(name, scenario, edit, observable):
    assert judge(scenario_of(scenario), recorded(name))[0] == "pass"
    status, message = judge(scenario_of(scenario), recorded(name, edit))
    assert status == "fail" and message.startswith(f"{observable}: expected 0, observed "), \
        message


def test_the_race_demo_patch_oopses_and_the_guest_panics_at_once():
    """Recorded: kernels/race-demo.yaml's variant; truncate won the first round and
    me_pagecache_clean took a NULL mapping. oops=panic ends the guest at once."""
    obs = recorded("race-demo-null-deref")
    status, message = judge(scenario_of("race-pagecache-dirty-truncate"), obs)
    assert status == "fail" and obs.value("guest") == "panicked"
    assert message.startswith("guest: expected 'survived', observed 'panicked'")
    oops = obs.value("kernel_reports")[0]
    assert oops["kind"] == "oops" and oops["function"] == "shmem_mapping"
    assert oops["line"].startswith("BUG: kernel NULL pointer dereference")
    assert [r["kind"] for r in obs.value("kernel_reports")] == ["oops", "panic"]  # one Oops


def test_a_round_that_cannot_set_up_after_others_ran_is_the_kernels_outcome():
    d = RACES_DIR / "race-pagecache-clean-poison2"
    lines = (d / "agent.log").read_text().splitlines()
    lines = lines[:next(i for i, ln in enumerate(lines) if '"round":3' in ln)]
    lines.append('{"event":"setup-error","what":"mmap(hugetlb)","errno":12,'
                 '"error":"Cannot allocate memory"}')
    with open(d / "console.log", errors="replace") as f:
        obs = observe(parse_console(f), parse_agent(lines), timed_out=False)
    status, message = judge(scenario_of("race-pagecache-clean-poison2"), obs)
    assert status == "fail", message
    assert "race.rounds: expected 10, observed 3" in message
    assert "round 4 could not set its page up: mmap(hugetlb): Cannot allocate memory" in message


def test_who_wins_a_round_never_changes_the_signature():
    """A/A on races: two runs that split their rounds differently have one signature."""
    def flip(e):
        e.update(data="intact" if e["data"] == "unreadable" else "unreadable",
                 inject_errno=16, racer_errno=133, hc_delta=0, frames_delta=0)
    a, b = recorded("race-ksm-fork"), recorded("race-ksm-fork", flip)
    assert a.race["outcomes"] != b.race["outcomes"]
    sig = signature(a.to_json())
    assert sig == signature(b.to_json())
    assert {k for k in sig if k.startswith("race.")} == {
        "race.rounds", "race.wrong_data", "race.hc_overcount", "race.not_back"}


def test_the_summary_names_the_seed_and_each_races_rounds():
    obs = recorded("race-ksm-fork")
    case = CaseRecord("baseline::race-ksm-fork::r1", "baseline", "race-ksm-fork", 1, "pass",
                      "as expected", observed=obs.to_json(), expected={})
    doc = assemble(run_info(id="r", seed=99, repeat=1, jobs=2, layers=["debug"]),
                   {"baseline": VariantInfo()}, [case])
    text = summary(doc, 0)
    assert "- race seed: 99 (the same races again: --seed 99)" in text
    assert "| race-ksm-fork | pass (10 rounds: data=" in text
    json.dumps(obs.to_json())  # the record stays JSON
