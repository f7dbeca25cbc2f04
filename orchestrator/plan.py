"""Planning a run: which variants and scenarios it covers (farm.yaml, the command line,
tiers and filters), its shard of them, every case it will run (known before anything is
built, so that each is accounted for however the run ends), the run's record at its start,
what `farm plan` prints, and the cases that confirm a verdict other than same."""

from __future__ import annotations

import fnmatch
import secrets
import socket
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

from . import __version__
from .caserecords import CaseRecord, CaseSpec
from .errors import UserError
from .farmfile import FarmConfig
from .options import RunOptions
from .registry import ACCESS_STEPS, CONFIRMED, INJECTORS, PAGE_KINDS, steps_for
from .results import RunInfo, SourceInfo, VariantInfo
from .runner import Runner
from .scenarios import Scenario
from .source import source_version
from .verdicts import compare


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
    for flag, wanted, known in (("--page-kind", opts.page_kinds,
                                 (*PAGE_KINDS, "kselftest", "program")),
                                ("--injector", opts.injectors,
                                 (*INJECTORS, "kselftest", "program"))):
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


def shard_meta(scenarios: list[Scenario], shard: tuple[int, int] | None) -> dict | None:
    """What `farm merge` needs to join the shards: which one this is, and the whole
    matrix, so that the cases of a shard that never came back are still accounted for."""
    if not shard:
        return None
    return {"index": shard[0], "count": shard[1], "scenarios": [asdict(s) for s in scenarios]}


def base_of(cfg: FarmConfig, variants: list[str]) -> str:
    """The variant the others are compared with: farm.yaml's base when the run has it, else
    the run's first variant."""
    return cfg.base if cfg.base in variants else variants[0]


def plan_doc(cfg: FarmConfig, opts: RunOptions) -> dict:
    """What a run with these options would execute; builds and boots nothing. Each row says
    which expectation each variant's kernel gets where a scenario's kernels differ."""
    m = Matrix.of(cfg, opts)
    rows = [{"scenario": s.name, "page_kind": s.page, "injector": s.injector,
             "access": s.access, "policy": {"early_kill": s.early_kill, "recovery": s.recovery},
             "cleanup": s.cleanup, "kselftest": s.kselftest or None, "sysctl": s.sysctl,
             **({"program": s.program, "result": s.result} if s.program else {}),
             "expect": s.expect, "why": s.why, "tier": s.tier,
             **({"race": s.race, "rounds": s.rounds, "cpus": s.cpus} if s.race else {}),
             **({"before": {o.before: {"why": o.why, "expect": o.expect} for o in s.older},
                 "expect_for": {v: s.for_kernel(m.kernels.get(v)).expect_for
                                for v in m.variants}} if s.older else {})}
            for s in m.scenarios]
    return {"config": str(cfg.path), "variants": m.variants, "layers": list(m.layers),
            "base": m.base, "repeat": m.repeat,
            "shard": f"{opts.shard[0]}/{opts.shard[1]}" if opts.shard else None,
            "cases": len(m.variants) * len(m.scenarios) * m.repeat, "scenarios": rows,
            "kernels": m.kernels, "bases": m.bases}


