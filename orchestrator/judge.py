"""Judging one case: what a guest's console and agent logs say (parsed and observed), held
against what the scenario expects, gives its status and message by DESIGN.md's outcome
table: pass, fail (the kernel did something else), error (the farm got no answer), skip (the
kernel lacks the feature). The same judging serves a guest's run and `farm reparse`."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, replace
from pathlib import Path

from .bounds import AGENT_CAP, CONSOLE_CAP, LINE_CAP, bounded_lines
from .caserecords import CaseRecord
from .kernel_reports import Report
from .ktap import KtapResult, flatten, parse_ktap, program_result
from .parse import Observed, observe, parse_agent, parse_console
from .registry import GUEST_INJECTORS, KSELFTEST_NOT_BUILT
from .scenarios import Scenario

# Errno values the guest reports when the kernel lacks a feature rather than misbehaving.
FEATURE_MISSING = {2: "ENOENT", 22: "EINVAL", 38: "ENOSYS", 95: "EOPNOTSUPP"}


def expected_of(s: Scenario) -> dict:
    """The scenario's expectations, plus the ones every case has unless it says otherwise:
    the guest survives without an Oops, BUG or WARNING; a race's rounds all run and none
    shows wrong data, a page counted twice or an unpoison that did not bring it back."""
    exp = {"guest": "survived"}
    if s.race:  # whoever wins each round, nothing wrong is seen, and every round ran
        exp.update({"race.rounds": s.rounds, "race.wrong_data": 0, "race.hc_overcount": 0,
                    "race.not_back": 0})
    exp.update(s.expect)
    if exp["guest"] == "survived":
        exp.setdefault("kernel_errors", [])
    return exp


STALLS = ("soft-lockup", "rcu-stall", "hung-task")
# Panics of a kernel that could not start what the farm gave it to run (the initramfs and
# its /init): the guest image's fault, not the kernel's.
IMAGE_PANIC = re.compile(r"No working init found|Unable to mount root fs|"
                         r"Requested init \S+ failed|Initramfs unpacking failed")


def _no_answer(exp: dict, obs: Observed, infra_error: str | None,
               timeout: float) -> tuple[str, str] | None:
    """The outcomes where the farm, not the kernel, failed to get an answer (or the guest
    could not even set the case up)."""
    if infra_error:
        return "error", infra_error
    if obs.guest == "hung" and exp["guest"] != "hung":
        # A kernel that said what went wrong before it hung has given its verdict; a stall
        # or lockup report alone may be a starved host's vCPU, not the kernel's fault.
        said = [r for r in obs.kernel_reports if r.get("kind") not in STALLS]
        if said:
            return "fail", (f"the guest hung (timeout after {timeout:.0f}s); the kernel "
                            f"reported: {Report(**said[0]).text()}")
        return "error", f"timeout after {timeout:.0f}s with no kernel verdict"
    if not obs.booted and obs.guest == "panicked":
        # Before the agent the case has not begun: never the panic a scenario expects.
        if IMAGE_PANIC.search(obs.panic or ""):
            return "error", f"the guest could not start its agent: {obs.panic}"
        return "fail", f"the kernel panicked while booting, before the agent started: {_told(obs)}"
    if not obs.booted:
        return "error", "the guest never reached its agent"
    if obs.setup_error:
        if obs.setup_errno in FEATURE_MISSING:
            return "skip", f"the guest cannot set this case up: {obs.setup_error}"
        return "error", f"guest setup failed: {obs.setup_error}"
    return None


def _told(obs: Observed) -> str:
    """What a kernel that panicked said: its first two reports, or its panic line."""
    return "; ".join(obs.kernel_errors[:2] or [obs.panic or "?"])


def _no_result(obs: Observed) -> tuple[str, str]:
    """A guest that lived on but whose workload never reported: the kernel's fault when it
    said so (an Oops, a BUG), else no answer at all. Never a `survived` that passes."""
    rc = obs.workload_rc
    how = "the workload ended without reporting its result" + (
        f" ({exit_status(rc)})" if rc is not None else " (the agent never saw it end)")
    if obs.kernel_errors:
        return "fail", f"{how}; the kernel reported: {obs.kernel_errors[0]}"
    return "error", how


def exit_status(rc: int) -> str:
    """A shell's exit status as words: 'exit code 1', or 'killed by SIGBUS' for 128+N."""
    if isinstance(rc, int) and 128 < rc < 128 + 65:
        try:
            return f"killed by {signal.Signals(rc - 128).name}"
        except ValueError:
            pass
    return f"exit code {rc}"


def _differences(exp: dict, obs: Observed) -> list[str]:
    """'key: expected X, observed Y' for each expectation not met; an access step that never
    reported (the workload died before it) is one line, not one per observable."""
    out, silent = [], set()
    for k, v in exp.items():
        step = k.partition(".")[0] if "." in k else None
        if step and not obs.has_step(step):
            if step not in silent:
                silent.add(step)
                out.append(f"{step}: the step never reported")
        elif obs.value(k) != v:
            out.append(f"{k}: expected {v!r}, observed {obs.value(k)!r}")
    return out


