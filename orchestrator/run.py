"""`farm run`: the planned matrix carried out. Every variant is built (or found in the
cache), the guest image made, the accelerator chosen, the cases run under pytest-xdist
(scheduler.py), the verdicts other than same confirmed; whatever ends the run, its result
directory gets results.json and every report from what was gathered."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from .accel import accelerator
from .affected import save_base_coverage
from .build import BuildRequest, BuildResult, compile_kernel, plan_build, prepare_tree, published
from .case import alone_cold, kernel_cmdline
from .caserecords import CaseSpec, plan_json
from .errors import FarmError, InfraError, UserError
from .farmfile import FarmConfig, Source
from .files import OwnedDir, prune, results_for, write_json
from .image import GuestImage, build_image, with_kselftests
from .kselftests import kselftests_of
from .options import RunOptions
from .outputs import report_dir
from .plan import (
    Matrix,
    confirmations,
    fragments_with,
    run_meta,
    shard_meta,
    skeleton,
    variant_docs,
)
from .programs import programs_of
from .progress import Progress, fmt_seconds
from .qemu import GuestRequest, Machine
from .results import RunInfo, SourceInfo, VariantInfo, load_cases, write_run_json
from .runner import Runner, log_commands, stop_logging
from .scheduler import run_cases
from .signals import deferred_signals
from .source import SourceTree, prepare_source

SOCKETS = "farm-sockets"  # the run's directory for its guests' sockets, under /tmp
TOOLS = {"make": "make", "gcc": "gcc", "patch": "patch", "tar": "tar", "ccache": "ccache",
         "flex": "flex", "bison": "bison", "bc": "bc", "mke2fs": "e2fsprogs",
         "qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static"}


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise InfraError("missing tools; on Debian: apt-get install " + " ".join(missing))


@dataclass
class _Run:
    """What a run has gathered so far; whatever ends it, reports are written from this."""
    results: Path
    meta: RunInfo
    variants: dict[str, VariantInfo]
    plan: list[CaseSpec]
    sockets: Path  # the directory for its guests' sockets

    def save(self) -> None:
        write_json(self.results / "plan.json", plan_json(self.plan))
        write_run_json(self.results, self.meta, self.variants)

    def note(self, **changes) -> None:
        self.meta = self.meta.but(**changes)


def run(cfg: FarmConfig, opts: RunOptions, progress: Progress | None = None) -> int:
    progress = progress or Progress()
    m = Matrix.of(cfg, opts)
    check_tools()
    started = datetime.now(UTC)
    run_id, results, lock = results_for(opts.results, cfg.path.parent / "results", started)
    try:
        handler = log_commands(results)
        tmp = Path(tempfile.gettempdir())
        prune(tmp, SOCKETS)  # those of runs that were killed
        sockets = OwnedDir(tmp, SOCKETS)
        try:
            meta = replace(run_meta(cfg, m, run_id, started),
                           scenarios_file=str(cfg.scenarios_path),
                           guest_tests=str(cfg.guest_tests), argv=sys.argv,
                           affected=opts.affected, shard=shard_meta(m.every, opts.shard))
            state = _Run(results, meta, variant_docs(cfg, m),
                         skeleton(m.variants, m.scenarios, m.repeat, m.kernels,
                                  results=str(results),
                                  sockets=str(sockets.path)), sockets.path)
            return _run(cfg, m, state, progress, Runner(sandbox=not opts.no_sandbox))
        finally:
            sockets.remove()
            stop_logging(handler)
    finally:
        lock.release()


def _run(cfg: FarmConfig, m: Matrix, state: _Run, progress: Progress, runner: Runner) -> int:
    state.save()
    why_missing = "not run"
    error: FarmError | None = None
    t0 = time.monotonic()
    try:
        progress.say(f"results: {state.results}")
        trees = _sources(cfg, m, state, runner, progress)
        _build(cfg, m, trees, state, runner, progress)
        if any(v.build.ok for v in state.variants.values()):
            _guests(cfg, state, m, runner, progress)
        why_missing = "not run: a pytest worker died before the case finished"
    except KeyboardInterrupt as e:
        how = getattr(e, "how", "Ctrl-C")
        state.note(interrupted=how)
        why_missing = f"not run: the run was interrupted ({how})"
        progress.say(f"interrupted ({how}): writing what was gathered so far")
    except FarmError as e:
        error = e
        state.note(error=str(e))
        why_missing = f"not run: {str(e).splitlines()[0]}"
    finally:
        state.note(seconds=round(time.monotonic() - t0, 1))
    with deferred_signals():
        state.save()
        code = report_dir(state.results, plan_missing=why_missing, ended=error and (
            error.exit_code, "bad input" if isinstance(error, UserError) else
            "an infrastructure error"))
    base = state.variants[m.base].build
    if m.coverage and base and base.coverage and not state.meta.interrupted:
        src = SourceTree(Path(state.meta.source.path), state.meta.source.digest)
        save_base_coverage(cfg, m, src, base, state.results, runner)
    progress.say(f"done in {fmt_seconds(state.meta.seconds)}: {state.results}")
    if error is not None and code != 1:
        raise error
    return code


def _sources(cfg: FarmConfig, m: Matrix, state: _Run, runner: Runner,
             progress: Progress) -> dict[Source, SourceTree]:
    """Each kernel source of the run's variants, unpacked once (the base's is the run's
    source in run.json; a variant with a source of its own has it in its record)."""
    trees: dict[Source, SourceTree] = {}
    for v in m.variants:
        source = cfg.source_of(v)
        if source not in trees:
            trees[source] = prepare_source(source, cfg.cache, runner, progress)
        tree = trees[source]
        info = SourceInfo(source.describe(), tree.digest, str(tree.path))
        if v == m.base:
            state.note(source=info)
        if state.variants[v].source is not None:
            state.variants[v] = state.variants[v].but(source=info)
    return trees


def _build(cfg: FarmConfig, m: Matrix, trees: dict[Source, SourceTree], state: _Run,
           runner: Runner, progress: Progress) -> None:
    """Every variant's kernel, in run.json as soon as all are; the cases of a variant whose
    kernel did not build are planned as not run, saying why."""
    builds = build_variants(cfg, m, trees, runner, progress, state.results)
    state.variants = {v: info.but(build=builds[v]) for v, info in state.variants.items()}
    state.save()
    state.plan = [spec if builds[spec.variant].ok else replace(
        spec, not_run=f"not run: the kernel of {spec.variant} did not build "
                      f"({builds[spec.variant].error}; log {builds[spec.variant].log})")
        for spec in state.plan]


def build_variants(cfg: FarmConfig, m: Matrix, trees: dict[Source, SourceTree],
                   runner: Runner, progress: Progress, results: Path) -> dict[str, BuildResult]:
    """Every variant's kernel (and its own selftest binaries), built or found in the cache.
    Every patch series is applied before anything is compiled, so a patch that does not
    apply stops the run at once. A kernel that does not build is a result of its own: the
    other variants still build and run."""
    kselftests = tuple(sorted({s.kselftest for s in m.scenarios if s.kselftest}))
    (results / "builds").mkdir(exist_ok=True)
    reqs = {v: BuildRequest(cfg.variants[v], trees[cfg.source_of(v)], cfg.base_config,
                            fragments_with(cfg, m.layers),
                            cfg.cache, (os.cpu_count() or 1) + 1, kselftests,
                            log=results / "builds" / f"{v}.log", coverage=m.coverage,
                            layers=m.layers)
            for v in m.variants}
    plans = {}
    for v in m.variants:
        t = time.monotonic()
        plans[v] = plan_build(reqs[v], runner)
        if plans[v].cached:
            plans[v].cached = replace(plans[v].cached, seconds=round(time.monotonic() - t, 2))
    # Variants of one key (an A/A pair) are one build: the first builds, the others take it.
    first = {}
    for v in m.variants:
        first.setdefault(plans[v].key, v)
    try:
        for v in m.variants:
            if not plans[v].cached and first[plans[v].key] == v:
                prepare_tree(reqs[v], plans[v], runner, progress)
        builds: dict[str, BuildResult] = {}
        for v in m.variants:
            twin = first[plans[v].key]
            if twin != v and not plans[v].cached:
                plans[v].cached = published(reqs[v], plans[v].out)
                if plans[v].cached is None:  # its twin's build failed: so did this one
                    builds[v] = replace(builds[twin], variant=v)
                    continue
            builds[v] = _build_one(reqs[v], plans[v], runner, progress, results)
        return builds
    finally:
        for p in plans.values():
            if p.work:
                p.work.remove()


def _build_one(req: BuildRequest, plan, runner: Runner, progress: Progress,
               results: Path) -> BuildResult:
    """One variant's kernel and its selftests. The selftests are cached apart from the
    kernel; those still to build come from the tree the kernel builds from, before its build
    removes it (else from a tree of their own)."""
    v = req.variant.name
    tests = kselftests_of(req, plan, runner, progress) if req.kselftests else ({}, {})
    if plan.cached:
        build = plan.cached
        progress.say(f"{v}: kernel {build.release} already built ({plan.key}), found in "
                     f"{build.seconds:.2f}s")
    else:
        build = compile_kernel(req, plan, runner, progress)
    if build.ok:
        build = replace(build, kselftests=tests[0], kselftest_errors=tests[1])
    if build.config and Path(build.config).is_file():  # the run's own copy
        shutil.copyfile(build.config, results / "builds" / f"{v}.config")
    return build


def _guests(cfg: FarmConfig, state: _Run, m: Matrix, runner: Runner,
            progress: Progress) -> None:
    """The guest image, the accelerator, the cases, then the confirmations of every verdict
    that is not `same`."""
    results = state.results
    builds = {v: info.build for v, info in state.variants.items()}
    image = build_image(cfg.guest_tests, cfg.cache, runner)
    machine = Machine(machine=cfg.guest.machine, cpu=cfg.guest.cpu,
                      memory_mb=cfg.guest.memory_mb, cpus=cfg.guest.cpus)
    first = next(b for b in builds.values() if b.ok)
    accel, why = accelerator(cfg.guest.accel, GuestRequest(
        machine, Path(first.boot), image.initrd, kernel_cmdline(m.scenarios[0]),
        results / "accel-probe", cfg.guest.timeout, sockets=state.sockets), cfg.cache, runner)
    state.note(accelerator=accel, accel_reason=why,
               image={k: str(v) for k, v in asdict(image).items()})
    progress.say(f"accelerator: {why}")
    machine = replace(machine, accel=accel)
    programs, unbuilt = programs_of(m.scenarios, cfg.cache, runner,
                                    results / "builds" / "programs.log")
    initrds = {v: with_kselftests(image, b.kselftests, cfg.cache / "kselftests", programs)
               for v, b in builds.items() if b.ok}
    state.plan = [spec if spec.not_run is not None else _fill(
        spec, cfg, builds[spec.variant], initrds[spec.variant], image, machine, unbuilt, m.boot)
        for spec in state.plan]
    state.plan = alone_cold(state.plan)
    state.save()
    todo = [s for s in state.plan if s.not_run is None]
    progress.say(f"running {len(todo)} cases ({len({s.variant for s in state.plan})} variants x "
                 f"{len({s.scenario.name for s in state.plan})} scenarios x "
                 f"{m.repeat}), {m.jobs} guests at a time")
    run_cases(results, results / "plan.json", m.jobs, len(todo), runner, progress)
    extra = confirmations(load_cases(results), state.plan, m.base, m.confirm, m.bases) \
        if m.confirm > 0 else []
    if not extra:
        return
    state.plan += extra
    state.save()
    write_json(results / "confirm.json", plan_json(extra))
    names = sorted({s.scenario.name for s in extra})
    progress.say(f"confirming {len(names)} verdict(s) other than same with {m.confirm} more "
                 f"run(s) of base and variant: {len(extra)} cases ({', '.join(names[:6])}"
                 + (", ..." if len(names) > 6 else "") + ")")
    run_cases(results, results / "confirm.json", m.jobs, len(extra), runner, progress)


def _fill(spec: CaseSpec, cfg: FarmConfig, build: BuildResult, initrd: Path,
          image: GuestImage, machine: Machine, unbuilt: dict[str, str],
          boot: str) -> CaseSpec:
    """What a worker needs to run a planned case: the kernel, the image, the machine, and
    why its selftest or program has no binary (unbuilt: a program's, by scenario)."""
    s = spec.scenario
    return replace(spec, machine=machine, kernel=build.boot, initrd=str(initrd),
                   disk=str(image.disk), swap=str(image.swap), timeout=cfg.guest.timeout,
                   boot=boot,
                   coverage_dir=build.coverage, coverage_files=tuple(build.coverage_files),
                   kselftest_missing=build.kselftest_errors.get(s.kselftest, "")
                   if s.kselftest else unbuilt.get(s.name, ""))
