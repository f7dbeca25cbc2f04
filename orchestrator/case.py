"""One case: a (variant, scenario, repeat) in its own guest. It boots the guest with the
case's command line and disks, has the logs judged (judge.py), and writes case.json at once,
so that every finished case survives a crash or Ctrl-C of the rest of the run."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from .caserecords import CaseRecord, CaseSpec
from .coverage import for_case
from .files import write_json
from .guest import run_guest
from .judge import expected_of, judge_logs, ktap_subcases
from .qemu import GuestRequest, GuestRun
from .registry import KSELFTEST_AUTO, kselftest_file
from .runner import Runner
from .scenarios import Scenario
from .snapshot import shape_key, snapshot_for, with_boot

WRITEBACK_THROTTLE = "throttling.bps-write=16384"  # keeps a written page under writeback


def drives(s: Scenario, disk: Path, swap: Path) -> tuple[tuple[Path, str], ...]:
    """The guest's virtio disks, in /dev/vda, /dev/vdb order: the ext2 disk for file
    kinds (throttled for the writeback kind), a swap disk for swap-cache kinds."""
    out = []
    if s.needs_disk:
        out.append((disk, WRITEBACK_THROTTLE if s.page == "writeback" else ""))
    if s.needs_swap:
        out.append((swap, ""))
    return tuple(out)


def kselftest_binary(prog: str) -> str:
    """Where a kselftest program lives in the guest, under /guest-tests."""
    return "kselftest/" + kselftest_file(prog)


BOOT_WORDS = ("console=ttyS0", "panic=-1", "no_timer_check", "rdinit=/init")


def kernel_cmdline(s: Scenario, gcov: tuple[str, ...] | list[str] = ()) -> str:
    """A cold-booted guest's command line: the kernel's words (BOOT_WORDS), then what the
    agent sets up and runs (case_words). no_timer_check: the boot-time check that the
    IO-APIC timer ticks is a busy-wait on emulated time; on a loaded TCG host it misses its
    ticks and panics ("IO-APIC + timer doesn't work!") before the agent starts, which made an
    overloaded CI runner report a failing case of a kernel that was fine."""
    return " ".join([*BOOT_WORDS, *case_words(s, gcov)])


def case_words(s: Scenario, gcov: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The agent's words for this case (farm.run, farm.sysctl, its disks, the profiled tree
    files whose counters it zeroes and sends back): on the command line of a cold boot, one
    line on the agent channel of a guest restored from a snapshot (snapshot.py). A race's
    guest panics on an Oops (kernel.panic_on_oops): a lost race leaves a lock held, and a
    guest that then waits out its timeout would tell nothing more."""
    if s.kselftest == KSELFTEST_AUTO:
        run = ["kselftest-all"]  # the agent runs kselftest/auto/*, one after the other
    elif s.kselftest:
        run = [kselftest_binary(s.kselftest)]
    elif s.program:  # a program from outside the tree, under /guest-tests/program
        run = [f"program/{s.name}", *s.args]
    elif s.race:
        run = ["hwpoison-case", "--kind", s.page, "--injector", s.injector, "--race", s.race,
               "--rounds", str(s.rounds), "--seed", str(s.seed)]
    else:
        run = ["hwpoison-case", "--kind", s.page, "--injector", s.injector, "--access",
               s.access]
    if s.cleanup != "none":
        run += ["--cleanup", s.cleanup]
    sysctl = {"vm.memory_failure_early_kill": s.early_kill,
              "vm.memory_failure_recovery": s.recovery,
              **({"kernel.panic_on_oops": 1} if s.race else {}), **s.sysctl}
    words = [f"farm.run={':'.join(run)}",
             "farm.sysctl=" + ",".join(f"{k}={v}" for k, v in sysctl.items())]
    devices = iter("abcd")
    if s.needs_disk:
        words.append(f"farm.disk=/dev/vd{next(devices)}")
    if s.needs_swap:
        words.append(f"farm.swap=/dev/vd{next(devices)}")
    if gcov:
        words.append("farm.gcov=" + ",".join(rel.removesuffix(".c") for rel in gcov))
    return words


SNAPSHOT_APPEND = " ".join([*BOOT_WORDS, "farm.snapshot=1"])


def snapshot_shape(req: GuestRequest) -> GuestRequest:
    """The guest a case's snapshot is made of: the case's guest with the kernel's words only
    (the agent is told the case's own after the restore)."""
    return replace(req, append=SNAPSHOT_APPEND)


