"""Pure parsing: a guest's console lines and agent events become observables. Nothing here
starts a process, so a saved result directory can be re-parsed without a kernel."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .bounds import LIST_CAP, keep
from .kernel_reports import Report, classify
from .registry import CUTTING_RACES, STEP_OBSERVABLES, UNPOISONING_RACES

TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
RECOVERY = re.compile(r"Memory failure: (0x[0-9a-f]+): recovery action for (.+?): (\w+)\s*$")
SIGBUS_SENT = re.compile(r"Memory failure: (0x[0-9a-f]+): Sending SIGBUS to (\S+):(\d+)")
MCE_KILL = re.compile(r"MCE: Killing (\S+):(\d+) due to hardware memory corruption")
PANIC = re.compile(r"Kernel panic - not syncing: ?(.*)")
KERNEL_ERROR = re.compile(
    r"(Oops: |BUG: |WARNING: |general protection fault|Kernel panic - not syncing|"
    r"kernel BUG at |Unable to handle kernel|soft lockup|hung_task)")
HW_ERROR = re.compile(r"\[Hardware Error\]: (.*)")


@dataclass
class ConsoleFacts:
    lines: int = 0
    recovery: list[str] = field(default_factory=list)  # "dirty LRU page: Recovered"
    recovery_pfns: list[str] = field(default_factory=list)
    sigbus_sent: list[str] = field(default_factory=list)  # "poison:54"
    mce_killed: list[str] = field(default_factory=list)
    hardware_errors: list[str] = field(default_factory=list)
    kernel_errors: list[str] = field(default_factory=list)  # one per report: Report.text()
    kernel_reports: list[Report] = field(default_factory=list)
    panic: str | None = None
    memory_failure_lines: list[str] = field(default_factory=list)


def strip_timestamp(line: str) -> str:
    return TIMESTAMP.sub("", line.rstrip("\r\n"))


def parse_console(lines: Iterable[str]) -> ConsoleFacts:
    facts = ConsoleFacts()
    seen: list[str] = []
    for raw in lines:
        facts.lines += 1
        line = strip_timestamp(raw)
        seen.append(line)
        if "Memory failure:" in line or "soft offline" in line.lower():
            keep(facts.memory_failure_lines, line)
        m = RECOVERY.search(line)
        if m:
            keep(facts.recovery_pfns, m.group(1))
            keep(facts.recovery, f"{m.group(2)}: {m.group(3)}")
        m = SIGBUS_SENT.search(line)
        if m:
            keep(facts.sigbus_sent, f"{m.group(2)}:{m.group(3)}")
        m = MCE_KILL.search(line)
        if m:
            keep(facts.mce_killed, f"{m.group(1)}:{m.group(2)}")
        m = HW_ERROR.search(line)
        if m:
            keep(facts.hardware_errors, m.group(1))
        m = PANIC.search(line)
        if m and facts.panic is None:
            facts.panic = m.group(1).strip()
    facts.kernel_reports = classify(seen)[:LIST_CAP]
    facts.kernel_errors = [r.text() for r in facts.kernel_reports]
    return facts


def parse_agent(lines: Iterable[str]) -> list[dict]:
    """The agent channel: one JSON object a line; anything else is ignored (and kept in the
    log), so a torn or foreign line never breaks a case."""
    events = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and "event" in ev:
            events.append(ev)
    return events


def _first(events: list[dict], name: str) -> dict | None:
    return next((e for e in events if e.get("event") == name), None)


class _Absent:
    """An observable the case gave no value for (no result event, no sibling, not a race):
    judged as None, and left out of case.json."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class RaceChecks:
    """What must hold in every round of a race, whoever wins it (race_observables)."""
    rounds: int
    wrong_data: int
    hc_overcount: int
    not_back: int


