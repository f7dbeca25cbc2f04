"""The run's record: case files gathered into results.json, A/B verdicts per scenario, and
the exit code. Everything here is pure over saved data, so `farm report` can redo it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

SCHEMA = 1
STATUSES = ("pass", "fail", "error", "skip")
VERDICTS = ("same", "regression", "fixed", "changed", "error", "flaky")
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
    return sig


def load_cases(results: Path) -> list[dict]:
    cases = []
    for p in sorted((results / "cases").glob("*/*/*/case.json")):
        try:
            case = json.loads(p.read_text())
        except ValueError:
            continue  # a case cut off mid-write: it counts as not run
        subcases = case.pop("subcases", [])
        cases.append(case)
        cases.extend(subcases)  # a selftest program's KTAP tests, each a case of its own
    return cases


def missing_cases(plan: list[dict], cases: list[dict], why: str) -> list[dict]:
    """Plan entries with no case.json (interrupted, or a worker died): recorded as errors.
    An entry may carry its own reason in "not_run" (a shard missing from a merge)."""
    done = {c["id"] for c in cases}
    out = []
    for spec in plan:
        if spec["id"] in done:
            continue
        s = spec["scenario"]
        out.append({"id": spec["id"], "variant": spec["variant"], "scenario": s["name"],
                    "repeat": spec["repeat"], "status": "error",
                    "message": spec.get("not_run", why),
                    "page_kind": s["page"], "injector": s["injector"], "access": s["access"],
                    "policy": {"early_kill": s["early_kill"], "recovery": s.get("recovery", 1)},
                    "cleanup": s.get("cleanup", "none"), "why": s["why"],
                    "expected": {}, "observed": {}, "seconds": 0.0, "logs": {}})
    return out


def _diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in SIGNATURE if a.get(k) != b.get(k)]


def _consistent(cases: list[dict]) -> tuple[bool, str]:
    statuses = {c["status"] for c in cases}
    if len(statuses) > 1:
        return False, "repeats disagree on status: " + ", ".join(
            f"r{c['repeat']}={c['status']}" for c in cases)
    sigs = [signature(c) for c in cases]
    for c, s in zip(cases[1:], sigs[1:], strict=True):
        if s != sigs[0]:
            return False, f"r{c['repeat']} differs from r{cases[0]['repeat']}: " + "; ".join(
                _diff(sigs[0], s))
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
            out.append({"scenario": s, "base": base, "variant": v, "verdict": verdict,
                        "detail": detail})
    return out


def _verdict(a: list[dict], b: list[dict], base: str, variant: str) -> tuple[str, str]:
    errors = [c for c in a + b if c["status"] == "error"]
    if errors:
        c = errors[0]
        return "error", f"{c['variant']} r{c['repeat']}: {c['message']}"
    for name, cs in ((base, a), (variant, b)):
        ok, why = _consistent(cs)
        if not ok:
            return "flaky", f"{name}: {why}"
    sa, sb = a[0]["status"], b[0]["status"]
    diff = _diff(signature(a[0]), signature(b[0]))
    if sa == "pass" and sb == "fail":
        return "regression", f"{variant}: {b[0]['message']}"
    if sa == "fail" and sb == "pass":
        return "fixed", f"{base}: {a[0]['message']}"
    if sa != sb:
        return "changed", f"{base} {sa}, {variant} {sb}" + (f": {'; '.join(diff)}" if diff else "")
    if diff:
        return "changed", "; ".join(diff)
    return "same", ""


def totals(cases: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in cases:
        t = out.setdefault(c["variant"], dict.fromkeys(STATUSES, 0))
        t[c["status"]] += 1
    return out


def exit_code(doc: dict) -> int:
    """0 nothing failed or regressed; 1 a failure or regression; 3 an infrastructure error."""
    statuses = {c["status"] for c in doc["cases"]}
    verdicts = {c["verdict"] for c in doc["comparison"]}
    if "fail" in statuses or "regression" in verdicts:
        return 1
    if "error" in statuses or "error" in verdicts or doc["run"].get("interrupted"):
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


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
