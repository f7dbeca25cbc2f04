"""The run's results document, results.json: the run's record, each variant's build, every
case, the A/B verdicts and the totals, as typed records (read and written by from_json and
to_json, checked like every record), gathered from a result directory's case files, and the
run's exit code. Pure over saved data, so `farm report` can redo it at any time."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from .build import BuildResult
from .caserecords import CaseRecord, CaseSpec, Record, read_plan
from .errors import UserError
from .files import write_json
from .registry import STATUSES
from .verdicts import Comparison, compare, flaky_groups

SCHEMA = 2


@dataclass(frozen=True)
class SourceInfo(Record):
    WHAT: ClassVar[str] = "record of the kernel source"
    KEEPS_ORDER: ClassVar[bool] = True
    describe: str
    digest: str
    path: str | None = None


@dataclass(frozen=True)
class RunInfo(Record):
    """The run's record (run.json's `run`), as far as the run got. Its fields are in the
    order a run writes them; a record read from a file keeps that file's order."""
    WHAT: ClassVar[str] = "farm run record"
    KEEPS_ORDER: ClassVar[bool] = True
    NULLABLE: ClassVar[tuple[str, ...]] = ("shard",)
    id: str
    farm_version: str
    started: float
    started_iso: str
    host: str
    config: str
    base: str
    jobs: int | None = None
    repeat: int | None = None
    confirm: int | None = None
    fail_on: list[str] | None = None
    coverage: list[str] | None = None
    layers: list[str] | None = None
    seed: int | None = None  # the races' seed, in a run with race scenarios
    kcidb: dict | None = None  # farm.yaml's kcidb: origin, url
    interrupted: bool | str = False  # False, or what interrupted it (Ctrl-C, SIGTERM, ...)
    scenarios_file: str | None = None
    guest_tests: str | None = None
    argv: list | None = None
    affected: str | None = None  # --affected's account of its choice
    shard: dict | None = None  # {index, count, scenarios} of a shard, else null
    source: SourceInfo | None = None
    accelerator: str | None = None
    accel_reason: str | None = None
    image: dict | None = None
    hosts: list[str] | None = None  # a pool run's hosts
    error: str | None = None  # what stopped the run
    seconds: float | None = None
    merged: list[str] | None = None  # a merged run's shards: "K/N DIR"
    missing_shards: list[str] | None = None
    compared: list[str] | None = None  # a comparison's result directories


@dataclass(frozen=True)
class VariantInfo(Record):
    """A variant of the run (run.json's `variants`): its patches and, once built, its build."""
    WHAT: ClassVar[str] = "record of a variant"
    KEEPS_ORDER: ClassVar[bool] = True
    JSON_KEYS: ClassVar[dict[str, str]] = {"compared_from": "from"}
    description: str | None = ""
    patches: list[str] | None = None
    build: BuildResult | None = None
    compared_from: str | None = None  # `farm compare`: the result directory it came from
    kernel: str | None = None  # the version its source's Makefile gives: 6.12.118
    base: str | None = None  # the variant it is compared with (itself: a base); None: run's
    source: SourceInfo | None = None  # its own kernel source, where it is not the run's

    def version(self) -> str | None:
        """Its kernel's version: as recorded, else (a run of an older farm) its build's
        release."""
        return self.kernel or (self.build.release if self.build else None)


@dataclass(frozen=True)
class Results(Record):
    """results.json."""
    WHAT: ClassVar[str] = "farm results record"
    schema: int
    run: RunInfo
    variants: dict[str, VariantInfo]
    cases: tuple[CaseRecord, ...]
    comparison: tuple[Comparison, ...]
    totals: dict[str, dict[str, int]]
    coverage: dict | None = None  # coverage.report's document, in a coverage run

    def of_variant(self, variant: str) -> list[CaseRecord]:
        return [c for c in self.cases if c.variant == variant]

    def builds_failed(self) -> list[str]:
        return [v for v, info in self.variants.items()
                if info.build is not None and info.build.status == "failed"]