def plan_text(doc: dict) -> str:
    """`farm plan`: what the matrix is, each variant's kernel (and base, where a run has
    several kernels), and a line per scenario, with the expectation of another release where
    a variant's kernel gets one."""
    kernels, bases = doc.get("kernels") or {}, doc.get("bases") or {}
    own = {v: b for v, b in bases.items() if b != doc["base"]}
    out = [f"{len(doc['scenarios'])} scenarios x {len(doc['variants'])} variants "
           f"({', '.join(doc['variants'])}; base {doc['base']}) x {doc['repeat']} "
           f"repeat(s) = {doc['cases']} cases"
           + (f" (shard {doc['shard']})" if doc.get("shard") else "")
           + (f", layers: {', '.join(doc['layers'])}" if doc.get("layers") else ""),
           "kernels: " + ", ".join(
               f"{v} {kernels[v]}" + (f" (base {own[v]})" if v in own and own[v] != v else
                                      " (a base)" if v in own else "")
               for v in doc["variants"] if v in kernels), ""]
    head = ("scenario", "page kind", "injector", "access", "policy")
    older = any(r.get("before") for r in doc["scenarios"])
    rows = [(r["scenario"], r["page_kind"], r["injector"],
             f"race {r['race']} x{r['rounds']}" if r.get("race") else r["access"],
             f"early_kill={r['policy']['early_kill']}"
             + ("" if r["policy"]["recovery"] else " recovery=0")
             + ("" if r["cleanup"] == "none" else f" cleanup={r['cleanup']}"))
            + ((_expect_for(r),) if older else ())
            for r in doc["scenarios"]]
    head += ("expectation",) if older else ()
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    for row in (head, *rows):
        out.append("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out) + "\n"


def _expect_for(row: dict) -> str:
    """'before 6.12: baseline-6.1' for the variants whose kernel gets an older release's
    expectation of this scenario; '' when each gets the scenario's own."""
    by: dict[str, list[str]] = {}
    for v, label in (row.get("expect_for") or {}).items():
        if label:
            by.setdefault(label, []).append(v)
    return "; ".join(f"{label}: {', '.join(vs)}" for label, vs in by.items())


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


def skeleton(variants: list[str], scenarios: list[Scenario], repeat: int,
             kernels: dict[str, str] | None = None, **extra) -> list[CaseSpec]:
    """Every case of a run, known before anything is built, so that a run stopped at any
    point (or a host that never answered) still accounts for each one; each scenario as its
    variant's kernel is held to it (kernels: variant -> version)."""
    kernels = kernels or {}
    return [CaseSpec.planned(v, s.for_kernel(kernels.get(v)), r, **extra)
            for v in variants for s in scenarios for r in range(1, repeat + 1)]


def kernel_versions(cfg: FarmConfig, variants: list[str]) -> dict[str, str]:
    """The kernel version of each variant's source, from its own Makefile (nothing built)."""
    runner, memo = Runner(), {}
    out = {}
    for v in variants:
        source = cfg.source_of(v)
        if source not in memo:
            memo[source] = source_version(source, cfg.cache, runner)
        out[v] = memo[source]
    return out


def run_meta(cfg: FarmConfig, m: Matrix, run_id: str, started: datetime) -> RunInfo:
    """The run's record in run.json, as far as it is known at the start."""
    return RunInfo(run_id, __version__, started.timestamp(),
                   started.isoformat(timespec="seconds"), socket.gethostname(), str(cfg.path),
                   m.base, jobs=m.jobs, repeat=m.repeat, confirm=m.confirm,
                   fail_on=list(m.fail_on), coverage=list(m.coverage), layers=list(m.layers),
                   seed=m.seed if any(s.race for s in m.every) else None,
                   kcidb=cfg.kcidb or None)


def variant_docs(cfg: FarmConfig, m: Matrix) -> dict[str, VariantInfo]:
    """The variants in run.json, before any is built: their patches, their kernel's version
    and, in a run of several kernel sources, each one's own base and source."""
    several = len({cfg.source_of(v) for v in m.variants}) > 1
    return {v: VariantInfo(cfg.variants[v].description,
                           [str(p) for p in cfg.variants[v].patches], kernel=m.kernels.get(v),
                           base=m.bases.get(v) if several else None,
                           source=SourceInfo(cfg.source_of(v).describe(), "")
                           if several else None)
            for v in m.variants}


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
    kernels: dict[str, str] = field(default_factory=dict)  # variant -> its kernel's version
    bases: dict[str, str] = field(default_factory=dict)  # variant -> the one it is compared with
    boot: str = "snapshot"  # how guests start: --boot, else farm.yaml's guest.boot

    @classmethod
    def of(cls, cfg: FarmConfig, opts: RunOptions) -> Matrix:
        variants, every = select(cfg, opts)
        seed = opts.seed if opts.seed is not None else secrets.randbelow(2**31)
        every = [replace(s, seed=seed) if s.race else s for s in every]
        return cls(variants, every, shard_of(every, opts.shard),
                   base_of(cfg, variants), opts.jobs or cfg.jobs,
                   opts.repeat or cfg.repeat, cfg.confirm if opts.confirm is None
                   else opts.confirm, cfg.fail_on if opts.fail_on is None else opts.fail_on,
                   cfg.coverage if opts.coverage is None else opts.coverage,
                   layers_of(cfg, opts.layers or ()), seed, kernel_versions(cfg, variants),
                   {v: cfg.base_for(v, variants) for v in variants},
                   opts.boot or cfg.guest.boot)


def confirmations(cases: list[CaseRecord], plan: list[CaseSpec], base: str,
                  n: int, bases: dict[str, str] | None = None) -> list[CaseSpec]:
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
    for c in compare(cases, base, variants, bases):
        if c.verdict in CONFIRMED:
            for key in ((c.base, c.scenario), (c.variant, c.scenario)):
                if key in runnable and key not in want:
                    want.append(key)
    out = []
    for v, name in want:
        spec = runnable[(v, name)]
        for r in range(last[(v, name)] + 1, last[(v, name)] + n + 1):
            again = CaseSpec.planned(v, spec.scenario, r)
            out.append(replace(spec, id=again.id, repeat=r, dir=again.dir, confirm=True))
    return out