@dataclass(frozen=True)
class Observed:
    """What one case showed: the parse stage's record, which judging reads. Its names are
    the ones scenarios use in `expect` (registry.OBSERVABLES, `<step>.<observable>`,
    `race.<check>`); value() looks one up by that name, to_json() is case.json's `observed`.
    Fields with ABSENT had nothing to observe and are left out of the JSON."""
    guest: str  # survived | panicked | hung
    booted: bool  # the agent started
    recovery: tuple[str, ...]  # "dirty LRU page: Recovered", one per action the kernel took
    kernel_errors: tuple[str, ...]  # one line per kernel report
    kernel_reports: tuple[dict, ...]  # Report.to_json() of each
    panic: str | None
    sigbus_sent: tuple[str, ...]
    mce_killed: tuple[str, ...]
    mce_logged: bool
    workload_rc: int | None
    reported: bool  # the workload sent its result
    page_set_up: bool  # the workload set the case's page up and went on to poison it
    hardware_corrupted_kb: int | None = ABSENT
    # from the workload's result
    inject_errno: int | None = ABSENT
    inject_signal: str | None = ABSENT
    access_signal: str | None = ABSENT
    early_signal: str | None = ABSENT
    si_addr_is_page: bool | None = ABSENT
    si_addr_lsb: int | None = ABSENT
    data: str | None = ABSENT
    pfn_before: str | None = ABSENT
    pfn_after: str | None = ABSENT
    pfn_changed: bool | None = ABSENT
    fsync_errno: int | None = ABSENT
    sibling_early_signal: str | None = ABSENT
    sibling_access_signal: str | None = ABSENT
    sibling_data: str | None = ABSENT
    huge_pages_lost: int = ABSENT
    unpoison_errno: int = ABSENT
    hardware_corrupted_kb_after_unpoison: int = ABSENT
    # the access steps after the first: step -> {observable: value} (STEP_OBSERVABLES)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    race_checks: RaceChecks | None = None
    race: dict | None = ABSENT  # who won each round, recovery, counts: never judged
    setup_error: str = ABSENT
    setup_errno: int | None = ABSENT
    injections: tuple[dict, ...] = ABSENT  # the host's QMP injections
    ktap_tests: int = ABSENT  # a selftest program's KTAP tests
    ktap_problems: tuple[str, ...] = ABSENT

    def value(self, name: str) -> Any:
        """An observable by its name in `expect`; None when the case has none."""
        head, dot, rest = name.partition(".")
        if dot and head == "race":
            return getattr(self.race_checks, rest, None)
        if dot:
            return self.steps.get(head, {}).get(rest)
        v = getattr(self, name) if name in _NAMES else None
        return None if v is ABSENT else _json(v)

    def has_step(self, step: str) -> bool:
        """Whether a step of the access (or the race's rounds, "race") reported at all."""
        return self.race_checks is not None if step == "race" else step in self.steps

    def to_json(self) -> dict:
        out = self._present(_NAMES)
        for step, values in self.steps.items():
            out.update({f"{step}.{k}": v for k, v in values.items()})
        if self.race_checks:
            out.update({f"race.{k}": v for k, v in asdict(self.race_checks).items()})
        return {**out, **self._present(("race", *_LAST))}

    def _present(self, names: Iterable[str]) -> dict[str, Any]:
        return {n: _json(v) for n in names if (v := getattr(self, n)) is not ABSENT}


