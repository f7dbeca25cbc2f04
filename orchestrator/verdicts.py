"""A/B verdicts: for each scenario and each variant but the base, what the variant's runs
did against the base's (same, regression, fixed, changed, error, flaky), from the two
sides' case records. Pure: records in, Comparisons out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from .caserecords import CaseRecord, Record

# Observables that make two outcomes "the same" (PFN values and timings differ run to run).
SIGNATURE = ("guest", "recovery", "inject_signal", "access_signal", "early_signal",
             "si_addr_is_page", "si_addr_lsb", "data", "pfn_changed", "hardware_corrupted_kb",
             "fsync_errno", "inject_errno", "sibling_early_signal", "sibling_access_signal",
             "sibling_data", "huge_pages_lost", "unpoison_errno",
             "hardware_corrupted_kb_after_unpoison", "mce_logged", "panic", "kernel_errors")


@dataclass(frozen=True)
class Runs(Record):
    """What the repeats of each side gave: '3 pass', or 'pass, fail, pass'."""
    WHAT: ClassVar[str] = "record of runs"
    base: str
    variant: str


@dataclass(frozen=True)
class Comparison(Record):
    """One scenario of one variant against the base: results.json's `comparison`."""
    WHAT: ClassVar[str] = "comparison"
    scenario: str
    base: str
    variant: str
    verdict: str  # VERDICTS
    detail: str
    runs: Runs | None = None  # (a comparison of an older farm may have none)
    confirmed: bool | None = None  # a run of either side confirmed the verdict

    def runs_text(self) -> str:
        """How the verdict was reached: the runs of each side, and whether it was
        confirmed."""
        if not self.runs:
            return ""
        text = f"{self.base}: {self.runs.base}; {self.variant}: {self.runs.variant}"
        return text + ("; confirmed by re-running both" if self.confirmed else "")


def signature(observed: dict | None) -> dict:
    """The observables two outcomes must share to be the same: those of SIGNATURE (a panic
    by whether there was one, kernel errors by how many), then the access steps' own."""
    obs = observed or {}
    sig = {k: obs.get(k) for k in SIGNATURE}
    sig["panic"] = obs.get("panic") is not None
    sig["kernel_errors"] = len(obs.get("kernel_errors") or [])
    sig.update({k: v for k, v in obs.items() if "." in k})  # access steps: pread.errno, ...
    return sig


def signature_diff(a: dict, b: dict) -> list[str]:
    """'key: A -> B' for each observable of two signatures that differs: those of SIGNATURE,
    then the access steps' (pread.errno, ...), which only some scenarios have."""
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in {**a, **b} if a.get(k) != b.get(k)]


def by_case(cases: Iterable[CaseRecord]) -> dict[tuple[str, str], list[CaseRecord]]:
    """The cases of each (variant, scenario), in their order."""
    by: dict[tuple[str, str], list[CaseRecord]] = defaultdict(list)
    for c in cases:
        by[(c.variant, c.scenario)].append(c)
    return by


def compare(cases: list[CaseRecord], base: str, variants: list[str],
            bases: dict[str, str] | None = None) -> tuple[Comparison, ...]:
    """One verdict per scenario and compared variant (every variant but a base, each with
    its own base where `bases` names one: a run of several kernels), where both ran it (a
    case that was planned but not run is already an error case)."""
    by = by_case(cases)
    scenarios = list(dict.fromkeys(c.scenario for c in cases))
    out = []
    for v in variants:
        b = (bases or {}).get(v, base)
        if v == b:
            continue
        for s in scenarios:
            ca, cb = by.get((b, s), []), by.get((v, s), [])
            if not ca or not cb:
                continue
            verdict, detail = _verdict(ca, cb, b, v)
            out.append(Comparison(s, b, v, verdict, detail, Runs(_repeats(ca), _repeats(cb)),
                                  any(c.confirm for c in ca + cb)))
    return tuple(out)


def _consistent(cases: list[CaseRecord], observables: bool) -> tuple[bool, str]:
    """Whether the repeats of one side agree: on their status, and (when observables) on
    every observable of the signature."""
    statuses = {c.status for c in cases}
    if len(statuses) > 1:
        return False, "repeats disagree on status: " + ", ".join(
            f"r{c.repeat}={c.status}" for c in cases)
    if not observables:
        return True, ""
    sigs = [signature(c.observed) for c in cases]
    for c, s in zip(cases[1:], sigs[1:], strict=True):
        if s != sigs[0]:
            return False, f"r{c.repeat} differs from r{cases[0].repeat}: " + "; ".join(
                signature_diff(sigs[0], s))
    return True, ""


def _verdict(a: list[CaseRecord], b: list[CaseRecord], base: str,
             variant: str) -> tuple[str, str]:
    errors = [c for c in a + b if c.status == "error"]
    if errors:
        c = errors[0]
        return "error", f"{c.variant} r{c.repeat}: {c.message}"
    # Statuses first: a side whose repeats pass and fail is flaky. Where both sides agree on
    # one status each and the statuses differ (regression, fixed), how a failure looked may
    # vary with timing (an SRAR's SIGBUS at the injection or at the access) without making
    # the verdict less sure; where the statuses are the same, `changed` rests on the
    # observables, so those must agree between repeats too.
    for name, cs in ((base, a), (variant, b)):
        ok, why = _consistent(cs, observables=False)
        if not ok:
            return "flaky", f"{name}: {why}"
    if a[0].status == b[0].status:
        for name, cs in ((base, a), (variant, b)):
            ok, why = _consistent(cs, observables=True)
            if not ok:
                return "flaky", f"{name}: {why}"
    sa, sb = a[0].status, b[0].status
    diff = signature_diff(signature(a[0].observed), signature(b[0].observed))
    if sa == "pass" and sb in ("fail", "skip"):  # a skip: the variant lost a capability
        return "regression", f"{variant}: {sb}: {b[0].message}"
    if sa in ("fail", "skip") and sb == "pass":
        return "fixed", f"{base}: {sa}: {a[0].message}"
    if sa != sb:
        return "changed", f"{base} {sa}, {variant} {sb}" + (f": {'; '.join(diff)}" if diff else "")
    if diff:
        return "changed", "; ".join(diff)
    return "same", ""


def _repeats(cases: list[CaseRecord]) -> str:
    """'3 pass' or 'pass, fail, pass': what the repeats of one side gave, in order."""
    statuses = [c.status for c in sorted(cases, key=lambda c: c.repeat)]
    if len(set(statuses)) == 1:
        return f"{len(statuses)} {statuses[0]}"
    return ", ".join(statuses)


def flaky_groups(cases: list[CaseRecord]) -> set[tuple[str, str]]:
    """(variant, scenario) whose repeats disagree on their status."""
    by: dict[tuple[str, str], set[str]] = defaultdict(set)
    for c in cases:
        by[(c.variant, c.scenario)].add(c.status)
    return {k for k, st in by.items() if len(st - {"error"}) > 1}
