"""The typed records that cross the farm's stage boundaries:

- CaseSpec: one planned case, from the plan to the pytest worker that runs it (plan.json and
  confirm.json hold them);
- CaseRecord: what one case gave, from the worker to the reports (each case's case.json,
  the `cases` of results.json). It is built in one place for each way a case ends (it ran,
  it never ran, a KTAP test of a selftest program), written by to_json() and read back, with
  every field's type checked, by from_json(): a damaged or hand-edited file is bad input
  that names itself, never a traceback.

Both are frozen: a stage that changes one makes a new one (dataclasses.replace). Their JSON
is the files' documented shape (README: result files); fields left None are not written.
The observed and expected values stay JSON objects inside a record: their keys are the
scenario language's observables (config.OBSERVABLES, `<step>.<observable>`, `race.*`),
typed where the scenario file is validated and where parse.Observed builds them."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .qemu import Machine

if TYPE_CHECKING:  # config imports results, which reads records: imported where used
    from .config import Scenario

STATUSES = ("pass", "fail", "error", "skip")


def case_id(variant: str, scenario: str, repeat: int) -> str:
    """A case's id, everywhere: 'baseline::anon-madvise::r1' (a KTAP subtest's scenario is
    'program/1.2')."""
    return f"{variant}::{scenario}::r{repeat}"


def parse_case_id(cid: str) -> tuple[str, str, str]:
    """(variant, scenario, 'rN') of a case id; missing parts are ''."""
    return tuple((cid.split("::") + ["", ""])[:3])


def scenario_from_json(d: Any, where: str) -> Scenario:
    """A scenario as a plan or a shard's record holds it (dataclasses.asdict of it)."""
    from .config import Scenario
    try:
        return Scenario(**d)
    except TypeError as e:
        raise UserError(f"{where}: not a scenario ({e})") from None


