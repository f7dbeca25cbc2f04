"""`farm bisect`: for a variant whose patch series regresses scenarios against the base, the
first patch of the series that makes each of them regress.

The search is the pure function `search`: it asks an oracle what a prefix of the series (its
first k patches) does to a group of scenarios, and halves each scenario's window of
(last good prefix, first bad prefix) until the two are neighbours. Scenarios that share a
window are tested together, so they build each prefix once; where their answers differ they
split. A prefix whose kernel does not build, whose guests error or whose repeats disagree is
skipped, as `git bisect skip` does, and its nearest untested neighbour is tried instead; when
every prefix between good and bad was skipped, the answer is the range.

`bisect` is the farm's oracle: each prefix is a variant of its own (`<variant>.<k>`, its build
found in the shared cache when any run built it before), run on the scenarios of the group
with `--repeat` runs each, in a result directory under the bisection's own."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from junit_xml import TestCase, TestSuite

from .caserecords import CaseRecord
from .errors import UserError
from .farmfile import FarmConfig, Variant
from .files import atomic_write, claim, new_run_id, write_json
from .junit import junit_text
from .options import RunOptions
from .plan import select
from .progress import Progress, fmt_seconds, say
from .results import Results, read_results
from .run import run
from .verdicts import signature, signature_diff

GOOD, BAD = "good", "bad"  # other outcomes of a prefix (flaky, error, ...) are skips


@dataclass
class Window:
    """One scenario's search: prefix `good` passes, prefix `bad` regresses."""
    good: int
    bad: int
    skipped: dict[int, str] = field(default_factory=dict)  # prefix -> why it was skipped

    def next(self) -> int | None:
        """The prefix to test next: the middle of the window, or the untested prefix nearest
        to it; None when the window is closed or every prefix in it was skipped."""
        left = [k for k in range(self.good + 1, self.bad) if k not in self.skipped]
        if not left:
            return None
        mid = (self.good + self.bad) // 2
        return min(left, key=lambda k: (abs(k - mid), k))


Oracle = Callable[[int, list[str]], dict[str, tuple[str, str]]]


def search(n: int, scenarios: list[str], test: Oracle) -> dict[str, Window]:
    """For each scenario (good with no patch, bad with all n), the window that holds its
    first bad patch: closed (bad == good + 1) unless skips left a range. `test(k, names)`
    returns, per name, the outcome of prefix k (good, bad or anything else, a skip) and why."""
    windows = {s: Window(0, n) for s in scenarios}
    while True:
        todo: dict[tuple, list[str]] = {}
        for s, w in windows.items():
            k = w.next()
            if k is not None:
                todo.setdefault((k, w.good, w.bad, tuple(sorted(w.skipped))), []).append(s)
        if not todo:
            return windows
        (k, *_), group = min(todo.items())
        out = test(k, group)
        for s in group:
            outcome, why = out.get(s, ("error", "no answer"))
            if outcome == GOOD:
                windows[s].good = k
            elif outcome == BAD:
                windows[s].bad = k
            else:
                windows[s].skipped[k] = why


def outcome_of(cases: list[CaseRecord]) -> tuple[str, str]:
    """A prefix's outcome for one scenario from its repeats, by the farm's verdict rules
    against a base that passes: all pass is good, all fail or skip is bad (a regression);
    repeats that disagree or an infrastructure error are skips."""
    statuses = [c.status for c in cases]
    if not statuses:
        return "error", "no case ran"
    if "error" in statuses:
        c = next(c for c in cases if c.status == "error")
        return "error", c.message
    if set(statuses) == {"pass"}:
        return GOOD, f"{len(statuses)} pass"
    if "pass" not in statuses:
        return BAD, ", ".join(statuses)
    return "flaky", "repeats disagree: " + ", ".join(statuses)


@dataclass(frozen=True)
class Patch:
    index: int  # 1-based: the prefix that ends with it
    path: str
    subject: str
    files: tuple[str, ...]

    @classmethod
    def read(cls, index: int, path: Path) -> Patch:
        text = path.read_text(errors="replace")
        m = re.search(r"^Subject:\s*(?:\[[^\]]*\]\s*)?(.+(?:\n[ \t].+)*)", text, re.M)
        subject = " ".join(m.group(1).split()) if m else path.name
        files = tuple(dict.fromkeys(
            f[2:] if f.startswith("b/") else f for f in re.findall(r"^\+\+\+ (\S+)", text, re.M)
            if f != "/dev/null"))
        return cls(index, str(path), subject, files)


