"""The run's record: case files gathered into results.json, A/B verdicts per scenario, and
the exit code. Everything here is pure over saved data, so `farm report` can redo it."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from .errors import UserError
from .records import STATUSES, CaseRecord, CaseSpec

SCHEMA = 2
VERDICTS = ("same", "regression", "fixed", "changed", "error", "flaky")
CONFIRMED = ("regression", "fixed", "changed")  # re-run before they are final
FAIL_ON = ("changed", "flaky")  # verdicts a user may have fail the run, beside regression
# Observables that make two outcomes "the same" (PFN values and timings differ run to run).
SIGNATURE = ("guest", "recovery", "inject_signal", "access_signal", "early_signal",
             "si_addr_is_page", "si_addr_lsb", "data", "pfn_changed", "hardware_corrupted_kb",
             "fsync_errno", "inject_errno", "sibling_early_signal", "sibling_access_signal",
             "sibling_data", "huge_pages_lost", "unpoison_errno",
             "hardware_corrupted_kb_after_unpoison", "mce_logged", "panic", "kernel_errors")


def signature(case: dict) -> dict:
    obs = case.get("observed", {})
    sig = {k: obs.get(k) for k in SIGNATURE}
    sig["panic"] = obs.get("panic") is not None
    sig["kernel_errors"] = len(obs.get("kernel_errors") or [])
    sig.update({k: v for k, v in obs.items() if "." in k})  # access steps: pread.errno, ...
    return sig


def load_cases(results: Path) -> list[dict]:
    """The case records of a result directory, each checked (CaseRecord.from_json), as the
    results document holds them: a selftest program's KTAP tests follow it, each a case of
    its own."""
    cases = []
    for p in sorted((results / "cases").glob("*/*/*/case.json")):
        try:
            rec = CaseRecord.from_json(json.loads(p.read_text()), str(p))
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{p}: damaged case record ({e}); move it away and run "
                            f"`farm report` again to count the case as not run") from None
        except OSError as e:
            raise UserError(f"{p}: cannot read: {e.strerror}") from None
        cases.append(replace(rec, subcases=None).to_json())
        cases.extend(sc.to_json() for sc in rec.subcases or ())
    return cases


def missing_cases(plan: list[CaseSpec], cases: list[dict], why: str) -> list[dict]:
    """Planned cases with no case.json (interrupted, or a worker died): recorded as errors.
    A planned case may carry its own reason in not_run (a shard missing from a merge)."""
    done = {c["id"] for c in cases}
    return [CaseRecord.not_run(spec, why).to_json() for spec in plan if spec.id not in done]


def signature_diff(a: dict, b: dict) -> list[str]:
    """'key: A -> B' for each observable of two signatures that differs: those of SIGNATURE,
    then the access steps' (pread.errno, ...), which only some scenarios have."""
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in {**a, **b} if a.get(k) != b.get(k)]


def _consistent(cases: list[dict], observables: bool) -> tuple[bool, str]:
    """Whether the repeats of one side agree: on their status, and (when observables) on
    every observable of the signature."""
    statuses = {c["status"] for c in cases}
    if len(statuses) > 1:
        return False, "repeats disagree on status: " + ", ".join(
            f"r{c['repeat']}={c['status']}" for c in cases)
    if not observables:
        return True, ""
    sigs = [signature(c) for c in cases]
    for c, s in zip(cases[1:], sigs[1:], strict=True):
        if s != sigs[0]:
            return False, f"r{c['repeat']} differs from r{cases[0]['repeat']}: " + "; ".join(
                signature_diff(sigs[0], s))
    return True, ""


def compare(cases: list[dict], base: str, variants: list[str]) -> list[dict]:
    """One verdict per scenario and compared variant (every variant but the base), where
    both ran it (a case that was planned but not run is already an error case)."""
    by = defaultdict(list)
    for c in cases:
        by[(c["variant"], c["scenario"])].append(c)
    scenarios = list(dict.fromkeys(c["scenario"] for c in cases))
    out = []
    for v in variants:
        if v == base:
            continue
        for s in scenarios:
            a, b = by.get((base, s), []), by.get((v, s), [])
            if not a or not b:
                continue
            verdict, detail = _verdict(a, b, base, v)
            confirmed = any(c.get("confirm") for c in a + b)
            out.append({"scenario": s, "base": base, "variant": v, "verdict": verdict,
                        "detail": detail, "runs": {"base": _repeats(a), "variant": _repeats(b)},
                        "confirmed": confirmed})
    return out


