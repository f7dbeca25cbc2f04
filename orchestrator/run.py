"""`farm run`: validate, build every variant, build the guest image, run the matrix under
pytest-xdist, then gather the case files into results.json and the reports."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .affected import explain, select_affected
from .affected import load as load_coverage
from .affected import save as save_coverage
from .case import kernel_cmdline
from .config import (
    ACCESS_STEPS,
    COVERAGE_DEFAULT,
    INJECTORS,
    PAGE_KINDS,
    FarmConfig,
    Scenario,
    steps_for,
)
from .coverage import Union
from .errors import FarmError, InfraError, UserError
from .files import TOKEN, OwnedDir, ResultLock, claim, os_error, prune, write_json
from .image import GuestImage, build_image, with_kselftests
from .kernel import (
    BuildRequest,
    BuildResult,
    SourceTree,
    build_key,
    compile_kernel,
    compiler_version,
    kselftests_of,
    plan_build,
    prepare_source,
    prepare_tree,
)
from .progress import Progress, fmt_seconds
from .pytest_plugin import PROGRESS
from .qemu import GuestRequest, Machine, probe_accel
from .records import CaseSpec, parse_case_id, plan_json
from .results import CONFIRMED, compare, load_cases
from .runner import Runner, deferred_signals
from .saved import report_dir

SOCKETS = "farm-sockets"  # the run's directory for its guests' sockets, under /tmp
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
    confirm: int | None = None  # more runs of base and variant for each verdict not `same`
    fail_on: tuple[str, ...] | None = None  # verdicts that fail the run beside regression
    tier: str | None = None  # default | full (default: farm.yaml's tier, else default)
    coverage: tuple[str, ...] | None = None  # files to profile (default: farm.yaml's)
    names: tuple[str, ...] | None = None  # only these scenarios (--affected's choice)
    layers: tuple[str, ...] | None = None  # config layers added to every variant (--layer)
    affected: str = ""  # --affected's account of its choice (run.json, the summary)
    seed: int | None = None  # the races' seed (--seed); None: a new one for this run


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
    matching = [s for s in cfg.scenarios
                if (not opts.page_kinds or s.page in opts.page_kinds)
                and (not opts.injectors or s.injector in opts.injectors)]
    if opts.scenarios:
        pats = [p for p in opts.scenarios.split(",") if p]
        matching = [s for s in matching if any(fnmatch.fnmatch(s.name, p) for p in pats)]
    tier = opts.tier or cfg.tier
    scenarios = [s for s in matching if tier == "full" or s.tier == tier
                 or s.tier == "race" and opts.scenarios]  # races run when named
    if opts.names is not None:
        scenarios = [s for s in scenarios if s.name in opts.names]
    if not scenarios:
        beyond = len(matching) - len(scenarios)
        raise UserError("no scenario matches the filters (--scenarios, --page-kind, "
                        "--injector, --tier); `farm plan --tier full` lists them all" + (
                            f"; {beyond} scenario(s) of tier full match: add --tier full"
                            if beyond else ""))
    return variants, scenarios


def layers_of(cfg: FarmConfig, names: tuple[str, ...]) -> tuple[str, ...]:
    """The layers asked for, each defined in farm.yaml's layers:, each once."""
    unknown = [n for n in names if n not in cfg.layers]
    if unknown:
        raise UserError(f"--layer: unknown layer(s) {', '.join(unknown)} (farm.yaml's layers: "
                        f"{', '.join(cfg.layers) or 'none'})")
    return tuple(dict.fromkeys(names))


def fragments_with(cfg: FarmConfig, layers: tuple[str, ...]) -> tuple[Path, ...]:
    """Every variant's config fragments for a run with these layers: farm.yaml's, then each
    layer's, in order."""
    return (*cfg.fragments, *(f for name in layers for f in cfg.layers[name]))


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
             "expect": s.expect, "why": s.why, "tier": s.tier,
             **({"race": s.race, "rounds": s.rounds, "cpus": s.cpus} if s.race else {})}
            for s in scenarios]
    return {"config": str(cfg.path), "variants": variants,
            "layers": list(layers_of(cfg, opts.layers or ())),
            "base": cfg.base if cfg.base in variants else variants[0], "repeat": repeat,
            "shard": f"{opts.shard[0]}/{opts.shard[1]}" if opts.shard else None,
            "cases": len(variants) * len(scenarios) * repeat, "scenarios": rows}