def guest_request(spec: CaseSpec) -> GuestRequest:
    """The guest a planned case boots cold: its machine, kernel, image, disks, command line."""
    s = spec.scenario
    machine = replace(spec.machine, cpus=s.cpus) if s.cpus else spec.machine
    return GuestRequest(machine=machine, kernel=Path(spec.kernel), initrd=Path(spec.initrd),
                        append=kernel_cmdline(s, spec.coverage_files),
                        workdir=Path(spec.results) / spec.dir, timeout=spec.timeout,
                        drives=drives(s, Path(spec.disk), Path(spec.swap)),
                        sockets=Path(spec.sockets) if spec.sockets else None)


def alone_cold(specs: list[CaseSpec]) -> list[CaseSpec]:
    """The planned cases, those that would be the only case of their shape booting cold: a
    snapshot boot and a restore cost more than the one boot they would save."""
    def key(spec: CaseSpec) -> str:
        return shape_key(snapshot_shape(guest_request(spec)))
    keys = {spec.id: key(spec) for spec in specs if spec.runnable and spec.boot == "snapshot"
            and not spec.kselftest_missing}
    count = Counter(keys.values())
    return [replace(spec, boot="cold", boot_why="the only case of its shape in the run: a "
                    "snapshot would cost more than it saves")
            if spec.id in keys and count[keys[spec.id]] == 1 else spec for spec in specs]


def run_case(spec: CaseSpec, runner: Runner | None = None) -> CaseRecord:
    """Run a planned case and write its case.json."""
    runner = runner or Runner()
    s = spec.scenario
    req = guest_request(spec)
    case_dir = req.workdir
    case_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    missing = spec.kselftest_missing
    if missing:  # nothing to boot: the variant's tree has no such program
        run = GuestRun([], None, False, 0.0, case_dir / "console.log", case_dir / "agent.log")
        run.console.write_text("")
        run.agent.write_text("")
        boot, why = None, None
    else:
        run, boot, why = _guest(spec, req, runner)
    v = judge_logs(s, run.console, run.agent, timed_out=run.timed_out,
                   infra_error=run.infra_error, timeout=req.timeout, missing=missing,
                   injections=run.injections)
    record = CaseRecord.of_spec(
        spec, v.status, v.message, expected=expected_of(s), observed=v.observed.to_json(),
        started=start, seconds=run.seconds, qemu_exit=run.exit_code, command=run.cmd,
        timed_out=run.timed_out, infra_error=run.infra_error, timeout=req.timeout,
        kselftest_missing=missing,
        logs={name: str(Path(spec.dir) / f"{name}.log") for name in ("console", "agent", "qemu")},
        coverage=for_case(spec, v.events, case_dir) if spec.coverage_files else None,
        kselftest=s.kselftest or None, boot=boot, boot_why=why or None)
    if s.kselftest or s.program:
        record = replace(record, subcases=ktap_subcases(record, v.ktap)
                         if v.ktap and s.result != "exit" else ())
    write_json(case_dir / "case.json", record.to_json())
    return record



def _guest(spec: CaseSpec, req: GuestRequest, runner: Runner) -> tuple[GuestRun, str, str]:
    """The case's guest, restored from the snapshot of its shape or, where there is none,
    booted cold: (its run, "snapshot" or "cold", why cold). qemu.log ends with which."""
    snap, why = None, spec.boot_why or "the run asked for cold boots (--boot cold, or " \
        "guest.boot: cold)"
    if spec.boot == "snapshot" and not spec.sockets:
        why = "the case has no run directory to keep snapshots in"
    elif spec.boot == "snapshot":
        snap, why = snapshot_for(snapshot_shape(req), Path(spec.sockets) / "snapshots",
                                 lambda r: run_guest(r, runner))
    if snap is not None:
        words = " ".join(case_words(spec.scenario, spec.coverage_files))
        run = run_guest(replace(snapshot_shape(req), restore=snap.state, case_line=words),
                        runner)
        if not run.restore_failed:
            with_boot(run.console, snap)
            _said(req.workdir, f"# boot: restored from snapshot {snap.key}; its case: {words}")
            return run, "snapshot", ""
        why = f"the snapshot did not load ({run.infra_error})"
        (req.workdir / "qemu.log").replace(req.workdir / "qemu-restore.log")
    run = run_guest(req, runner)
    _said(req.workdir, f"# boot: cold: {why}")
    return run, "cold", why


def _said(workdir: Path, line: str) -> None:
    with open(workdir / "qemu.log", "a") as f:
        f.write(line + "\n")
