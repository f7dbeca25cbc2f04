"""Console and agent parsing, and the judgement of a case, on recorded real runs."""

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.judge import expected_of, judge
from orchestrator.parse import observe, parse_agent, parse_console
from orchestrator.scenarios import Scenario, load_scenarios

REPO = Path(__file__).parent.parent


def observed(data, name, timed_out=False):
    d = data / "recorded" / name
    with open(d / "console.log", errors="replace") as f:
        console = parse_console(f)
    events = parse_agent((d / "agent.log").read_text().splitlines())
    return observe(console, events, timed_out=timed_out)


SCENARIOS = {s.name: s for s in load_scenarios(REPO / "guest-tests" / "scenarios.yaml")}


STEP_RECORDINGS = ["anon-madvise", "pagecache-clean-madvise", "pagecache-dirty-madvise",
                   "shmem-madvise", "memfd-madvise", "hugetlb-file-madvise", "sysv-shm-madvise",
                   "swap-clean-madvise"]


@pytest.mark.parametrize("name", ["anon-corrupt-pfn-early-kill", "anon-host-srao",
                                  "anon-host-srar", "anon-soft-offline", *STEP_RECORDINGS])
def test_recorded_baseline_runs_meet_the_shipped_expectations(data, name):
    obs = observed(data, name)
    assert judge(SCENARIOS[name], obs) == ("pass", "as expected")


def test_anon_madvise_observables(data):
    obs = observed(data, "anon-madvise")
    assert obs.value("guest") == "survived"
    assert obs.value("recovery") == ["dirty LRU page: Recovered"]
    assert obs.value("inject_signal") == "BUS_MCEERR_AR"
    assert obs.value("access_signal") == "BUS_MCEERR_AR"
    assert obs.value("si_addr_is_page") is True and obs.value("si_addr_lsb") == 12
    assert obs.value("hardware_corrupted_kb") == 4
    assert obs.value("sigbus_sent") == ["hwpoison-case:25"]
    assert obs.value("kernel_errors") == []


def test_clean_page_cache_is_reread_into_a_new_frame(data):
    obs = observed(data, "pagecache-clean-madvise")
    assert obs.value("recovery") == ["clean LRU page: Recovered"]
    assert obs.value("data") == "intact" and obs.value("pfn_changed") is True
    assert obs.value("inject_signal") is None and obs.value("access_signal") is None


def test_dirty_page_cache_loses_data_and_fsync_says_eio(data):
    obs = observed(data, "pagecache-dirty-madvise")
    assert obs.value("fsync_errno") == 5
    assert obs.value("data") == "unreadable"


def test_soft_offline_keeps_data_and_moves_the_page(data):
    obs = observed(data, "anon-soft-offline")
    assert obs.value("recovery") == []
    assert obs.value("data") == "intact" and obs.value("pfn_changed") is True
    assert obs.value("hardware_corrupted_kb") == 4


def test_panic_is_recorded_and_is_a_failure_when_survival_was_expected(data):
    obs = observed(data, "host-srao-amd-cpu-panic")
    assert obs.value("guest") == "panicked"
    assert obs.value("panic") == "Fatal local machine check"
    status, message = judge(SCENARIOS["anon-host-srao"], obs)
    assert status == "fail"
    assert "guest: expected 'survived', observed 'panicked'" in message


def test_expected_panic_is_a_pass(data):
    s = Scenario("srao-amd", "anon", "host-srao", "read", "an AMD-vendor CPU has no MCA "
                 "recovery: the kernel must panic", expect={"guest": "panicked"})
    assert "kernel_errors" not in expected_of(s)
    assert judge(s, observed(data, "host-srao-amd-cpu-panic"))[0] == "pass"