def plan_text(doc: dict) -> str:
    out = [f"{len(doc['scenarios'])} scenarios x {len(doc['variants'])} variants "
           f"({', '.join(doc['variants'])}; base {doc['base']}) x {doc['repeat']} "
           f"repeat(s) = {doc['cases']} cases"
           + (f" (shard {doc['shard']})" if doc.get("shard") else "")
           + (f", layers: {', '.join(doc['layers'])}" if doc.get("layers") else ""), ""]
    head = ("scenario", "page kind", "injector", "access", "policy")
    rows = [(r["scenario"], r["page_kind"], r["injector"],
             f"race {r['race']} x{r['rounds']}" if r.get("race") else r["access"],
             f"early_kill={r['policy']['early_kill']}"
             + ("" if r["policy"]["recovery"] else " recovery=0")
             + ("" if r["cleanup"] == "none" else f" cleanup={r['cleanup']}"))
            for r in doc["scenarios"]]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    for row in (head, *rows):
        out.append("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out) + "\n"


def steps_table(scenarios: list[Scenario]) -> str:
    """Markdown: for each page kind with a mapping, how many of these scenarios meet the
    page by each access step (`takes`); '-' where a step does not apply to the kind, 0 where it does
    and no scenario takes it."""
    kinds = [k for k in PAGE_KINDS if steps_for(k)]
    out = ["| page kind | " + " | ".join(ACCESS_STEPS) + " |",
           "| --- |" + " ---: |" * len(ACCESS_STEPS)]
    for kind in kinds:
        mine = [s for s in scenarios if s.page == kind]
        cells = [str(sum(takes(s, step) for s in mine)) if step in steps_for(kind) else "-"
                 for step in ACCESS_STEPS]
        out.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def uncovered(scenarios: list[Scenario]) -> list[str]:
    """'kind: step' for each access step that applies to a kind and no scenario takes."""
    return [f"{kind}: {step}" for kind in PAGE_KINDS for step in steps_for(kind)
            if not any(s.page == kind and takes(s, step) for s in scenarios)]


def takes(s: Scenario, step: str) -> bool:
    """Whether a scenario meets its page by this step: one of its access steps, or for
    fsync, the fsync every file-backed case ends with when it expects its fsync_errno."""
    return step in s.steps or (step == "fsync" and "fsync_errno" in s.expect)


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise InfraError("missing tools; on Debian: apt-get install " + " ".join(missing))


def log_commands(results: Path) -> logging.Handler:
    """Every command the farm runs, here or over SSH, into the result directory's farm.log;
    the SSH library's own messages go there too, never as a traceback on the terminal."""
    handler = logging.FileHandler(results / "farm.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root = logging.getLogger("farm")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    quiet_ssh_library(handler)
    return handler


def quiet_ssh_library(handler: logging.Handler | None = None) -> None:
    lib = logging.getLogger("paramiko")
    lib.propagate = False
    if not lib.handlers:
        lib.addHandler(logging.NullHandler())
    if handler:
        lib.addHandler(handler)


def results_for(cfg: FarmConfig, opts: RunOptions,
                started: datetime) -> tuple[str, Path, ResultLock]:
    """The run's id and its result directory, held for the run: --results as given (new, or
    empty of any run), else a new directory under results/ beside farm.yaml."""
    if opts.results:
        results = opts.results.resolve()
        return new_run_id(started), results, claim(results, fresh=True)
    try:
        run_id, results = fresh_results((cfg.path.parent / "results").resolve(), started)
    except OSError as e:
        raise os_error(e, f"results directory beside {cfg.path}") from None
    return run_id, results, claim(results, fresh=True)


def new_run_id(started: datetime) -> str:
    """Sortable, and unique even for two runs started in the same millisecond."""
    return started.strftime("%Y%m%d-%H%M%S-%f")[:-3] + "-" + secrets.token_hex(4)


def fresh_results(parent: Path, started: datetime) -> tuple[str, Path]:
    """A new result directory under parent, made exclusively: a run id taken by another run
    (however unlikely) is never shared, the next one is drawn."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        run_id = new_run_id(started)
        try:
            (parent / run_id).mkdir()
            return run_id, parent / run_id
        except FileExistsError:
            continue


def point_latest(results: Path) -> None:
    """results/latest -> the newest run, replaced in one step (a reader never finds it
    missing); a `latest` that is not a symlink is the user's and is left alone."""
    latest = results.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        return
    tmp = results.parent / f".latest.{TOKEN}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(results.name)
    tmp.replace(latest)


@dataclass
class _Run:
    """What a run has gathered so far; whatever ends it, reports are written from this."""
    results: Path
    meta: dict
    variants: dict[str, dict]
    plan: list[CaseSpec]
    sockets: Path  # the directory for its guests' sockets

    def save(self) -> None:
        write_json(self.results / "plan.json", plan_json(self.plan))
        write_json(self.results / "run.json", {"run": self.meta, "variants": self.variants})


def skeleton(variants: list[str], scenarios: list[Scenario], repeat: int,
             **extra) -> list[CaseSpec]:
    """Every case of a run, known before anything is built, so that a run stopped at any
    point (or a host that never answered) still accounts for each one."""
    return [CaseSpec.planned(v, s, r, **extra)
            for v in variants for s in scenarios for r in range(1, repeat + 1)]


def run_meta(cfg: FarmConfig, m: Matrix, run_id: str, started: datetime) -> dict:
    """The run's record in run.json, as far as it is known at the start."""
    return {"id": run_id, "farm_version": __version__, "started": started.timestamp(),
            "started_iso": started.isoformat(timespec="seconds"), "host": socket.gethostname(),
            "config": str(cfg.path), "base": m.base, "jobs": m.jobs, "repeat": m.repeat,
            "confirm": m.confirm, "fail_on": list(m.fail_on), "coverage": list(m.coverage),
            "layers": list(m.layers),
            **({"seed": m.seed} if any(s.race for s in m.every) else {}),
            **({"kcidb": cfg.kcidb} if cfg.kcidb else {}),
            "interrupted": False}


def variant_docs(cfg: FarmConfig, variants: list[str]) -> dict[str, dict]:
    """The variants in run.json, before any is built."""
    return {v: {"description": cfg.variants[v].description,
                "patches": [str(p) for p in cfg.variants[v].patches]} for v in variants}


@dataclass(frozen=True)
class Matrix:
    """What one run covers and how, from farm.yaml and the command line."""
    variants: list[str]
    every: list[Scenario]  # every selected scenario, across the shards
    scenarios: list[Scenario]  # this shard's
    base: str
    jobs: int
    repeat: int
    confirm: int
    fail_on: tuple[str, ...]
    coverage: tuple[str, ...] = ()  # the tree's files profiled with gcov in every case
    layers: tuple[str, ...] = ()  # farm.yaml's layers added to every variant, in order
    seed: int = 0  # the seed of every race scenario of the run, its variants and repeats

    @classmethod
    def of(cls, cfg: FarmConfig, opts: RunOptions) -> Matrix:
        variants, every = select(cfg, opts)
        seed = opts.seed if opts.seed is not None else secrets.randbelow(2**31)
        every = [replace(s, seed=seed) if s.race else s for s in every]
        return cls(variants, every, shard_of(every, opts.shard),
                   cfg.base if cfg.base in variants else variants[0], opts.jobs or cfg.jobs,
                   opts.repeat or cfg.repeat, cfg.confirm if opts.confirm is None
                   else opts.confirm, cfg.fail_on if opts.fail_on is None else opts.fail_on,
                   cfg.coverage if opts.coverage is None else opts.coverage,
                   layers_of(cfg, opts.layers or ()), seed)


def run(cfg: FarmConfig, opts: RunOptions, progress: Progress | None = None) -> int:
    progress = progress or Progress()
    m = Matrix.of(cfg, opts)
    check_tools()
    started = datetime.now(UTC)
    run_id, results, lock = results_for(cfg, opts, started)
    try:
        if not opts.results:
            point_latest(results)
        handler = log_commands(results)
        tmp = Path(tempfile.gettempdir())
        prune(tmp, SOCKETS)  # those of runs that were killed
        sockets = OwnedDir(tmp, SOCKETS)
        try:
            return _run(cfg, opts, m, progress, started, run_id, results, sockets.path)
        finally:
            sockets.remove()
            logging.getLogger("farm").removeHandler(handler)
            logging.getLogger("paramiko").removeHandler(handler)
            handler.close()
    finally:
        lock.release()


def _run(cfg: FarmConfig, opts: RunOptions, m: Matrix, progress: Progress,
         started: datetime, run_id: str, results: Path, sockets: Path) -> int:
    runner = Runner()
    meta = {**run_meta(cfg, m, run_id, started), "scenarios_file": str(cfg.scenarios_path),
            "guest_tests": str(cfg.guest_tests), "argv": sys.argv, "affected": opts.affected,
            "shard": _shard_meta(m.every, opts.shard)}
    state = _Run(results, meta, variant_docs(cfg, m.variants),
                 skeleton(m.variants, m.scenarios, m.repeat, results=str(results),
                          sockets=str(sockets)), sockets)
    state.save()
    why_missing = "not run"
    error: FarmError | None = None
    t0 = time.monotonic()
    try:
        progress.say(f"results: {results}")
        src = prepare_source(cfg.source, cfg.cache, runner, progress)
        meta["source"] = {"describe": cfg.source.describe(), "digest": src.digest,
                          "path": str(src.path)}
        builds = _build_variants(cfg, m, src, runner, progress, results)
        for v in m.variants:
            state.variants[v]["build"] = builds[v].to_json()
        state.save()
        built = [v for v in m.variants if builds[v].ok]
        state.plan = [spec if builds[spec.variant].ok else replace(
            spec, not_run=f"not run: the kernel of {spec.variant} did not build "
                          f"({builds[spec.variant].error}; log {builds[spec.variant].log})")
            for spec in state.plan]
        if built:
            _guests(cfg, state, builds, m, runner, progress)
        why_missing = "not run: a pytest worker died before the case finished"
    except KeyboardInterrupt as e:
        how = getattr(e, "how", "Ctrl-C")
        meta["interrupted"] = how
        why_missing = f"not run: the run was interrupted ({how})"
        progress.say(f"interrupted ({how}): writing what was gathered so far")
    except FarmError as e:
        error = e
        meta["error"] = str(e)
        why_missing = f"not run: {str(e).splitlines()[0]}"
    finally:
        meta["seconds"] = round(time.monotonic() - t0, 1)
    with deferred_signals():
        state.save()
        code = report_dir(results, plan_missing=why_missing)
    base_build = state.variants.get(m.base, {}).get("build") or {}
    if m.coverage and base_build.get("coverage") and not meta["interrupted"]:
        src = SourceTree(Path(meta["source"]["path"]), meta["source"]["digest"])
        save_base_coverage(cfg, m, src, base_build, results, runner)
    progress.say(f"done in {fmt_seconds(meta['seconds'])}: {results}")
    if error is not None and code != 1:
        raise error
    return code


def coverage_key(cfg: FarmConfig, base: str, files: tuple[str, ...], src: SourceTree,
                 runner: Runner, layers: tuple[str, ...] = ()) -> str:
    """The key the base's saved coverage goes by: its coverage build's, whatever selftest
    programs that build carried (they do not change the kernel)."""
    return build_key(BuildRequest(cfg.variants[base], src, cfg.base_config,
                                  fragments_with(cfg, layers),
                                  cfg.cache, 1, coverage=files, layers=layers),
                     compiler_version(runner))


def save_base_coverage(cfg: FarmConfig, m: Matrix, src: SourceTree, build: dict,
                       results: Path, runner: Runner) -> None:
    """What the base's scenarios reached, kept in the cache for --affected: from the cases
    and the union the report made of them."""
    cases = [c for c in load_cases(results) if c["variant"] == m.base]
    union = Union(m.base, build, cases, results)
    try:
        union.shape(json.loads((results / "coverage" / m.base / "gcovr.json").read_text()))
    except (OSError, ValueError):
        return  # no case of the base sent data: nothing to keep
    save_coverage(cfg.cache, coverage_key(cfg, m.base, m.coverage, src, runner, m.layers),
                  list(m.coverage), cases, union)


def affected(cfg: FarmConfig, opts: RunOptions, progress: Progress, *,
             measure: bool) -> RunOptions:
    """--affected: the options narrowed to the scenarios that reach what the patches change,
    after a coverage run of the base for the scenarios it has no saved coverage of (when
    measure; `farm plan` measures nothing)."""
    runner = Runner()
    variants, scenarios = select(cfg, replace(opts, names=None))
    base = cfg.base if cfg.base in variants else variants[0]
    files = opts.coverage or cfg.coverage or COVERAGE_DEFAULT
    src = prepare_source(cfg.source, cfg.cache, runner, progress)
    key = coverage_key(cfg, base, files, src, runner, layers_of(cfg, opts.layers or ()))
    saved = load_coverage(cfg.cache, key)
    known = {**saved.get("scenarios", {}), **saved.get("no_data", {})}
    missing = [s.name for s in scenarios if s.name not in known]
    if missing and measure and any(cfg.variants[v].patches for v in variants if v != base):
        progress.say(f"--affected: no saved coverage of {base} for {len(missing)} scenario(s): "
                     "measuring it first")
        run(cfg, RunOptions(variants=(base,), names=tuple(missing), tier="full",
                            coverage=files, confirm=0, jobs=opts.jobs, repeat=1,
                            layers=opts.layers), progress)
        saved = load_coverage(cfg.cache, key)
    sel = select_affected(cfg, variants, base, [s.name for s in scenarios], files, saved,
                          runner)
    text = explain(sel, len(scenarios)).rstrip("\n")
    progress.say(text)
    return replace(opts, names=tuple(sel.names) if sel.names is not None else None,
                   affected=text)


def _guests(cfg: FarmConfig, state: _Run, builds: dict[str, BuildResult], m: Matrix,
            runner: Runner, progress: Progress) -> None:
    """The guest image, the accelerator, the cases, then the confirmations of every verdict
    that is not `same`."""
    results, meta = state.results, state.meta
    image = build_image(cfg.guest_tests, cfg.cache, runner)
    machine = Machine(machine=cfg.guest.machine, cpu=cfg.guest.cpu,
                      memory_mb=cfg.guest.memory_mb, cpus=cfg.guest.cpus)
    first = next(b for b in builds.values() if b.ok)
    accel, why = _accelerator(cfg, GuestRequest(
        machine, Path(first.boot), image.initrd, kernel_cmdline(m.scenarios[0]),
        results / "accel-probe", cfg.guest.timeout, sockets=state.sockets), runner)
    meta.update(accelerator=accel, accel_reason=why, image={
        k: str(v) for k, v in asdict(image).items()})
    progress.say(f"accelerator: {why}")
    machine = replace(machine, accel=accel)
    initrds = {v: with_kselftests(image, b.kselftests, cfg.cache / "kselftests")
               for v, b in builds.items() if b.ok}
    state.plan = [spec if spec.not_run is not None else _fill(
        spec, cfg, builds[spec.variant], initrds[spec.variant], image, machine)
        for spec in state.plan]
    state.save()
    todo = [s for s in state.plan if s.not_run is None]
    n_variants = len({s.variant for s in state.plan})
    progress.say(f"running {len(todo)} cases ({n_variants} variants x "
                 f"{len({s.scenario.name for s in state.plan})} scenarios x "
                 f"{m.repeat}), {m.jobs} guests at a time")
    _run_cases(results, results / "plan.json", m.jobs, len(todo), runner, progress)
    if m.confirm <= 0:
        return
    extra = confirmations(load_cases(results), state.plan, m.base, m.confirm)
    if not extra:
        return
    state.plan += extra
    state.save()
    write_json(results / "confirm.json", plan_json(extra))
    names = sorted({s.scenario.name for s in extra})
    progress.say(f"confirming {len(names)} verdict(s) other than same with {m.confirm} more "
                 f"run(s) of base and variant: {len(extra)} cases ({', '.join(names[:6])}"
                 + (", ..." if len(names) > 6 else "") + ")")
    _run_cases(results, results / "confirm.json", m.jobs, len(extra), runner, progress)


def _fill(spec: CaseSpec, cfg: FarmConfig, build: BuildResult, initrd: Path,
          image: GuestImage, machine: Machine) -> CaseSpec:
    """What a worker needs to run a planned case: the kernel, the image, the machine."""
    return replace(spec, machine=machine, kernel=build.boot, initrd=str(initrd),
                   disk=str(image.disk), swap=str(image.swap), timeout=cfg.guest.timeout,
                   coverage_dir=build.coverage, coverage_files=tuple(build.coverage_files),
                   kselftest_missing=build.kselftest_errors.get(spec.scenario.kselftest, ""))


def confirmations(cases: list[dict], plan: list[CaseSpec], base: str,
                  n: int) -> list[CaseSpec]:
    """Plan entries that run again, n more times each, the base's and the variant's cases of
    every scenario whose verdict is regression, fixed or changed: a verdict is final only
    once its repeats agree (else it is flaky). Errors and flaky verdicts are not re-run:
    more runs cannot turn them into an answer."""
    runnable = {(s.variant, s.scenario.name): s for s in plan if s.runnable}
    variants = list(dict.fromkeys(s.variant for s in plan))
    last: dict[tuple[str, str], int] = {}
    for s in plan:
        key = (s.variant, s.scenario.name)
        last[key] = max(last.get(key, 0), s.repeat)
    want: list[tuple[str, str]] = []
    for c in compare(cases, base, variants):
        if c["verdict"] in CONFIRMED:
            for key in ((base, c["scenario"]), (c["variant"], c["scenario"])):
                if key in runnable and key not in want:
                    want.append(key)
    out = []
    for v, name in want:
        spec = runnable[(v, name)]
        for r in range(last[(v, name)] + 1, last[(v, name)] + n + 1):
            again = CaseSpec.planned(v, spec.scenario, r)
            out.append(replace(spec, id=again.id, repeat=r, dir=again.dir, confirm=True))
    return out


def _build_variants(cfg: FarmConfig, m: Matrix, src: SourceTree, runner: Runner,
                    progress: Progress, results: Path) -> dict[str, BuildResult]:
    """Every variant's kernel (and its own selftest binaries), built or found in the cache.
    Every patch series is applied before anything is compiled, so a patch that does not
    apply stops the run at once. A kernel that does not build is a result of its own: the
    other variants still build and run."""
    variants = m.variants
    kselftests = tuple(sorted({s.kselftest for s in m.scenarios if s.kselftest}))
    (results / "builds").mkdir(exist_ok=True)
    fragments = fragments_with(cfg, m.layers)
    reqs = {v: BuildRequest(cfg.variants[v], src, cfg.base_config, fragments, cfg.cache,
                            (os.cpu_count() or 1) + 1, kselftests,
                            log=results / "builds" / f"{v}.log", coverage=m.coverage,
                            layers=m.layers)
            for v in variants}
    plans = {}
    for v in variants:
        t = time.monotonic()
        plans[v] = plan_build(reqs[v], runner)
        if plans[v].cached:
            plans[v].cached.seconds = round(time.monotonic() - t, 2)
    try:
        for v in variants:
            if not plans[v].cached:
                prepare_tree(reqs[v], plans[v], runner, progress)
        builds = {}
        for v in variants:
            # Cached apart from the kernel; those still to build come from the tree the
            # kernel builds from, before its build removes it (else from a tree of their own).
            tests = kselftests_of(reqs[v], plans[v], runner, progress) if kselftests \
                else ({}, {})
            if plans[v].cached:
                builds[v] = plans[v].cached
                progress.say(f"{v}: kernel {builds[v].release} already built "
                             f"({plans[v].key}), found in {builds[v].seconds:.2f}s")
            else:
                builds[v] = compile_kernel(reqs[v], plans[v], runner, progress)
            if builds[v].ok:
                builds[v].kselftests, builds[v].kselftest_errors = tests
            if builds[v].config and Path(builds[v].config).is_file():  # the run's own copy
                shutil.copyfile(builds[v].config, results / "builds" / f"{v}.config")
        return builds
    finally:
        for p in plans.values():
            if p.work:
                p.work.remove()


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
            variant, scenario, rep = parse_case_id(ev["id"])
            note = "" if status == "pass" else f": {ev.get('message', '')}"
            self.progress.say(f"{status.upper():5} {variant} / {scenario} {rep} "
                              f"({ev.get('seconds', 0):.1f}s){note}")
        done = sum(self.counts.values())
        self.progress.status(
            f"guests: {done}/{self.total} done, {len(self.running)} running, "
            f"{self.counts['fail']} failed, {self.counts['error']} errors")


def _run_cases(results: Path, plan: Path, jobs: int, total: int, runner: Runner,
               progress: Progress) -> None:
    """The planned cases of one plan file that can run, under pytest-xdist: one guest per
    worker at a time. The session runs in a process group of its own, which the runner
    stops as a whole if the farm is interrupted, and dies with the farm if it is killed."""
    cmd = [sys.executable, "-m", "pytest", "-p", "orchestrator.pytest_plugin",
           "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", results,
           "--farm-plan", plan, plan, "-n", str(min(jobs, total)), "-q", "--no-header",
           "-rfEs"]
    with open(results / "pytest.log", "a") as log:
        res = runner.run(cmd, cwd=results, check=False,
                         on_line=CaseProgress(total, progress, log).line)
    if res.returncode not in (0, 1):
        tail = "\n".join(res.output.splitlines()[-15:])
        raise InfraError(f"the case runner (pytest) exited with {res.returncode}; "
                         f"log: {results / 'pytest.log'}\n{tail}")
