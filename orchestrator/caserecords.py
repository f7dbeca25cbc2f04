"""The typed records of a case, and of the files the farm writes:

- Record: a frozen dataclass that is one JSON object of a result file. to_json() writes it;
  from_json() reads it back with every field's type checked from its annotation (nested
  records too), so that a damaged or hand-edited file is bad input that names itself and
  its field, never a traceback. A field with no value (None) is not written, unless null is
  one of its values (NULLABLE). A record of the run (KEEPS_ORDER: the run's, a variant's, a
  build's) read from a file writes back what it read: its keys in their order, those this
  farm does not know included, so that `farm report` of an older run writes them as they
  were (a field it lacks reads as None); but() changes such a record and keeps that (a key
  it adds comes last).
- CaseSpec: one planned case, from the plan to the pytest worker that runs it (plan.json and
  confirm.json hold them);
- CaseRecord: what one case gave, from the worker to the reports (each case's case.json,
  the `cases` of results.json). It is built in one place for each way a case ends (it ran,
  it never ran, a KTAP test of a selftest program).

A stage that changes a record makes a new one (dataclasses.replace, or but()). The observed
and expected values stay JSON objects inside a record: their keys are the scenario
language's observables (registry.OBSERVABLES, `<step>.<observable>`, `race.*`), typed where
the scenario file is validated and where parse.Observed builds them."""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields, replace
from types import NoneType, UnionType
from typing import Any, ClassVar

from .errors import UserError
from .qemu import Machine
from .registry import STATUSES
from .scenarios import Older, Scenario


class Record:
    """The JSON side of a dataclass of the result files (see the module's doc)."""
    WHAT: ClassVar[str] = "record"  # what the file holds, for the message when it does not
    NULLABLE: ClassVar[tuple[str, ...]] = ()  # fields whose None is written as null
    KEEPS_ORDER: ClassVar[bool] = False
    JSON_KEYS: ClassVar[dict[str, str]] = {}  # field -> its key where the two differ
    _order: tuple[str, ...] | None = None  # the keys as read (KEEPS_ORDER)
    _extra: dict | None = None  # what was read that no field holds (KEEPS_ORDER)

    def _present(self, name: str) -> bool:
        return getattr(self, name) is not None or name in self.NULLABLE

    def to_json(self) -> dict:
        names = {self.JSON_KEYS.get(f, f): f for f in _field_names(type(self))}
        if self._order is None:  # made here: every field that has a value, in their order
            return {key: _to_json(getattr(self, name)) for key, name in names.items()
                    if self._present(name)}
        out: dict[str, Any] = {}  # read from a file: what it held, as it held it
        for key in self._order:
            if key in names:
                out[key] = _to_json(getattr(self, names[key]))
            elif key in (self._extra or {}):
                out[key] = self._extra[key]
        return out

    @classmethod
    def from_json(cls, d: Any, where: str):
        """The record a JSON object holds, or bad input naming the file and the field."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: not a {cls.WHAT} (a JSON object was expected)")
        values = {}
        for name, hint in _hints(cls).items():
            key = cls.JSON_KEYS.get(name, name)
            if key in d:
                values[name] = _from_json(hint, d[key], where, key)
            elif name in _required(cls):
                raise UserError(f"{where}: not a {cls.WHAT} (no '{key}')")
            elif cls.KEEPS_ORDER:
                values[name] = None  # an older farm's record has none
        rec = cls(**values)
        rec.check(where)
        if cls.KEEPS_ORDER:
            keys = {cls.JSON_KEYS.get(n, n) for n in _hints(cls)}
            object.__setattr__(rec, "_order", tuple(d))
            object.__setattr__(rec, "_extra", {k: v for k, v in d.items() if k not in keys})
        return rec

    def check(self, where: str) -> None:
        """What the field types cannot say (a status one of STATUSES, ...)."""

    def but(self, **changes):
        """This record with these fields changed; one read from a file keeps its keys' order
        (a field it did not have comes after them, as a dict's new key would)."""
        new = replace(self, **changes)
        if self._order is not None:
            added = tuple(self.JSON_KEYS.get(k, k) for k in changes)
            object.__setattr__(new, "_order", self._order + tuple(
                k for k in added if k not in self._order))
            object.__setattr__(new, "_extra", self._extra)
        return new


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {n: h for n, h in typing.get_type_hints(cls).items() if n in names}


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@functools.cache
def _required(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls)
                     if f.default is MISSING and f.default_factory is MISSING)