def _json(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


_LAST = ("setup_error", "setup_errno", "injections", "ktap_tests", "ktap_problems")
_NAMES = tuple(f.name for f in fields(Observed)
               if f.name not in ("steps", "race_checks", "race", *_LAST))


def observe(console: ConsoleFacts, events: list[dict], *, timed_out: bool) -> Observed:
    """Observables of one case, by the names scenarios use in `expect`."""
    start, result, end = (_first(events, n) for n in ("agent-start", "result", "agent-end"))
    obs: dict[str, Any] = {
        "guest": "panicked" if console.panic is not None else "hung" if timed_out
        else "survived",
        "booted": start is not None,
        "recovery": tuple(console.recovery),
        "kernel_errors": tuple(console.kernel_errors),
        "kernel_reports": tuple(r.to_json() for r in console.kernel_reports),
        "panic": console.panic,
        "sigbus_sent": tuple(console.sigbus_sent),
        "mce_killed": tuple(console.mce_killed),
        "mce_logged": any("Machine check events logged" in e or "Machine Check" in e
                          for e in console.hardware_errors),
        "workload_rc": end.get("rc") if end else None,
        "reported": result is not None,
        "page_set_up": _first(events, "page") is not None,
    }
    hc0 = start.get("hardware_corrupted_kb") if start else None
    hc_end = end.get("hardware_corrupted_kb") if end else None
    if result and isinstance(result.get("hardware_corrupted_kb_after"), int):
        hc_end = result["hardware_corrupted_kb_after"]  # before any clean-up undid it
    if isinstance(hc0, int) and isinstance(hc_end, int):
        obs["hardware_corrupted_kb"] = hc_end - hc0
    if result:
        obs.update(_of_result(result, hc0))
    steps = {}
    for ev in events:  # the access steps after the first, each with its own observables
        if ev.get("event") == "step" and isinstance(ev.get("step"), str):
            steps[ev["step"]] = {k: ev.get(k) for k in STEP_OBSERVABLES}
    race = _first(events, "race")
    if race:
        checks, plain = race_observables(race, [e for e in events
                                                if e.get("event") == "race-round"])
        # Which handler ran, and how much was counted, depend on who won each round: they
        # are in the race's plain record, never in the A/B signature.
        plain.update(recovery=dict(Counter(console.recovery)),
                     hardware_corrupted_kb=obs.pop("hardware_corrupted_kb", None))
        obs.update(race_checks=checks, race=plain, recovery=())
    setup = _first(events, "setup-error")
    if setup and race and obs["race_checks"].rounds:
        # A round after the first could not set its page up: what the earlier ones left
        # behind (a page lost for good), the kernel's outcome, not the farm's.
        obs["race"]["stopped"] = _setup_text(setup)
    elif setup:
        obs["setup_error"] = _setup_text(setup)
        obs["setup_errno"] = setup.get("errno")
    return Observed(**obs, steps=steps)


def _of_result(result: dict, hc0: int | None) -> dict[str, Any]:
    """The observables of the workload's result event (hc0: HardwareCorrupted at start)."""
    inj, acc, early = (result.get(k) for k in ("inject_signal", "access_signal",
                                                "early_signal"))
    first = inj or early or acc
    before, after = result.get("pfn_before"), result.get("pfn_after")
    obs = {
        "inject_errno": result.get("inject_errno"),
        "inject_signal": inj["code"] if inj else None,
        "access_signal": acc["code"] if acc else None,
        "early_signal": early["code"] if early else None,
        "si_addr_is_page": first["addr_is_page"] if first else None,
        "si_addr_lsb": first["addr_lsb"] if first else None,
        "data": result.get("data"),
        "pfn_before": before,
        "pfn_after": after,
        "pfn_changed": (before != after) if after not in (None, "0", "0x0") else None,
        "fsync_errno": _nonneg(result.get("fsync_errno")),
    }
    sib = result.get("sibling") or {}
    if sib:
        obs.update({"sibling_early_signal": _signal(sib.get("early_signal")),
                    "sibling_access_signal": _signal(sib.get("access_signal")),
                    "sibling_data": sib.get("data")})
    hb, ha = result.get("huge_pages_before"), result.get("huge_pages_after")
    if isinstance(hb, int) and isinstance(ha, int) and hb > 0:
        obs["huge_pages_lost"] = hb - ha
    if _nonneg(result.get("unpoison_errno")) is not None:
        obs["unpoison_errno"] = result["unpoison_errno"]
        after_unpoison = result.get("hardware_corrupted_kb_after_unpoison")
        if isinstance(hc0, int) and isinstance(after_unpoison, int) and after_unpoison >= 0:
            obs["hardware_corrupted_kb_after_unpoison"] = after_unpoison - hc0
    return obs


# What a program may read of a page after a round: its data, or a SIGBUS; zeros only where
# the racer cut the page out of its file, or where a lost dirty page leaves what the disk
# holds (the loss is told by fsync); "unchecked" when nothing maps it.
RACE_DATA = ("intact", "unreadable", "unchecked")
HC_PAGE_KB = 4  # HardwareCorrupted counts a poisoned raw page (a huge one too) as 4 kB


def race_observables(race: dict, rounds: list[dict]) -> tuple[RaceChecks, dict]:
    """A race's observables over its rounds. The race.* ones are what must hold whoever wins
    a round, so a correct kernel has them 0 (and all its rounds) on every run:
    - wrong_data: rounds where the workload, or the child of a fork race, read data that was
      neither the page's nor a SIGBUS;
    - hc_overcount: rounds where HardwareCorrupted grew by more than 4 kB for each frame
      the round marked poisoned (KPF_HWPOISON over all of memory: a first poisoning may drop
      a clean page, or soft offline move it, so that the second hits a new frame);
    - not_back: rounds where an unpoison succeeded but the page stayed poisoned or
      HardwareCorrupted did not go back.
    The rest (who won, what each call returned, rounds whose frames were not all counted) is
    in the plain `race` record."""
    action = race.get("action")
    allowed = RACE_DATA + (("zeroed",) if action in CUTTING_RACES or
                           race.get("kind") == "pagecache-dirty" else ())
    wrong = overcount = uncounted = not_back = 0
    outcomes: Counter = Counter()
    for r in rounds:
        datas = [r.get("data")] + ([r["child_data"]] if r.get("child_data") else [])
        wrong += any(d not in allowed for d in datas)
        hc, frames = r.get("hc_delta"), r.get("frames_delta")
        overcount += isinstance(hc, int) and isinstance(frames, int) and \
            hc > HC_PAGE_KB * max(frames, 0)
        uncounted += isinstance(hc, int) and isinstance(frames, int) and \
            hc < HC_PAGE_KB * frames
        unpoisoned = r.get("unpoison_errno") == 0 or (action in UNPOISONING_RACES and
                                                       r.get("racer_errno") == 0)
        not_back += unpoisoned and (r.get("poisoned_end") is True or r.get("hc_delta_end") != 0)
        outcomes[" ".join(f"{k}={r.get(k)}" for k in (
            "inject_errno", "inject_signal", "racer_errno", "data", "child_data")
            if r.get(k) is not None)] += 1
    return RaceChecks(len(rounds), wrong, overcount, not_back), {
        "action": action, "seed": race.get("seed"), "rounds": len(rounds),
        "asked": race.get("rounds"), "cpus": race.get("cpus"), "hc_uncounted": uncounted,
        "outcomes": dict(outcomes.most_common())}


def _setup_text(ev: dict) -> str:
    return ev.get("what", "?") + (f": {ev['error']}" if ev.get("error") else "")


def _nonneg(v):
    return v if isinstance(v, int) and v >= 0 else None


def _signal(code):
    return None if code in (None, "-") else code
