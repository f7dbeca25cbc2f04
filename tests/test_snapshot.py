"""Snapshot boot's pieces (snapshot.py, case.py): the shape of a guest, the snapshot made once
under its lock and shared, a failed one remembered, a restored case's console, and how the
reports say which cases booted how. The real save and restore: test_e2e_snapshot.py."""

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.case import BOOT_WORDS, case_words, kernel_cmdline
from orchestrator.caserecords import CaseRecord
from orchestrator.errors import ConfigErrors
from orchestrator.farmfile import load_farm
from orchestrator.junit import guest_boot
from orchestrator.qemu import GuestRequest, GuestRun, Machine
from orchestrator.scenarios import load_scenarios
from orchestrator.snapshot import MARK, READY, shape_key, snapshot_for, with_boot

REPO = Path(__file__).parent.parent


@pytest.fixture
def req(tmp_path):
    for name in ("vmlinux", "initrd", "disk", "swap"):
        (tmp_path / name).write_bytes(name.encode())
    return GuestRequest(Machine(), tmp_path / "vmlinux", tmp_path / "initrd",
                        " ".join([*BOOT_WORDS, "farm.snapshot=1"]), tmp_path / "case", 60)


def test_a_cold_boot_and_a_restored_guest_get_the_same_words():
    scenarios = load_scenarios(REPO / "guest-tests" / "scenarios.yaml")
    for s in scenarios:
        words = case_words(s)
        assert kernel_cmdline(s).split() == [*BOOT_WORDS, *words]
        assert all(w.startswith("farm.") and " " not in w and "\n" not in w for w in words)
    race = next(s for s in scenarios if s.race)
    assert "kernel.panic_on_oops=1" in " ".join(case_words(race))  # was oops=panic


def test_the_shape_is_everything_qemu_must_see_alike(req, tmp_path):
    key = shape_key(req)
    assert shape_key(replace(req, workdir=tmp_path / "other", timeout=5)) == key
    assert shape_key(replace(req, drives=((tmp_path / "disk", ""),))) != key
    assert shape_key(replace(req, drives=((tmp_path / "disk", "throttling.bps-write=1"),))) != \
        shape_key(replace(req, drives=((tmp_path / "disk", ""),)))
    assert shape_key(replace(req, machine=Machine(cpus=2))) != key
    assert shape_key(replace(req, machine=Machine(memory_mb=512))) != key
    assert shape_key(replace(req, machine=Machine(accel="kvm"))) != key
    time.sleep(0.01)
    (tmp_path / "vmlinux").write_bytes(b"a rebuilt kernel")
    assert shape_key(req) != key


def fake_boot(boots: list, ready: bool = True):
    """A stand-in for run_guest: it records the request and writes what a real snapshot boot
    leaves (its console, the saved state), or boots a guest whose agent never gets ready."""
    def boot(r: GuestRequest) -> GuestRun:
        boots.append(r)
        time.sleep(0.05)  # long enough for a second worker to wait on the lock
        r.workdir.mkdir(parents=True)
        (r.workdir / "console.log").write_text("[    0.000000] Linux version 6.12\n")
        run = GuestRun(["qemu"], 0, False, 1.2, r.workdir / "console.log", r.workdir / "a")
        if ready:
            r.save_to.write_bytes(b"QEVM state")
            run.events.append({"event": READY})
        return run
    return boot


def test_a_shape_is_booted_once_however_many_workers_want_it(req, tmp_path):
    boots, got = [], []
    where = tmp_path / "snapshots"
    workers = [threading.Thread(target=lambda: got.append(
        snapshot_for(req, where, fake_boot(boots)))) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(boots) == 1 and boots[0].stop_on == READY and boots[0].save_to is not None
    assert len({snap.state for snap, _ in got}) == 1 and all(why == "" for _, why in got)
    snap = got[0][0]
    assert snap.state.read_bytes() == b"QEVM state" and not list(where.glob("*.part"))


def test_a_snapshot_that_could_not_be_made_is_remembered_with_why(req, tmp_path):
    boots = []
    snap, why = snapshot_for(req, tmp_path / "s", fake_boot(boots, ready=False))
    assert snap is None and "never said it was ready" in why
    again, why2 = snapshot_for(req, tmp_path / "s", fake_boot(boots))
    assert again is None and why2 == why and len(boots) == 1


def test_a_restored_case_console_starts_with_its_snapshots_boot(req, tmp_path):
    snap, _ = snapshot_for(req, tmp_path / "s", fake_boot([]))
    console = tmp_path / "console.log"
    console.write_text("[    1.3] Memory failure: 0x17dd: recovery action for dirty LRU page: "
                       "Recovered\n")
    with_boot(console, snap)
    lines = console.read_text().splitlines()
    assert lines[0].endswith("Linux version 6.12") and lines[1] == MARK
    assert "Recovered" in lines[2]


def record(boot, why=None, parent=None):
    return CaseRecord("v::s::r1", "v", "s", 1, "pass", "", boot=boot, boot_why=why,
                      parent=parent)


def test_the_reports_say_how_guests_started():
    assert guest_boot([record("snapshot"), record("snapshot")]) == "snapshot"
    assert guest_boot([record("cold", "asked"), record("cold", "asked")]) == "cold"
    assert guest_boot([record("snapshot"), record("cold", "x"), record("snapshot", None, "p")]) \
        == "snapshot, 1 of 2 cold"
    assert guest_boot([record(None)]) == ""  # an older farm's run says nothing


def test_guest_boot_in_farm_yaml_is_checked(tmp_path):
    farm = tmp_path / "farm.yaml"
    farm.write_text("source: {tarball: /usr/src/linux-source-6.12.tar.xz}\n"
                    "variants: {baseline: {}}\n"
                    f"scenarios: {REPO / 'guest-tests/scenarios.yaml'}\n"
                    "guest:\n  boot: warm\n")
    with pytest.raises(ConfigErrors) as e:
        load_farm(farm)
    assert any("guest.boot" in p and ":5" in p for p in map(str, e.value.problems)), \
        e.value.problems


def test_the_only_case_of_its_shape_boots_cold_and_says_why(tmp_path):
    from orchestrator.case import alone_cold
    from orchestrator.caserecords import CaseSpec
    for name in ("vmlinux", "initrd", "disk", "swap"):
        (tmp_path / name).write_bytes(name.encode())
    scenarios = {s.name: s for s in load_scenarios(REPO / "guest-tests" / "scenarios.yaml")}

    def spec(name, repeat=1):
        return CaseSpec.planned("v", scenarios[name], repeat, results=str(tmp_path),
                                machine=Machine(), kernel=str(tmp_path / "vmlinux"),
                                initrd=str(tmp_path / "initrd"), disk=str(tmp_path / "disk"),
                                swap=str(tmp_path / "swap"), timeout=60)
    plan = [spec("anon-madvise"), spec("anon-corrupt-pfn"), spec("swap-clean-madvise"),
            spec("writeback-madvise"), spec("writeback-madvise", 2)]
    boots = {(s.scenario.name, s.repeat): (s.boot, s.boot_why) for s in alone_cold(plan)}
    assert boots[("anon-madvise", 1)] == ("snapshot", "")
    assert boots[("writeback-madvise", 2)] == ("snapshot", "")
    assert boots[("swap-clean-madvise", 1)][0] == "cold"
    assert "the only case of its shape" in boots[("swap-clean-madvise", 1)][1]
    assert [s.boot for s in alone_cold([replace(p, boot="cold") for p in plan])] == ["cold"] * 5