def _to_json(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, tuple | list):
        return [_to_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _to_json(x) for k, x in v.items()}
    return v


def _record_type(hint: Any) -> type | None:
    return hint if isinstance(hint, type) and issubclass(hint, Record) else None


def _from_json(hint: Any, v: Any, where: str, key: str) -> Any:
    """A field's value from JSON, by its annotation: records (alone, in a tuple, as a dict's
    values) are read as such, everything else checked for its JSON type."""
    args = typing.get_args(hint)
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        if v is None and NoneType in args:
            return None
        inner = [a for a in args if a is not NoneType]
        if len(inner) == 1 and _is_nested(inner[0]):
            return _from_json(inner[0], v, where, key)
    elif _is_nested(hint):
        origin, rec = typing.get_origin(hint), _record_type(hint)
        if rec is not None and isinstance(v, dict):
            return rec.from_json(v, f"{where} ({key})")
        one = key.removesuffix("s")  # "(case 3)", "(subcase 0)", "(variant baseline)"
        if origin is tuple and isinstance(v, list):
            return tuple(args[0].from_json(x, f"{where} ({one} {i})") for i, x in enumerate(v))
        if origin is dict and isinstance(v, dict):
            return {k: args[1].from_json(x, f"{where} ({one} {k})") for k, x in v.items()}
    types = _json_types(hint)
    if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
        raise UserError(f"{where}: '{key}' has the wrong type ({type(v).__name__})")
    return v


def _is_nested(hint: Any) -> bool:
    """A record, a tuple of records or a dict of them."""
    if _record_type(hint):
        return True
    args = typing.get_args(hint)
    return bool(args) and any(_record_type(a) for a in args)


def _json_types(hint: Any) -> tuple[type, ...]:
    """The JSON values an annotation admits: a float field takes an int, a tuple field a
    list, a record a JSON object."""
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for a in typing.get_args(hint) for t in _json_types(a))
    origin = typing.get_origin(hint) or hint
    if hint is NoneType:
        return (NoneType,)
    if origin is float:
        return (int, float)
    if origin in (tuple, list):
        return (list, tuple)
    if origin in (dict, Mapping) or _record_type(origin):
        return (dict,)
    return (origin,)


def guests_of(cases: list[CaseRecord]) -> list[CaseRecord]:
    """The cases that ran a guest of their own and say how it started (not a KTAP test of a
    program's guest, not an older farm's case)."""
    return [c for c in cases if c.boot and c.parent is None]


def case_id(variant: str, scenario: str, repeat: int) -> str:
    """A case's id, everywhere: 'baseline::anon-madvise::r1' (a KTAP subtest's scenario is
    'program/1.2')."""
    return f"{variant}::{scenario}::r{repeat}"


def parse_case_id(cid: str) -> tuple[str, str, str]:
    """(variant, scenario, 'rN') of a case id; missing parts are ''."""
    return tuple((cid.split("::") + ["", ""])[:3])


def scenario_from_json(d: Any, where: str) -> Scenario:
    """A scenario as a plan or a shard's record holds it (dataclasses.asdict of it)."""
    try:
        older = tuple(Older(**o) for o in d.get("older") or ())
        return Scenario(**{**d, "older": older, "args": tuple(d.get("args") or ())})
    except (TypeError, AttributeError) as e:
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
    boot: str = "snapshot"  # guest.boot: snapshot | cold (snapshot.py)
    boot_why: str = ""  # why a case of a snapshot run boots cold (case.alone_cold)

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
                       kselftest_missing=self.kselftest_missing, boot=self.boot,
                       **({"boot_why": self.boot_why} if self.boot_why else {}))
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
                kselftest_missing=d.get("kselftest_missing", ""),
                boot=d.get("boot", "snapshot"), boot_why=d.get("boot_why", ""))
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
class CaseRecord(Record):
    """One case as it ended. The first six fields every record has; a case that never ran
    has no timing, command or logs; a KTAP test of a selftest program names its `parent`."""
    WHAT: ClassVar[str] = "case record"
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
    boot: str | None = None  # snapshot (restored) | cold
    boot_why: str | None = None  # why a case booted cold

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

    def check(self, where: str) -> None:
        if self.status not in STATUSES:
            raise UserError(f"{where}: status '{self.status}' is not one of "
                            f"{', '.join(STATUSES)}")

    @property
    def obs(self) -> dict:
        """What it observed ({} when it never ran)."""
        return self.observed or {}

    @property
    def log_paths(self) -> dict:
        return self.logs or {}