def _diff(a: CaseRecord | None, b: CaseRecord | None) -> list[str]:
    """What changed between a scenario's case at the last good and the first bad prefix."""
    return signature_diff(signature(a.observed), signature(b.observed)) if a and b else []


class _Bisection:
    """The farm as bisect's oracle: each prefix a variant of its own, run on a group of
    scenarios; what each round gave is kept for the report."""

    def __init__(self, cfg: FarmConfig, variant: str, repeat: int, jobs: int | None, out: Path,
                 progress: Progress, run_fn: Callable):
        self.cfg, self.variant, self.repeat, self.jobs = cfg, variant, repeat, jobs
        self.out, self.progress, self.run_fn = out, progress, run_fn
        self.series = cfg.variants[variant]
        self.n = len(self.series.patches)
        self.steps: list[dict] = []
        self.first_case: dict[tuple[int, str], CaseRecord] = {}  # (prefix, scenario) -> one
        self.interrupted: str | None = None

    def prefix(self, k: int) -> Variant:
        """The variant of the series' first k patches (0: the base, n: the variant)."""
        if k == 0:
            return self.cfg.variants[self.cfg.base]
        if k == self.n:
            return self.series
        return replace(self.series, name=f"{self.variant}.{k}",
                       patches=self.series.patches[:k],
                       description=f"{self.variant}, its first {k} of {self.n} patches")

    def round(self, prefixes: list[int], names: list[str] | None) -> dict:
        """Run these prefixes on these scenarios (None: all): prefix -> scenario ->
        (outcome, why)."""
        cfg = self.cfg
        vs = {self.prefix(k).name: self.prefix(k) for k in prefixes}
        where = self.out / "steps" / "-".join(f"p{k}" for k in prefixes)
        opts = RunOptions(results=where, variants=tuple(vs), repeat=self.repeat,
                          jobs=self.jobs, confirm=0, tier="full",
                          scenarios=",".join(names) if names is not None else None)
        self.progress.say(f"bisect: prefix {', '.join(map(str, prefixes))} of {self.n} on "
                          f"{len(names) if names is not None else 'every'} scenario(s), "
                          f"{self.repeat} run(s) each: {where}")
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            self.run_fn(replace(cfg, variants={cfg.base: cfg.variants[cfg.base], **vs}), opts,
                        self.progress)
        doc = read_results(where)
        if doc.run.interrupted:
            self.interrupted = doc.run.interrupted
            raise KeyboardInterrupt
        return {k: self._outcomes(doc, k, where) for k in prefixes}

    def _outcomes(self, doc: Results, k: int, where: Path) -> dict[str, tuple[str, str]]:
        """What prefix k did to each scenario of the round, kept as a step of the report."""
        vname = self.prefix(k).name
        build = doc.variants[vname].build
        mine = [c for c in doc.cases if c.variant == vname and not c.parent]
        outcomes = {}
        for s in sorted({c.scenario for c in mine}):
            cs = [c for c in mine if c.scenario == s]
            self.first_case.setdefault((k, s), cs[0])
            if build is not None and build.status == "failed":
                outcomes[s] = ("error", f"the kernel did not build: {build.error}")
            else:
                outcomes[s] = outcome_of(cs)
        self.steps.append({"prefix": k, "variant": vname, "results": str(where),
                           "build": build.status if build else None, "outcomes": {
                               s: {"outcome": o, "why": w} for s, (o, w) in outcomes.items()}})
        return outcomes


def _series(cfg: FarmConfig, variant: str) -> Variant:
    """The variant to bisect: one beside the base, with patches."""
    if variant == cfg.base:
        raise UserError(f"--variant {variant} is the base; bisect a variant with patches")
    if variant not in cfg.variants:
        raise UserError(f"--variant: unknown variant {variant} (known: "
                        f"{', '.join(v for v in cfg.variants if v != cfg.base)})")
    if not cfg.variants[variant].patches:
        raise UserError(f"variant {variant} has no patches to bisect")
    return cfg.variants[variant]