def _verdict(a: list[dict], b: list[dict], base: str, variant: str) -> tuple[str, str]:
    errors = [c for c in a + b if c["status"] == "error"]
    if errors:
        c = errors[0]
        return "error", f"{c['variant']} r{c['repeat']}: {c['message']}"
    # Statuses first: a side whose repeats pass and fail is flaky. Where both sides agree on
    # one status each and the statuses differ (regression, fixed), how a failure looked may
    # vary with timing (an SRAR's SIGBUS at the injection or at the access) without making
    # the verdict less sure; where the statuses are the same, `changed` rests on the
    # observables, so those must agree between repeats too.
    for name, cs in ((base, a), (variant, b)):
        ok, why = _consistent(cs, observables=False)
        if not ok:
            return "flaky", f"{name}: {why}"
    if a[0]["status"] == b[0]["status"]:
        for name, cs in ((base, a), (variant, b)):
            ok, why = _consistent(cs, observables=True)
            if not ok:
                return "flaky", f"{name}: {why}"
    sa, sb = a[0]["status"], b[0]["status"]
    diff = signature_diff(signature(a[0]), signature(b[0]))
    if sa == "pass" and sb in ("fail", "skip"):  # a skip: the variant lost a capability
        return "regression", f"{variant}: {sb}: {b[0]['message']}"
    if sa in ("fail", "skip") and sb == "pass":
        return "fixed", f"{base}: {sa}: {a[0]['message']}"
    if sa != sb:
        return "changed", f"{base} {sa}, {variant} {sb}" + (f": {'; '.join(diff)}" if diff else "")
    if diff:
        return "changed", "; ".join(diff)
    return "same", ""


def _repeats(cases: list[dict]) -> str:
    """'3 pass' or 'pass, fail, pass': what the repeats of one side gave, in order."""
    statuses = [c["status"] for c in sorted(cases, key=lambda c: c["repeat"])]
    if len(set(statuses)) == 1:
        return f"{len(statuses)} {statuses[0]}"
    return ", ".join(statuses)


def totals(cases: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in cases:
        t = out.setdefault(c["variant"], dict.fromkeys(STATUSES, 0))
        t[c["status"]] += 1
    return out


def flaky_groups(cases: list[dict]) -> set[tuple[str, str]]:
    """(variant, scenario) whose repeats disagree on their status."""
    by: dict[tuple[str, str], set[str]] = defaultdict(set)
    for c in cases:
        by[(c["variant"], c["scenario"])].add(c["status"])
    return {k for k, st in by.items() if len(st - {"error"}) > 1}


def build_failures(doc: dict) -> list[str]:
    return [v for v, vdoc in doc["variants"].items()
            if (vdoc.get("build") or {}).get("status") == "failed"]


def exit_code(doc: dict) -> int:
    """0 nothing failed or regressed; 1 a failure or regression (or a patched variant whose
    kernel does not build while the base's does); 3 an infrastructure error (the base's
    kernel does not build, a case with no answer, an interrupted run). A case that failed in
    some repeats and passed in others is flaky: it fails the run only with --fail-on flaky,
    as a `changed` verdict does only with --fail-on changed."""
    fail_on = set(doc["run"].get("fail_on") or ())
    flaky = flaky_groups(doc["cases"])
    statuses = {c["status"] for c in doc["cases"]
                if (c["variant"], c["scenario"]) not in flaky or "flaky" in fail_on}
    verdicts = {c["verdict"] for c in doc["comparison"]}
    broken = build_failures(doc)
    base = doc["run"].get("base")
    if "fail" in statuses or {"regression", *fail_on} & verdicts or (
            broken and base not in broken):
        return 1
    if "error" in statuses or "error" in verdicts or doc["run"].get("interrupted") or broken:
        return 3
    return 0


def assemble(run: dict, variants: dict, cases: list[dict], base: str,
             scenario_order: list[str] | None = None) -> dict:
    """results.json: cases in variant, scenario (plan order) and repeat order."""
    order = list(variants)
    sorder = {s: i for i, s in enumerate(scenario_order or [])}

    def key(c: dict):
        return (order.index(c["variant"]) if c["variant"] in order else len(order),
                sorder.get(c["scenario"], len(sorder)), c["scenario"], c["repeat"])

    cases = sorted(cases, key=key)
    return {"schema": SCHEMA, "run": run, "variants": variants, "cases": cases,
            "comparison": compare(cases, base, order), "totals": totals(cases)}


