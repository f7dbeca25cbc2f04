"""`farm reparse DIR`: a saved run judged again, from its logs and the current scenario file,
the way KUnit's `kunit.py parse` re-reads saved output. Every case with its logs is parsed,
observed and judged anew (a fixed parser or a corrected expectation takes effect), its
case.json rewritten when anything changed, then the reports; it says which cases changed
status and why. It boots nothing."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from .caserecords import CaseRecord, CaseSpec, read_plan
from .errors import UserError
from .farmfile import FarmConfig
from .files import claim, write_json
from .judge import expected_of, judge_logs, ktap_subcases
from .outputs import report_dir
from .progress import say
from .results import read_case, read_run
from .scenarios import Scenario
from .verdicts import signature, signature_diff


def _specs(results: Path) -> dict[str, CaseSpec]:
    """The planned cases of the run and of its confirmations, by case id: what each case was
    given (its timeout, a kselftest the tree did not have). A plan that cannot be read
    gives nothing: the case records say the same, in a run of this version."""
    out = {}
    for name in ("plan.json", "confirm.json"):
        try:
            out.update((s.id, s) for s in read_plan(json.loads((results / name).read_text()),
                                                    str(results / name)))
        except (OSError, ValueError, UserError):
            continue
    return out


BANNER = re.compile(r"Linux version (\d+\.\d+\.\d+[A-Za-z0-9_.+~-]{0,32}) ")


def kernel_of(rec: CaseRecord, spec: CaseSpec | None, kernels: dict[str, str],
              console: Path) -> str | None:
    """The version of the kernel a saved case ran: its variant's record in run.json, else its
    planned case's, else (a run of a farm that recorded none) the kernel's own banner at the
    top of its console log."""
    if kernels.get(rec.variant):
        return kernels[rec.variant]
    if spec and spec.scenario.kernel:
        return spec.scenario.kernel
    try:
        with open(console, errors="replace") as f:
            m = BANNER.search(f.read(1 << 16))
    except OSError:
        return None
    return m.group(1) if m else None


def reparse_case(path: Path, rec: CaseRecord, cfg: FarmConfig, scenarios: dict[str, Scenario],
                 spec: CaseSpec | None, kernels: dict[str, str] | None = None
                 ) -> tuple[CaseRecord, str]:
    """A saved case judged again, as its kernel's version is held to its scenario: (its new
    record, '' or why it was kept as it was)."""
    s = scenarios.get(rec.scenario.split("/")[0])
    if s is None:
        return rec, f"its scenario is not in {cfg.scenarios_path}: kept as it was"
    d = path.parent
    s = s.for_kernel(kernel_of(rec, spec, kernels or {}, d / "console.log"))
    if not (d / "console.log").is_file() or not (d / "agent.log").is_file():
        return rec, "no logs (it never ran): kept as it was"
    if s.race:  # the seed it ran with, whatever the file says now
        s = replace(s, seed=(rec.race or {}).get("seed", 0))
    obs0 = rec.observed or {}
    v = judge_logs(
        s, d / "console.log", d / "agent.log",
        timed_out=rec.timed_out if rec.timed_out is not None else obs0.get("guest") == "hung",
        infra_error=rec.infra_error,
        timeout=rec.timeout or (spec.timeout if spec else 0) or cfg.guest.timeout,
        missing=rec.kselftest_missing if rec.kselftest_missing is not None else (
            spec.kselftest_missing if spec else ""),
        injections=obs0.get("injections") or [])
    new = replace(rec, status=v.status, message=v.message, why=s.why,
                  expected=expected_of(s), observed=v.observed.to_json())
    if s.kselftest or s.program:
        new = replace(new, subcases=ktap_subcases(new, v.ktap)
                      if v.ktap and s.result != "exit" else ())
    return new, ""


def reparse_dir(results: Path, cfg: FarmConfig) -> int:
    """Judge every case of a saved result directory again and rewrite its reports."""
    if not (results / "run.json").is_file():
        raise UserError(f"{results}: not a farm result directory (no run.json)")
    lock = claim(results, fresh=False, flag="farm reparse", what="farm reparse")
    try:
        specs = _specs(results)
        scenarios = {s.name: s for s in cfg.scenarios}
        kernels = {v: info.kernel for v, info in read_run(results)[1].items() if info.kernel}
        changed, observed, kept, same = [], [], [], 0
        files = sorted((results / "cases").glob("*/*/r*/case.json"))
        for path in files:
            rec = read_case(path)
            new, why = reparse_case(path, rec, cfg, scenarios, specs.get(rec.id), kernels)
            label = f"{rec.variant} / {rec.scenario} r{rec.repeat}"
            if why:
                kept.append(f"- {label}: {why}")
            elif new == rec:
                same += 1
            else:
                write_json(path, new.to_json())
                line = _change(label, rec, new)
                (changed if new.status != rec.status else observed).append(line)
        say(f"farm reparse: {len(files)} cases judged again against {cfg.scenarios_path}: "
            f"{len(changed)} changed status, {len(observed)} changed what they observe or "
            f"say, {same + len(kept)} kept as they were\n"
            + "".join(line + "\n" for line in changed + observed + kept))
        return report_dir(results)
    finally:
        lock.release()


def _change(label: str, rec: CaseRecord, new: CaseRecord) -> str:
    """What judging a case again changed: its status, or what it observes or says."""
    if new.status != rec.status:
        return f"- {label}: {rec.status} → {new.status}: {new.message} (was: {rec.message})"
    diff = signature_diff(signature(rec.observed), signature(new.observed))
    if diff:
        return f"- {label}: still {new.status}; " + "; ".join(diff)
    if new.message != rec.message:
        return f"- {label}: still {new.status}; now: {new.message}"
    return f"- {label}: still {new.status}; what its scenario expects or says changed"