def bisect(cfg: FarmConfig, variant: str, scenarios: list[str] | None, repeat: int,
           jobs: int | None, out: Path, progress: Progress,
           run_fn: Callable | None = None) -> int:
    """Bisect `variant`'s series on `scenarios` (None: every scenario the first round finds
    regressed). Writes bisect.json, bisect.md and bisect.xml into `out`; returns the exit
    code: 1 a first bad patch was found (the series regresses), 0 nothing regressed, 3 no
    answer (interrupted, or the base or the whole series gave none)."""
    series = _series(cfg, variant)
    b = _Bisection(cfg, variant, repeat, jobs, out, progress, run_fn or run)
    n = b.n
    patches = [Patch.read(i + 1, p) for i, p in enumerate(series.patches)]
    started = datetime.now(UTC)
    t0 = time.monotonic()
    windows: dict[str, Window] = {}
    regressed: list[str] = []
    try:
        ends = b.round([0, n], scenarios)
        base, whole = ends[0], ends[n]
        regressed = [s for s in base if base[s][0] == GOOD and whole.get(s, ("", ""))[0] == BAD]
        for s in (scenarios or ()):
            if s not in regressed:
                progress.say(f"bisect: {s} does not regress here (base: "
                             f"{base.get(s, ('none', ''))[1]}; {variant}: "
                             f"{whole.get(s, ('none', ''))[1]}): not bisected")
        if regressed:
            windows = search(n, regressed, lambda k, names: b.round([k], names)[k])
    except KeyboardInterrupt as e:
        b.interrupted = b.interrupted or getattr(e, "how", "Ctrl-C")
    doc = report(cfg, variant, patches, windows, regressed, b.steps, b.first_case, repeat,
                 b.interrupted, started, time.monotonic() - t0)
    write_json(out / "bisect.json", doc)
    text = summary(doc)
    atomic_write(out / "bisect.md", text)
    atomic_write(out / "bisect.xml", junit(doc))
    atomic_write(out / "bisect.html", html_page(doc))
    say(text)
    progress.say(f"bisect done in {fmt_seconds(doc['seconds'])}: {out}")
    if b.interrupted or not b.steps:
        return 3
    return 1 if any(r["status"] in ("found", "range") for r in doc["results"]) else 0


def report(cfg: FarmConfig, variant: str, patches: list[Patch], windows: dict[str, Window],
           regressed: list[str], steps: list[dict], first_case: dict, repeat: int,
           interrupted: str | None, started: datetime, seconds: float) -> dict:
    results = []
    for s in regressed:
        w = windows.get(s)
        if w is None:
            results.append({"scenario": s, "status": "not bisected", "first_bad": None})
            continue
        row = {"scenario": s, "good": w.good, "bad": w.bad,
               "skipped": {str(k): why for k, why in sorted(w.skipped.items())}}
        if w.bad == w.good + 1:
            p = patches[w.bad - 1]
            row.update(status="found", first_bad=p.index, patch=p.path, subject=p.subject,
                       files=list(p.files),
                       changed=_diff(first_case.get((w.good, s)), first_case.get((w.bad, s))))
        else:
            row.update(status="range", first_bad=None, candidates=[
                {"index": p.index, "subject": p.subject} for p in patches[w.good:w.bad]])
        results.append(row)
    return {"schema": 1, "variant": variant, "base": cfg.base, "repeat": repeat,
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(seconds, 1), "interrupted": interrupted,
            "patches": [{"index": p.index, "path": p.path, "subject": p.subject,
                         "files": list(p.files)} for p in patches],
            "builds": sorted({st["prefix"] for st in steps}), "steps": steps,
            "results": results}


