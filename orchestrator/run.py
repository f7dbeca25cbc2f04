"""`farm run`: validate, build every variant, build the guest image, run the matrix under
pytest-xdist, then gather the case files into results.json and the reports."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .case import kernel_cmdline
from .config import INJECTORS, PAGE_KINDS, FarmConfig, Scenario
from .errors import FarmError, InfraError, UserError
from .image import GuestImage, build_image, with_kselftests
from .kernel import (
    BuildRequest,
    BuildResult,
    SourceTree,
    compile_kernel,
    plan_build,
    prepare_source,
    prepare_tree,
)
from .progress import Progress, fmt_seconds
from .pytest_plugin import PROGRESS
from .qemu import GuestRequest, Machine, probe_accel
from .results import write_json
from .runner import Runner
from .saved import report_dir

TOOLS = {"make": "make", "gcc": "gcc", "patch": "patch", "tar": "tar", "ccache": "ccache",
         "flex": "flex", "bison": "bison", "bc": "bc", "mke2fs": "e2fsprogs",
         "qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static"}


@dataclass(frozen=True)
class RunOptions:
    results: Path | None = None
    variants: tuple[str, ...] = ()
    scenarios: str | None = None
    page_kinds: tuple[str, ...] = ()
    injectors: tuple[str, ...] = ()
    jobs: int | None = None
    repeat: int | None = None
    shard: tuple[int, int] | None = None  # (K, N): the K-th of N parts of the matrix, from 1


def shard_of(scenarios: list[Scenario], shard: tuple[int, int] | None) -> list[Scenario]:
    """The scenarios of shard K of N: every N-th from the K-th, so the page kinds spread
    over the shards alike. A scenario's variants and repeats stay in one shard, so each
    shard has whole A/B verdicts of its own."""
    if not shard:
        return scenarios
    k, n = shard
    part = scenarios[k - 1::n]
    if not part:
        raise UserError(f"--shard {k}/{n}: no scenario falls in this shard "
                        f"({len(scenarios)} scenarios for {n} shards)")
    return part


def select(cfg: FarmConfig, opts: RunOptions) -> tuple[list[str], list[Scenario]]:
    """The variants and scenarios this run covers; asking for one that does not exist is
    bad input."""
    variants = list(cfg.variants)
    if opts.variants:
        unknown = [v for v in opts.variants if v not in cfg.variants]
        if unknown:
            raise UserError(f"--variants: unknown variant(s) {', '.join(unknown)} "
                            f"(known: {', '.join(cfg.variants)})")
        variants = list(opts.variants)
    for flag, wanted, known in (("--page-kind", opts.page_kinds, (*PAGE_KINDS, "kselftest")),
                                ("--injector", opts.injectors, (*INJECTORS, "kselftest"))):
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise UserError(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    scenarios = [s for s in cfg.scenarios
                 if (not opts.page_kinds or s.page in opts.page_kinds)
                 and (not opts.injectors or s.injector in opts.injectors)]
    if opts.scenarios:
        pats = [p for p in opts.scenarios.split(",") if p]
        scenarios = [s for s in scenarios if any(fnmatch.fnmatch(s.name, p) for p in pats)]
    if not scenarios:
        raise UserError("no scenario matches the filters (--scenarios, --page-kind, "
                        "--injector); `farm plan` lists them")
    return variants, scenarios


def _shard_meta(scenarios: list[Scenario], shard: tuple[int, int] | None) -> dict | None:
    """What `farm merge` needs to join the shards: which one this is, and the whole
    matrix, so that the cases of a shard that never came back are still accounted for."""
    if not shard:
        return None
    return {"index": shard[0], "count": shard[1], "scenarios": [asdict(s) for s in scenarios]}


def plan_doc(cfg: FarmConfig, opts: RunOptions) -> dict:
    """What a run with these options would execute; builds and boots nothing."""
    variants, every = select(cfg, opts)
    scenarios = shard_of(every, opts.shard)
    repeat = opts.repeat or cfg.repeat
    rows = [{"scenario": s.name, "page_kind": s.page, "injector": s.injector,
             "access": s.access, "policy": {"early_kill": s.early_kill, "recovery": s.recovery},
             "cleanup": s.cleanup, "kselftest": s.kselftest or None, "sysctl": s.sysctl,
             "expect": s.expect, "why": s.why} for s in scenarios]
    return {"config": str(cfg.path), "variants": variants,
            "base": cfg.base if cfg.base in variants else variants[0], "repeat": repeat,
            "shard": f"{opts.shard[0]}/{opts.shard[1]}" if opts.shard else None,
            "cases": len(variants) * len(scenarios) * repeat, "scenarios": rows}


def plan_text(doc: dict) -> str:
    out = [f"{len(doc['scenarios'])} scenarios x {len(doc['variants'])} variants "
           f"({', '.join(doc['variants'])}; base {doc['base']}) x {doc['repeat']} "
           f"repeat(s) = {doc['cases']} cases"
           + (f" (shard {doc['shard']})" if doc.get("shard") else ""), ""]
    head = ("scenario", "page kind", "injector", "access", "policy")
    rows = [(r["scenario"], r["page_kind"], r["injector"], r["access"],
             f"early_kill={r['policy']['early_kill']}"
             + ("" if r["policy"]["recovery"] else " recovery=0")
             + ("" if r["cleanup"] == "none" else f" cleanup={r['cleanup']}"))
            for r in doc["scenarios"]]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    for row in (head, *rows):
        out.append("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out) + "\n"


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise InfraError("missing tools; on Debian: apt-get install " + " ".join(missing))


def log_commands(results: Path) -> logging.Handler:
    """Every command the farm runs, here or over SSH, into the result directory's farm.log."""
    handler = logging.FileHandler(results / "farm.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root = logging.getLogger("farm")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler


def run(cfg: FarmConfig, opts: RunOptions, progress: Progress | None = None) -> int:
    progress = progress or Progress()
    variants, every = select(cfg, opts)
    scenarios = shard_of(every, opts.shard)
    base = cfg.base if cfg.base in variants else variants[0]
    jobs = opts.jobs or cfg.jobs
    repeat = opts.repeat or cfg.repeat
    check_tools()
    started = datetime.now(UTC)
    run_id = started.strftime("%Y%m%d-%H%M%S")
    results = (opts.results or cfg.path.parent / "results" / run_id).resolve()
    results.mkdir(parents=True, exist_ok=True)
    if not opts.results:
        latest = results.parent / "latest"
        if latest.is_symlink() or not latest.exists():
            latest.unlink(missing_ok=True)
            latest.symlink_to(results.name)
    handler = log_commands(results)
    runner = Runner()
    meta = {"id": run_id, "farm_version": __version__, "started": started.timestamp(),
            "started_iso": started.isoformat(timespec="seconds"), "host": socket.gethostname(),
            "config": str(cfg.path), "base": base, "jobs": jobs, "repeat": repeat,
            "scenarios_file": str(cfg.scenarios_path), "guest_tests": str(cfg.guest_tests),
            "argv": sys.argv, "interrupted": False, "shard": _shard_meta(every, opts.shard)}
    variant_docs: dict[str, dict] = {v: {"description": cfg.variants[v].description,
                                         "patches": [str(p) for p in cfg.variants[v].patches]}
                                     for v in variants}
    plan: list[dict] = []
    t0 = time.monotonic()
    try:
        progress.say(f"results: {results}")
        src = prepare_source(cfg.source, cfg.cache, runner, progress)
        meta["source"] = {"describe": cfg.source.describe(), "digest": src.digest,
                          "path": str(src.path)}
        builds = _build_variants(cfg, variants, scenarios, src, runner, progress)
        for v in variants:
            variant_docs[v]["build"] = builds[v].to_json()
        image = build_image(cfg.guest_tests, cfg.cache, runner)
        machine = Machine(machine=cfg.guest.machine, cpu=cfg.guest.cpu,
                          memory_mb=cfg.guest.memory_mb)
        first = builds[variants[0]]
        accel, why = _accelerator(cfg, GuestRequest(
            machine, Path(first.boot), image.initrd, kernel_cmdline(scenarios[0]),
            results / "accel-probe", cfg.guest.timeout), runner)
        meta.update(accelerator=accel, accel_reason=why, image={
            k: str(v) for k, v in asdict(image).items()})
        progress.say(f"accelerator: {why}")
        plan = _plan(cfg, variants, scenarios, repeat, builds, image,
                     replace(machine, accel=accel), results)
        write_json(results / "plan.json", {"cases": plan})
        write_json(results / "run.json", {"run": meta, "variants": variant_docs})
        progress.say(f"running {len(plan)} cases ({len(variants)} variants x "
                     f"{len(scenarios)} scenarios x {repeat}), {jobs} guests at a time")
        _run_cases(results, jobs, len(plan), runner, progress)
        why_missing = "not run: a pytest worker died before the case finished"
    except KeyboardInterrupt:
        meta["interrupted"] = True
        why_missing = "not run: the run was interrupted (Ctrl-C)"
        progress.say("interrupted: writing what was gathered so far")
    except FarmError:
        if not plan:
            logging.getLogger("farm").removeHandler(handler)
            raise
        why_missing = "not run: the farm failed before the case finished"
    finally:
        meta["seconds"] = round(time.monotonic() - t0, 1)
    write_json(results / "run.json", {"run": meta, "variants": variant_docs})
    code = report_dir(results, plan_missing=why_missing)
    progress.say(f"done in {fmt_seconds(meta['seconds'])}: {results}")
    logging.getLogger("farm").removeHandler(handler)
    return code


def _build_variants(cfg: FarmConfig, variants: list[str], scenarios: list[Scenario],
                    src: SourceTree, runner: Runner, progress: Progress) -> dict[str, BuildResult]:
    """Every variant's kernel (and its own selftest binaries), built or found in the cache.
    Every patch series is applied before anything is compiled, so a patch that does not
    apply stops the run at once."""
    kselftests = tuple(sorted({s.kselftest for s in scenarios if s.kselftest}))
    reqs = {v: BuildRequest(cfg.variants[v], src, cfg.base_config, cfg.fragments, cfg.cache,
                            (os.cpu_count() or 1) + 1, kselftests) for v in variants}
    plans = {}
    for v in variants:
        t = time.monotonic()
        plans[v] = plan_build(reqs[v], runner)
        if plans[v].cached:
            plans[v].cached.seconds = round(time.monotonic() - t, 2)
    for v in variants:
        if not plans[v].cached:
            prepare_tree(reqs[v], plans[v], runner, progress)
    builds = {}
    for v in variants:
        if plans[v].cached:
            builds[v] = plans[v].cached
            progress.say(f"{v}: kernel {builds[v].release} already built "
                         f"({plans[v].key}), found in {builds[v].seconds:.2f}s")
        else:
            builds[v] = compile_kernel(reqs[v], plans[v], runner, progress)
    return builds


def _plan(cfg: FarmConfig, variants: list[str], scenarios: list[Scenario], repeat: int,
          builds: dict[str, BuildResult], image: GuestImage, machine: Machine,
          results: Path) -> list[dict]:
    """One entry per (variant, scenario, repeat): everything a worker needs to run the case."""
    plan = []
    for v in variants:
        initrd = with_kselftests(image, builds[v].kselftests, Path(builds[v].kernel).parent)
        for s in scenarios:
            for r in range(1, repeat + 1):
                plan.append({"id": f"{v}::{s.name}::r{r}", "variant": v, "repeat": r,
                             "scenario": asdict(s), "results": str(results),
                             "dir": f"cases/{v}/{s.name}/r{r}", "machine": asdict(machine),
                             "kernel": builds[v].boot, "initrd": str(initrd),
                             "disk": str(image.disk), "swap": str(image.swap),
                             "timeout": cfg.guest.timeout,
                             "kselftest_missing": builds[v].kselftest_errors.get(
                                 s.kselftest, "")})
    return plan


def _accelerator(cfg: FarmConfig, probe: GuestRequest, runner: Runner) -> tuple[str, str]:
    """probe_accel, remembered until the host reboots: a KVM that hangs costs the probe's
    whole timeout, and the answer does not change while the host is up."""
    if cfg.guest.accel != "auto":
        return probe_accel(cfg.guest.accel, probe, runner)
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    memo = cfg.cache / "accel-probe.json"
    try:
        seen = json.loads(memo.read_text())
        if boot and seen.get("boot_id") == boot and seen.get("qemu") == probe.machine.binary:
            return seen["accel"], f"{seen['reason']}, probed earlier since this host booted"
    except (OSError, ValueError, KeyError):
        pass
    accel, why = probe_accel("auto", probe, runner)
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_json(memo, {"boot_id": boot, "qemu": probe.machine.binary, "accel": accel,
                      "reason": why})
    return accel, why


class CaseProgress:
    """Turns the case runner's progress lines into what the user sees: one line per finished
    case, and a status line with done, running and failed guests and the time so far."""

    def __init__(self, total: int, progress: Progress, log):
        self.total, self.progress, self.log = total, progress, log
        self.running: set[str] = set()
        self.counts = dict.fromkeys(("pass", "fail", "error", "skip"), 0)

    def line(self, line: str) -> None:
        self.log.write(line + "\n")
        at = line.find(PROGRESS)  # pytest's own progress dots may precede it
        if at < 0:
            return
        try:
            ev = json.loads(line[at + len(PROGRESS):])
        except ValueError:
            return
        if ev.get("event") == "start":
            self.running.add(ev["id"])
        elif ev.get("event") == "done":
            self.running.discard(ev["id"])
            status = ev.get("status", "error")
            self.counts[status] = self.counts.get(status, 0) + 1
            variant, scenario, rep = (ev["id"].split("::") + ["", ""])[:3]
            note = "" if status == "pass" else f": {ev.get('message', '')}"
            self.progress.say(f"{status.upper():5} {variant} / {scenario} {rep} "
                              f"({ev.get('seconds', 0):.1f}s){note}")
        done = sum(self.counts.values())
        self.progress.status(
            f"guests: {done}/{self.total} done, {len(self.running)} running, "
            f"{self.counts['fail']} failed, {self.counts['error']} errors")


def _run_cases(results: Path, jobs: int, total: int, runner: Runner,
               progress: Progress) -> None:
    plan = results / "plan.json"
    cmd = [sys.executable, "-m", "pytest", "-p", "orchestrator.pytest_plugin",
           "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", results,
           "--farm-plan", plan, plan, "-n", str(jobs), "-q", "--no-header", "-rfEs"]
    with open(results / "pytest.log", "w") as log:
        res = runner.run(cmd, cwd=results, check=False,
                         on_line=CaseProgress(total, progress, log).line)
    if res.returncode not in (0, 1):
        tail = "\n".join(res.output.splitlines()[-15:])
        raise InfraError(f"the case runner (pytest) exited with {res.returncode}; "
                         f"log: {results / 'pytest.log'}\n{tail}")