def test_a_kernel_that_panics_while_booting_never_passes_an_expected_panic(data):
    """A real kernel with a throwaway patch that BUGs in an initcall (memory_failure_init):
    it panics before the agent starts. That fails every scenario, the ones that expect a
    panic too (they passed before this check), and the message says where it died."""
    obs = observed(data, "boot-panic-initcall-bug")
    assert (obs.guest, obs.booted) == ("panicked", False)
    want = ("fail", "the kernel panicked while booting, before the agent started: bug in "
            "memory_failure_init: kernel BUG at ../src/mm/memory-failure.c:2551!; panic: "
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b")
    for name in ("anon-madvise", "anon-host-srar-in-kernel", "anon-madvise-recovery-off"):
        assert judge(SCENARIOS[name], obs) == want, name


def test_a_panic_before_the_workload_set_its_page_up_is_never_the_expected_one(data):
    """A real kernel with a throwaway patch that panics when the agent sets
    vm.memory_failure_early_kill, after the agent started and before the workload: such a
    kernel passed the scenarios that expect a panic until this check."""
    obs = observed(data, "setup-panic-sysctl")
    assert (obs.guest, obs.booted, obs.page_set_up) == ("panicked", True, False)
    want = ("fail", "the kernel panicked before the workload set its page up: panic in panic: "
            "Kernel panic - not syncing: memory_failure_early_kill written")
    for name in ("anon-madvise", "anon-host-srar-in-kernel", "anon-madvise-recovery-off"):
        assert judge(SCENARIOS[name], obs) == want, name
    assert observed(data, "host-srar-in-kernel-panic").page_set_up  # the panic it expects


def test_a_guest_image_the_kernel_cannot_start_is_an_error(data):
    """The real base kernel told to start an /init the initramfs does not have: the farm's
    image, not the kernel, so an error, even where the scenario expects a panic."""
    obs = observed(data, "boot-panic-no-init")
    assert (obs.guest, obs.booted) == ("panicked", False)
    for name in ("anon-madvise", "anon-host-srar-in-kernel"):
        assert judge(SCENARIOS[name], obs) == (
            "error", "the guest could not start its agent: VFS: Unable to mount root fs on "
            "unknown-block(0,0)"), name


def test_guest_killed_mid_boot_is_an_error_not_a_failure(data):
    obs = observed(data, "killed-mid-boot", timed_out=True)
    assert obs.value("guest") == "hung" and obs.value("booted") is False
    status, message = judge(SCENARIOS["anon-madvise"], obs, timeout=1.9)
    assert status == "error"
    assert "timeout" in message


def test_wrong_expectation_fails_with_expected_and_observed(data):
    s = SCENARIOS["anon-madvise"]
    wrong = Scenario(**{**s.__dict__, "expect": {**s.expect, "data": "intact"}})
    status, message = judge(wrong, observed(data, "anon-madvise"))
    assert status == "fail"
    assert message == "data: expected 'intact', observed 'unreadable'"


def test_kernel_refusing_the_injector_is_a_skip(data):
    obs = observed(data, "anon-madvise")
    obs = replace(obs, inject_errno=22)
    status, message = judge(SCENARIOS["anon-madvise"], obs)
    assert status == "skip" and "EINVAL" in message


def test_infrastructure_error_wins(data):
    obs = observed(data, "anon-madvise")
    assert judge(SCENARIOS["anon-madvise"], obs, infra_error="QEMU exited with 1")[0] == "error"


def test_torn_and_foreign_agent_lines_are_ignored():
    lines = ['{"event":"agent-start","hardware_corrupted_kb":0}', '{"event":"resu',
             "login: garbage", "[1.0] printk", '{"event":"agent-end","rc":0,'
             '"hardware_corrupted_kb":4}']
    assert [e["event"] for e in parse_agent(lines)] == ["agent-start", "agent-end"]


def test_console_line_truncated_mid_line_does_not_break_parsing(data):
    text = (data / "recorded" / "anon-madvise" / "console.log").read_text()
    cut = text[: text.index("recovery action for") + 25]  # stops inside the line
    facts = parse_console(cut.splitlines(keepends=True))
    assert facts.recovery == []
    assert facts.sigbus_sent == ["hwpoison-case:25"]


def steps_of(obs) -> dict[str, dict]:
    return obs.steps


def test_every_access_step_has_a_recorded_real_run():
    """Each step after the first has a recording of a real guest that took it."""
    from orchestrator.registry import ACCESS_STEPS
    data = Path(__file__).parent / "data"
    seen = set()
    for name in STEP_RECORDINGS:
        seen |= set(steps_of(observed(data, name)))
    assert seen == set(ACCESS_STEPS) - {"read"}  # read is the classic first access


def test_shmem_keeps_the_poisoned_folio_for_every_new_reader(data):
    steps = steps_of(observed(data, "shmem-madvise"))
    for way in ("write", "remap-read", "private-read", "child-read", "after-drop-caches",
                "remap-write"):
        assert steps[way]["signal"] == "BUS_MCEERR_AR" and steps[way]["data"] == "unreadable"
    assert steps["pread"] == {"signal": None, "si_addr_lsb": None, "data": "unreadable",
                              "errno": 5, "bytes": -1}
    assert steps["pwrite"]["errno"] == 5 and steps["populate-read"]["errno"] == 133
    assert steps["fsync"]["errno"] == 0
    assert steps["truncate-extend"] == {"signal": None, "si_addr_lsb": None, "data": "zeroed",
                                        "errno": 0, "bytes": None}


def test_dirty_page_cache_new_readers_see_the_disk_and_fsync_says_eio_once(data):
    obs = observed(data, "pagecache-dirty-madvise")
    steps = steps_of(obs)
    assert steps["write"]["signal"] == "BUS_MCEERR_AR"  # the old mapping's poison entry
    for way in ("pread", "remap-read", "private-read", "child-read", "after-drop-caches"):
        assert steps[way]["signal"] is None and steps[way]["data"] == "zeroed", way
    assert steps["fsync"]["errno"] == 5 and obs.value("fsync_errno") == 5


def test_hugetlb_file_readers_fault_on_the_huge_page_and_pwrite_is_einval(data):
    steps = steps_of(observed(data, "hugetlb-file-madvise"))
    assert steps["remap-read"]["si_addr_lsb"] == 21
    assert (steps["pread"]["errno"], steps["pwrite"]["errno"]) == (5, 22)


def test_a_step_that_never_reported_is_one_line_of_the_failure(data):
    s = SCENARIOS["anon-madvise"]
    obs = observed(data, "anon-madvise")
    obs = replace(obs, steps={k: v for k, v in obs.steps.items()
                              if k not in ("child-read", "write")})
    status, message = judge(s, obs)
    assert status == "fail"
    assert message == "child-read: the step never reported; write: the step never reported"
