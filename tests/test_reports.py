"""Kernel reports on recorded consoles of real guests (tests/data/recorded/reports/, made by
scripts/record-kernel-reports: the debug and KASAN layers' kernels, each report provoked
through LKDTM): every kind classified, with the function it is about."""

from pathlib import Path

import pytest

from orchestrator.kernel_reports import classify
from orchestrator.parse import observe, parse_console

REPORTS = Path(__file__).parent / "data" / "recorded" / "reports"


def reports_of(kind: str):
    with open(REPORTS / f"{kind}.log", errors="replace") as f:
        return parse_console(f).kernel_reports


@pytest.mark.parametrize("log, kind, function, detail", [
    ("warning", "warning", "lkdtm_WARNING", "drivers/misc/lkdtm/bugs.c"),
    ("bug", "bug", "lkdtm_BUG", "drivers/misc/lkdtm/bugs.c"),
    ("refcount", "refcount", "lkdtm_REFCOUNT_DEC_ZERO", "decrement hit 0"),
    ("list-corruption", "list-corruption", "lkdtm_CORRUPT_LIST_ADD", "list_add corruption"),
    ("lockdep", "lockdep", "lkdtm_", "lock held when returning to user space!"),
    ("lockdep", "atomic-sleep", "", "scheduling while atomic"),
    ("soft-lockup", "soft-lockup", "lkdtm_SOFTLOCKUP", "soft lockup"),
    ("rcu-stall", "rcu-stall", "lkdtm_LOOP", "detected stall"),
    ("hung-task", "hung-task", "lkdtm_HUNG_TASK", "provoke"),
    ("kasan", "kasan", "lkdtm_SLAB_LINEAR_OVERFLOW", "slab-out-of-bounds"),
    ("vm-bug", "vm-bug", "me_pagecache_clean", "VM_BUG_ON_PAGE"),
])
def test_each_kind_of_report_is_classified_with_its_function(log, kind, function, detail):
    got = reports_of(log)
    first = next((r for r in got if r.kind == kind), None)
    assert first is not None, [r.to_json() for r in got]
    assert first.function.startswith(function) if function else True, first
    assert detail in first.detail or detail in first.line, first


def test_a_warning_that_carries_a_report_is_one_report_not_two():
    kinds = [r.kind for r in reports_of("refcount")]
    assert kinds.count("refcount") == 1 and "warning" not in kinds
    bug = reports_of("bug")  # BUG(): "kernel BUG at", then its invalid opcode Oops
    assert [r.kind for r in bug] == ["bug"] and bug[0].function == "lkdtm_BUG"
    # VM_BUG_ON_PAGE: the page dump, its "kernel BUG at" and its Oops are one report
    assert [r.kind for r in reports_of("vm-bug")] == ["vm-bug"]


def test_a_report_the_kernel_repeats_is_one_report_counted():
    (lockup,) = reports_of("soft-lockup")
    assert lockup.count > 1 and lockup.function == "lkdtm_SOFTLOCKUP"
    (hung,) = reports_of("hung-task")
    assert hung.count > 1


def test_a_kernel_that_guesses_its_call_traces_still_names_the_function():
    # tinyconfig's unwinder marks every frame "?": the first one past the reporting is taken
    (r,) = reports_of("refcount-guessing-unwinder")
    assert r.function == "lkdtm_REFCOUNT_DEC_ZERO"


def test_kernel_errors_name_kind_and_function_and_fail_a_survived_case():
    with open(REPORTS / "warning.log", errors="replace") as f:
        console = parse_console(f)
    obs = observe(console, [], timed_out=False)
    assert obs.value("kernel_errors")[0].startswith("warning in lkdtm_WARNING: WARNING: CPU: ")
    assert obs.value("kernel_reports")[0]["kind"] == "warning"


def test_a_quiet_console_has_no_report():
    clean = Path(__file__).parent / "data/recorded/anon-madvise/console.log"
    assert classify(clean.read_text(errors="replace").splitlines()) == []


def test_a_hung_guest_that_reported_something_failed_one_that_only_stalled_gave_no_answer():
    from orchestrator.judge import judge
    from orchestrator.scenarios import load_scenarios
    s = next(s for s in load_scenarios(Path(__file__).parent.parent / "guest-tests"
                                       / "scenarios.yaml") if s.name == "anon-madvise")
    for log, want in (("lockdep", "fail"), ("soft-lockup", "error")):
        with open(REPORTS / f"{log}.log", errors="replace") as f:
            obs = observe(parse_console(f), [{"event": "agent-start"}], timed_out=True)
        status, message = judge(s, obs, timeout=30)
        assert status == want, message
        if want == "fail":
            assert message.startswith("the guest hung (timeout after 30s); the kernel "
                                      "reported: lockdep in lkdtm_")
        else:
            assert message == "timeout after 30s with no kernel verdict"