@dataclass(frozen=True)
class CaseSpec:
    """A planned case: who runs it where, and once its kernel is built, what a worker needs
    to boot it. `not_run` says why it will not run (its kernel did not build, a pool host
    never answered)."""
    id: str
    variant: str
    repeat: int
    scenario: Scenario
    dir: str  # its directory under the result directory: cases/<variant>/<scenario>/r<N>
    confirm: bool = False  # a re-run that confirms a verdict other than same
    not_run: str | None = None
    results: str = ""
    sockets: str = ""  # where its guest's QMP and agent sockets go
    machine: Machine | None = None
    kernel: str = ""
    initrd: str = ""
    disk: str = ""
    swap: str = ""
    timeout: float = 0.0
    coverage_dir: str | None = None  # the profiled build's tree, in a coverage run
    coverage_files: tuple[str, ...] = ()
    kselftest_missing: str = ""  # why the variant's tree has no such program

    @classmethod
    def planned(cls, variant: str, scenario: Scenario, repeat: int, **extra) -> CaseSpec:
        return cls(case_id(variant, scenario.name, repeat), variant, repeat, scenario,
                   f"cases/{variant}/{scenario.name}/r{repeat}", **extra)

    @property
    def runnable(self) -> bool:
        return self.not_run is None and bool(self.kernel)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "variant": self.variant, "repeat": self.repeat,
                               "scenario": asdict(self.scenario), "dir": self.dir,
                               "confirm": self.confirm}
        if self.not_run is not None:
            out["not_run"] = self.not_run
        out.update(results=self.results, sockets=self.sockets)
        if self.machine is not None:
            out.update(machine=asdict(self.machine), kernel=self.kernel, initrd=self.initrd,
                       disk=self.disk, swap=self.swap, timeout=self.timeout,
                       coverage={"dir": self.coverage_dir, "files": list(self.coverage_files)},
                       kselftest_missing=self.kselftest_missing)
        return out

    @classmethod
    def from_json(cls, d: Any, where: str) -> CaseSpec:
        if not isinstance(d, dict):
            raise UserError(f"{where}: not a planned case (a JSON object was expected)")
        try:
            cov = d.get("coverage") or {}
            return cls(
                id=d["id"], variant=d["variant"], repeat=d["repeat"],
                scenario=scenario_from_json(d["scenario"], where), dir=d["dir"],
                confirm=d.get("confirm", False), not_run=d.get("not_run"),
                results=d.get("results", ""), sockets=d.get("sockets") or "",
                machine=Machine(**d["machine"]) if d.get("machine") else None,
                kernel=d.get("kernel", ""), initrd=d.get("initrd", ""), disk=d.get("disk", ""),
                swap=d.get("swap", ""), timeout=d.get("timeout", 0.0),
                coverage_dir=cov.get("dir"), coverage_files=tuple(cov.get("files") or ()),
                kselftest_missing=d.get("kselftest_missing", ""))
        except (KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{where}: not a planned case ({type(e).__name__}: {e})") from None


def read_plan(doc: Any, where: str) -> list[CaseSpec]:
    """The planned cases of a plan.json or confirm.json document."""
    cases = doc.get("cases") if isinstance(doc, dict) else None
    if not isinstance(cases, list):
        raise UserError(f"{where}: not a farm plan (no list of cases)")
    return [CaseSpec.from_json(c, f"{where} (case {i})") for i, c in enumerate(cases)]


def plan_json(specs: list[CaseSpec]) -> dict:
    return {"cases": [s.to_json() for s in specs]}


@dataclass(frozen=True)
class CaseRecord:
    """One case as it ended. The first six fields every record has; a case that never ran
    has no timing, command or logs; a KTAP test of a selftest program names its `parent`."""
    id: str
    variant: str
    scenario: str
    repeat: int
    status: str  # STATUSES
    message: str
    confirm: bool = False
    page_kind: str | None = None
    injector: str | None = None
    access: str | None = None
    policy: dict | None = None  # {"early_kill": 0|1, "recovery": 0|1}
    cleanup: str | None = None
    why: str | None = None
    race: dict | None = None  # {"action", "rounds", "seed"} of a race scenario
    expected: dict | None = None
    observed: dict | None = None
    started: float | None = None
    seconds: float | None = None
    qemu_exit: int | None = None
    command: list | None = None
    # what judging needs beside the logs, so that `farm reparse` can judge them again
    timed_out: bool | None = None
    infra_error: str | None = None
    timeout: float | None = None
    kselftest_missing: str | None = None
    logs: dict | None = None  # console, agent, qemu: paths under the result directory
    coverage: dict | None = None
    kselftest: str | None = None
    subcases: tuple[CaseRecord, ...] | None = None
    parent: str | None = None

    @classmethod
    def of_spec(cls, spec: CaseSpec, status: str, message: str, **rest) -> CaseRecord:
        """A record of a planned case: what its scenario says, and how it ended."""
        s = spec.scenario
        return cls(spec.id, spec.variant, s.name, spec.repeat, status, message,
                   confirm=spec.confirm, page_kind=s.page, injector=s.injector,
                   access=s.access, policy={"early_kill": s.early_kill, "recovery": s.recovery},
                   cleanup=s.cleanup, why=s.why,
                   race={"action": s.race, "rounds": s.rounds, "seed": s.seed} if s.race
                   else None, **rest)

    @classmethod
    def not_run(cls, spec: CaseSpec, why: str) -> CaseRecord:
        """A planned case with no case.json: an error, with why it never ran."""
        return cls.of_spec(spec, "error", spec.not_run or why, expected={},
                           observed={}, seconds=0.0, logs={})

    def subcase(self, path: str, status: str, message: str, observed: dict) -> CaseRecord:
        """A KTAP test (`path`, '1' or '2.3') of this selftest program's record."""
        name = f"{self.scenario}/{path}"
        return replace(
            self, id=case_id(self.variant, name, self.repeat), scenario=name, status=status,
            message=message, why=f"KTAP test {path} of {self.why}", race=None,
            expected={"status": "pass"}, observed=observed, seconds=0.0, qemu_exit=None,
            command=None, timed_out=None, infra_error=None, timeout=None,
            kselftest_missing=None, coverage=None, kselftest=None, subcases=None,
            parent=self.id)

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = [c.to_json() for c in v] if f.name == "subcases" else v
        return out

    @classmethod
    def from_json(cls, d: Any, where: str) -> CaseRecord:
        """A case record as the reports need it, or bad input naming the file. Fields this
        farm does not know are left out."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: not a case record (a JSON object was expected)")
        for name in REQUIRED:
            if name not in d:
                raise UserError(f"{where}: not a case record (no '{name}')")
        values = {}
        for name, types in FIELD_TYPES.items():
            if name not in d:
                continue
            v = d[name]
            if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
                raise UserError(f"{where}: '{name}' has the wrong type ({type(v).__name__})")
            values[name] = v
        if values["status"] not in STATUSES:
            raise UserError(f"{where}: status '{values['status']}' is not one of "
                            f"{', '.join(STATUSES)}")
        if values.get("subcases") is not None:
            values["subcases"] = tuple(cls.from_json(sc, f"{where} (subcase {i})")
                                       for i, sc in enumerate(values["subcases"]))
        return cls(**values)


def _json_types(hint: Any) -> tuple[type, ...]:
    """The JSON values a field's annotation admits: a float field takes an int, a tuple
    field a list."""
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for a in typing.get_args(hint) for t in _json_types(a))
    origin = typing.get_origin(hint) or hint
    if hint is NoneType:
        return (NoneType,)
    if origin is float:
        return (int, float)
    if origin in (tuple, list):
        return (list, tuple)
    if origin in (dict, Mapping):
        return (dict,)
    return (origin,)


FIELD_TYPES: dict[str, tuple[type, ...]] = {
    name: _json_types(hint) for name, hint in typing.get_type_hints(CaseRecord).items()}
REQUIRED = tuple(f.name for f in fields(CaseRecord)[:6])