def judge(s: Scenario, obs: Observed, *, infra_error: str | None = None,
          timeout: float = 0) -> tuple[str, str]:
    """(status, message): pass / fail / error / skip, by DESIGN.md's outcome table."""
    exp = expected_of(s)
    early = _no_answer(exp, obs, infra_error, timeout)
    if early:
        return early
    stopped = (obs.race or {}).get("stopped")
    if stopped:
        return "fail", "; ".join(_differences(exp, obs) + [
            f"round {obs.race['rounds'] + 1} could not set its page up: {stopped} (what the "
            "rounds before left behind)"])
    if obs.guest == "panicked" and not obs.page_set_up and not s.race:
        # Never the panic a scenario expects: the case had not begun.
        return "fail", f"the kernel panicked before the workload set its page up: {_told(obs)}"
    if exp["guest"] == obs.guest == "survived" and not obs.reported:
        return _no_result(obs)
    errno = obs.inject_errno
    if s.injector in GUEST_INJECTORS and errno in FEATURE_MISSING and \
            exp.get("inject_errno", 0) != errno:
        return "skip", (f"the kernel refused {s.injector} with {FEATURE_MISSING[errno]}: "
                        "feature not available")
    diff = _differences(exp, obs)
    if diff:
        return "fail", "; ".join(diff)
    return "pass", "as expected"


def judge_kselftest(s: Scenario, obs: Observed, ktap: KtapResult, *, missing: str = "",
                    infra_error: str | None = None, timeout: float = 0) -> tuple[str, str]:
    """A selftest program's verdict, the way kselftest's runner judges it (exit code and
    top-level KTAP results), after the same checks for a guest that gave no answer."""
    label = s.kselftest or s.name  # a tree's selftest, or a program from outside it
    on = f" (kernel {s.kernel})" if s.kernel else ""
    if missing.startswith(KSELFTEST_NOT_BUILT):  # the program exists and did not build
        return "error", f"{label}: {missing}{on}"
    if missing:  # a program of another kernel's tree: cannot run on this one
        return "skip", f"{label}: {missing}{on}"
    exp = expected_of(s)
    early = _no_answer(exp, obs, infra_error, timeout)
    if early:
        return early
    diff = _differences({k: v for k, v in exp.items() if k != "guest"}, obs)
    if obs.guest != "survived":
        return "fail", f"guest {obs.guest}" + (f": {obs.panic}" if obs.panic else "")
    if s.result == "exit":  # a program read by its exit code alone: 0 pass, 4 skip
        rc = obs.workload_rc
        if rc == 4:
            return "skip", f"{label} skipped (exit code 4)"
        if rc != 0 or diff:
            return "fail", "; ".join([exit_status(rc)] + diff)
        return "pass", "exit code 0, as expected"
    status = program_result(ktap, obs.workload_rc)
    tests = flatten(ktap, numbers=True)
    failed = [f"{path} ({t.name})" for path, t in tests if t.status in ("fail", "error")]
    if status == "skip":
        return "skip", f"{label} skipped" + (f": {ktap.reason}" if ktap.reason else "")
    if status != "pass" or diff:
        why = [exit_status(obs.workload_rc)] + failed + diff + ktap.problems
        return "fail", "; ".join(why)
    return "pass", f"{len(tests)} KTAP tests, as expected"


def ktap_subcases(record: CaseRecord, ktap: KtapResult) -> tuple[CaseRecord, ...]:
    """Every KTAP test and subtest of a selftest program as a case of its own, keyed by its
    number path (names change with the outcome in some selftests)."""
    return tuple(record.subcase(
        path, t.status if t.status != "error" else (
            "error" if record.status == "error" else "fail"),
        t.name + (f" — {t.reason}" if t.reason else ""),
        {"ktap_name": t.name, "ktap_status": t.status, "reason": t.reason,
         "guest": (record.observed or {}).get("guest")})
        for path, t in flatten(ktap, numbers=True))


@dataclass(frozen=True)
class Judged:
    """A case judged: what it observed, its status and message, its KTAP (a selftest's) and
    the agent's events (a coverage run's data is among them)."""
    observed: Observed
    status: str
    message: str
    ktap: KtapResult | None
    events: list[dict]


def judge_logs(s: Scenario, console_log: Path, agent_log: Path, *, timed_out: bool,
               infra_error: str | None, timeout: float, missing: str = "",
               injections: list | tuple = ()) -> Judged:
    """Parse a case's console and agent logs, observe and judge them against the scenario:
    what a guest's run ends with, and what `farm reparse` does again for a saved one."""
    with open(console_log, errors="replace") as f:  # bounded, however large the files are
        console = parse_console(bounded_lines(f, CONSOLE_CAP + LINE_CAP))
    with open(agent_log, errors="replace") as f:
        agent_lines = [ln.rstrip("\n") for ln in bounded_lines(f, AGENT_CAP + LINE_CAP)]
    events = parse_agent(agent_lines)
    obs = replace(observe(console, events, timed_out=timed_out),
                  injections=tuple(injections))
    ktap = None
    if s.kselftest or s.program:
        ktap = parse_ktap(ln for ln in agent_lines if not ln.startswith('{"event"'))
        obs = replace(obs, ktap_tests=len(flatten(ktap)), ktap_problems=tuple(ktap.problems))
        status, message = judge_kselftest(s, obs, ktap, missing=missing,
                                          infra_error=infra_error, timeout=timeout)
    else:
        status, message = judge(s, obs, infra_error=infra_error, timeout=timeout)
    return Judged(obs, status, message, ktap, events)