def summary(doc: dict) -> str:
    n = len(doc["patches"])
    out = [f"## Bisect of {doc['variant']} ({n} patches) against {doc['base']}", ""]
    if doc["interrupted"]:
        out += [f"Interrupted ({doc['interrupted']}): what was found so far.", ""]
    if not doc["results"] and doc["interrupted"]:
        out += ["No answer: the first round (the base and the whole series) did not end.", ""]
    elif not doc["results"]:
        out += ["No scenario regressed with the whole series: nothing to bisect.", ""]
    else:
        out += ["| scenario | first bad patch | subject | files | what changed at it |",
                "| --- | --- | --- | --- | --- |"]
        for r in doc["results"]:
            if r["status"] == "found":
                out.append(f"| {r['scenario']} | {r['first_bad']}/{n} | {r['subject']} | "
                           f"{', '.join(r['files'])} | {'; '.join(r['changed']) or '-'} |")
            elif r["status"] == "range":
                cands = ", ".join(str(c["index"]) for c in r["candidates"])
                why = "; ".join(f"{k}: {w}" for k, w in r["skipped"].items())
                out.append(f"| {r['scenario']} | one of {cands} | (prefixes skipped: {why}) "
                           f"| | |")
            else:
                out.append(f"| {r['scenario']} | {r['status']} | | | |")
        out.append("")
    out.append(f"{len(doc['builds'])} prefixes run ({', '.join(map(str, doc['builds']))} of "
               f"{n} patches), {doc['repeat']} run(s) of each scenario at each, in "
               f"{fmt_seconds(doc['seconds'])}.")
    return "\n".join(out) + "\n"


def junit(doc: dict) -> str:
    cases, props = [], {"variant": doc["variant"], "base": doc["base"],
                        "patches": str(len(doc["patches"]))}
    for r in doc["results"]:
        tc = TestCase(name=r["scenario"], classname=f"bisect.{doc['variant']}", elapsed_sec=0.0)
        if r["status"] == "found":
            props[f"first_bad.{r['scenario']}"] = f"{r['first_bad']}: {r['subject']}"
            tc.add_failure_info(message=f"first bad patch {r['first_bad']}: {r['subject']} "
                                        f"({', '.join(r['files'])})", failure_type="regression")
        elif r["status"] == "range":
            props[f"first_bad.{r['scenario']}"] = "one of " + ", ".join(
                str(c["index"]) for c in r["candidates"])
            tc.add_failure_info(message=props[f"first_bad.{r['scenario']}"],
                                failure_type="regression")
        else:
            tc.add_error_info(message=r["status"], error_type="infrastructure")
        cases.append(tc)
    return junit_text([TestSuite(f"bisect.{doc['variant']}", cases, properties=props)])


def html_page(doc: dict) -> str:
    import html as h
    rows = "".join(
        "<tr>" + "".join(f"<td>{h.escape(str(x))}</td>" for x in (
            r["scenario"], r.get("first_bad") or r["status"], r.get("subject", ""),
            ", ".join(r.get("files", [])), "; ".join(r.get("changed", [])))) + "</tr>"
        for r in doc["results"])
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>bisect '
            f"{h.escape(doc['variant'])}</title></head><body><h1>Bisect of "
            f"{h.escape(doc['variant'])} against {h.escape(doc['base'])}</h1>"
            "<table border=1><tr><th>scenario</th><th>first bad patch</th><th>subject</th>"
            f"<th>files</th><th>what changed at it</th></tr>{rows}</table></body></html>\n")


def command(cfg: FarmConfig, variant: str | None, patterns: str | None, from_dir: Path | None,
            repeat: int, jobs: int | None, results: Path | None, progress: Progress) -> int:
    """`farm bisect`: which variant and scenarios, where the bisection's files go."""
    others = [v for v in cfg.variants if v != cfg.base]
    if variant is None:
        if len(others) != 1:
            raise UserError("--variant: which variant's series to bisect? (one of: "
                            f"{', '.join(others) or 'none but the base'})")
        variant = others[0]
    names: list[str] | None = None
    if from_dir is not None:
        try:
            saved = read_results(from_dir)
        except UserError as e:
            raise UserError(f"--from {from_dir}: {e}") from None
        names = [c.scenario for c in saved.comparison if c.variant == variant
                 and c.verdict == "regression" and "/" not in c.scenario]
        if not names:
            say(f"{from_dir}: no scenario regressed with {variant}: nothing to bisect\n")
            return 0
    elif patterns:
        names = [s.name for s in select(cfg, RunOptions(scenarios=patterns, tier="full"))[1]]
    out = (results or cfg.path.parent / "results" / f"bisect-{new_run_id(datetime.now(UTC))}")
    lock = claim(out.resolve(), fresh=True)
    try:
        return bisect(cfg, variant, names, repeat, jobs, out.resolve(), progress)
    finally:
        lock.release()
