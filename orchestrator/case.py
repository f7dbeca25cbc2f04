"""One case: a (variant, scenario, repeat) in its own guest. It boots the guest, parses what
came back, judges it against the scenario's expected outcome, and writes case.json at once,
so that every finished case survives a crash or Ctrl-C of the rest of the run."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from .config import GUEST_INJECTORS, Scenario
from .parse import observe, parse_agent, parse_console
from .qemu import GuestRequest, Machine, run_guest
from .runner import Runner

# Errno values the guest reports when the kernel lacks a feature rather than misbehaving.
FEATURE_MISSING = {2: "ENOENT", 22: "EINVAL", 38: "ENOSYS", 95: "EOPNOTSUPP"}
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


def kernel_cmdline(s: Scenario) -> str:
    run = ["hwpoison-case", "--kind", s.page, "--injector", s.injector, "--access", s.access]
    if s.cleanup != "none":
        run += ["--cleanup", s.cleanup]
    words = ["console=ttyS0", "panic=-1", "rdinit=/init", f"farm.run={':'.join(run)}",
             f"farm.sysctl=vm.memory_failure_early_kill={s.early_kill},"
             f"vm.memory_failure_recovery={s.recovery}"]
    devices = iter("abcd")
    if s.needs_disk:
        words.append(f"farm.disk=/dev/vd{next(devices)}")
    if s.needs_swap:
        words.append(f"farm.swap=/dev/vd{next(devices)}")
    return " ".join(words)


def expected_of(s: Scenario) -> dict:
    """The scenario's expectations, plus the ones every case has unless it says otherwise:
    the guest survives without an Oops, BUG or WARNING."""
    exp = {"guest": "survived"}
    exp.update(s.expect)
    if exp["guest"] == "survived":
        exp.setdefault("kernel_errors", [])
    return exp


def judge(s: Scenario, obs: dict, *, infra_error: str | None = None,
          timeout: float = 0) -> tuple[str, str]:
    """(status, message): pass / fail / error / skip, by DESIGN.md's outcome table."""
    exp = expected_of(s)
    if infra_error:
        return "error", infra_error
    if obs["guest"] == "hung" and exp["guest"] != "hung":
        return "error", f"timeout after {timeout:.0f}s with no kernel verdict"
    if not obs["booted"] and obs["guest"] != "panicked":
        return "error", "the guest never reached its agent"
    if obs.get("setup_error"):
        if obs.get("setup_errno") in FEATURE_MISSING:
            return "skip", f"the guest cannot set up this page: {obs['setup_error']}"
        return "error", f"guest setup failed: {obs['setup_error']}"
    errno = obs.get("inject_errno")
    if s.injector in GUEST_INJECTORS and errno in FEATURE_MISSING and \
            exp.get("inject_errno", 0) != errno:
        return "skip", (f"the kernel refused {s.injector} with {FEATURE_MISSING[errno]}: "
                        "feature not available")
    diff = [f"{k}: expected {v!r}, observed {obs.get(k)!r}"
            for k, v in exp.items() if obs.get(k) != v]
    if diff:
        return "fail", "; ".join(diff)
    return "pass", "as expected"


def run_case(spec: dict, runner: Runner | None = None) -> dict:
    """Run the case described by a plan entry and write its case.json."""
    runner = runner or Runner()
    s = Scenario(**spec["scenario"])
    results = Path(spec["results"])
    case_dir = results / spec["dir"]
    case_dir.mkdir(parents=True, exist_ok=True)
    req = GuestRequest(machine=Machine(**spec["machine"]), kernel=Path(spec["kernel"]),
                       initrd=Path(spec["initrd"]), append=kernel_cmdline(s), workdir=case_dir,
                       timeout=spec["timeout"],
                       drives=drives(s, Path(spec["disk"]), Path(spec["swap"])))
    start = time.time()
    run = run_guest(req, runner)
    with open(run.console, errors="replace") as f:
        console = parse_console(f)
    obs = observe(console, parse_agent(run.agent.read_text(errors="replace").splitlines()),
                  timed_out=run.timed_out)
    obs["injections"] = run.injections
    status, message = judge(s, obs, infra_error=run.infra_error, timeout=req.timeout)
    record = {
        "id": spec["id"], "variant": spec["variant"], "scenario": s.name,
        "repeat": spec["repeat"], "status": status, "message": message,
        "page_kind": s.page, "injector": s.injector, "access": s.access,
        "policy": {"early_kill": s.early_kill, "recovery": s.recovery},
        "cleanup": s.cleanup, "why": s.why,
        "expected": expected_of(s), "observed": obs, "started": start,
        "seconds": run.seconds, "qemu_exit": run.exit_code, "command": run.cmd,
        "logs": {name: str(Path(spec["dir"]) / f"{name}.log")
                 for name in ("console", "agent", "qemu")},
    }
    tmp = case_dir / "case.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(case_dir / "case.json")
    return record


def scenario_dict(s: Scenario) -> dict:
    return asdict(s)