def load_json(d: Path, name: str) -> dict:
    """A JSON object of a result directory, or bad input naming it."""
    try:
        doc = json.loads((d / name).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{d}: not a farm result directory ({name}: {e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{d / name}: not a farm record (a JSON object was expected)")
    return doc


def read_run(d: Path) -> tuple[RunInfo, dict[str, VariantInfo]]:
    """A result directory's run.json: the run's record and its variants."""
    doc = load_json(d, "run.json")
    where = str(d / "run.json")
    if not isinstance(doc.get("variants"), dict) or not isinstance(doc.get("run"), dict):
        raise UserError(f"{where}: not a farm run record (no run, base or variants)")
    return RunInfo.from_json(doc["run"], where), {
        v: VariantInfo.from_json(x, f"{where} (variant {v})") for v, x in doc["variants"].items()}


def write_run_json(d: Path, run: RunInfo, variants: dict[str, VariantInfo]) -> None:
    write_json(d / "run.json", {"run": run.to_json(),
                                "variants": {v: x.to_json() for v, x in variants.items()}})


def read_results(d: Path) -> Results:
    """A saved run's results.json, every record in it checked."""
    return Results.from_json(load_json(d, "results.json"), str(d / "results.json"))


def read_plan_of(d: Path) -> list[CaseSpec]:
    """The planned cases of a result directory (none when it has no plan.json)."""
    if not (d / "plan.json").exists():
        return []
    return read_plan(load_json(d, "plan.json"), str(d / "plan.json"))


def read_case(p: Path) -> CaseRecord:
    """One case.json, checked, or bad input naming it and what to do."""
    try:
        return CaseRecord.from_json(json.loads(p.read_text()), str(p))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: damaged case record ({e}); move it away and run "
                        f"`farm report` again to count the case as not run") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read: {e.strerror}") from None


def load_cases(results: Path) -> list[CaseRecord]:
    """The case records of a result directory, each checked, as the results document holds
    them: a selftest program's KTAP tests follow it, each a case of its own."""
    cases = []
    for p in sorted((results / "cases").glob("*/*/*/case.json")):
        rec = read_case(p)
        cases.append(replace(rec, subcases=None))
        cases.extend(rec.subcases or ())
    return cases


def missing_cases(plan: list[CaseSpec], cases: list[CaseRecord], why: str) -> list[CaseRecord]:
    """Planned cases with no case.json (interrupted, or a worker died): recorded as errors.
    A planned case may carry its own reason in not_run (a shard missing from a merge)."""
    done = {c.id for c in cases}
    return [CaseRecord.not_run(spec, why) for spec in plan if spec.id not in done]


def totals(cases: list[CaseRecord]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in cases:
        t = out.setdefault(c.variant, dict.fromkeys(STATUSES, 0))
        t[c.status] += 1
    return out


def assemble(run: RunInfo, variants: dict[str, VariantInfo], cases: list[CaseRecord],
             scenario_order: list[str] | None = None) -> Results:
    """results.json: cases in variant, scenario (plan order) and repeat order, compared with
    the run's base."""
    order = list(variants)
    sorder = {s: i for i, s in enumerate(scenario_order or [])}

    def key(c: CaseRecord):
        return (order.index(c.variant) if c.variant in order else len(order),
                sorder.get(c.scenario, len(sorder)), c.scenario, c.repeat)

    cases = sorted(cases, key=key)
    return Results(SCHEMA, run, variants, tuple(cases),
                   compare(cases, run.base, order, bases_of(run, variants)), totals(cases))


def bases_of(run: RunInfo, variants: dict[str, VariantInfo]) -> dict[str, str]:
    """Each variant's base: the one it names (a run of several kernel sources), else the
    run's."""
    return {v: info.base or run.base for v, info in variants.items()}


def exit_code(doc: Results) -> int:
    """0 nothing failed or regressed; 1 a failure or regression (or a patched variant whose
    kernel does not build while the base's does); 3 an infrastructure error (the base's
    kernel does not build, a case with no answer, an interrupted run). A case that failed in
    some repeats and passed in others is flaky: it fails the run only with --fail-on flaky,
    as a `changed` verdict does only with --fail-on changed."""
    fail_on = set(doc.run.fail_on or ())
    flaky = flaky_groups(list(doc.cases))
    statuses = {c.status for c in doc.cases
                if (c.variant, c.scenario) not in flaky or "flaky" in fail_on}
    verdicts = {c.verdict for c in doc.comparison}
    broken = doc.builds_failed()
    bases = bases_of(doc.run, doc.variants)
    if "fail" in statuses or {"regression", *fail_on} & verdicts or any(
            bases.get(v, doc.run.base) not in broken for v in broken):
        return 1
    if "error" in statuses or "error" in verdicts or doc.run.interrupted or broken:
        return 3
    return 0
