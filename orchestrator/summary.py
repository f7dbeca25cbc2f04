"""summary.md, the run at a glance in Markdown (what `farm run` prints at its end): the
scenarios by variants with each A/B verdict, the builds, the totals, the cases that did not
pass and the verdicts other than same."""

from __future__ import annotations

from collections import Counter

from .caserecords import CaseRecord, guests_of
from .coverage_report import summary_lines
from .inert import markdown
from .kernel_changes import changes_markdown
from .results import Results, RunInfo, bases_of
from .verdicts import Comparison, by_case


def builds_text(doc: Results) -> list[str]:
    out = []
    for v, info in doc.variants.items():
        b = info.build
        if not b:
            out.append(f"- {v}: not built (the run stopped before)")
        elif b.status == "failed":
            out.append(f"- {v}: **build FAILED** — {b.error}; log {b.log}")
            out += [f"  - `{ln}`" for ln in (b.error_lines or [])[:5]]
        else:
            out.append(f"- {v}: {b.status} {b.release} ({b.key})")
    return out


def race_note(race: dict) -> str:
    """A race's rounds at a glance: '10 rounds: data=unreadable 7, data=intact 3'."""
    data = Counter()
    for outcome, n in (race.get("outcomes") or {}).items():
        word = next((w for w in outcome.split() if w.startswith("data=")), "data=?")
        data[word] += n
    return f"{race.get('rounds')} rounds" + "".join(
        f"{', ' if i else ': '}{w} {n}" for i, (w, n) in enumerate(data.most_common()))


CELL_NOTES, NOTE_CHARS = 4, 160  # a summary cell stays a cell


def cell(cases: list[CaseRecord]) -> str:
    """What a variant's runs of a scenario gave: their status, and what the kernel did."""
    if not cases:
        return "-"
    statuses = [c.status for c in cases]
    text = statuses[0] if len(set(statuses)) == 1 else "/".join(statuses)
    obs = cases[0].obs
    notes = list(obs.get("recovery") or [])
    if isinstance(obs.get("race"), dict):
        notes = [race_note(obs["race"])]
    if obs.get("guest") not in (None, "survived"):
        notes.insert(0, f"guest {obs['guest']}")
    if len(notes) > CELL_NOTES:  # a guest that floods its console gives thousands
        notes = [*notes[:CELL_NOTES], f"and {len(notes) - CELL_NOTES} more"]
    if notes:
        text += " (" + "; ".join(n[:NOTE_CHARS] + "…" if len(n) > NOTE_CHARS else n
                                 for n in notes) + ")"
    return text


class Grid:
    """The results document as a table: scenarios (in order) by variants, each variant's
    cases of a scenario, and the verdict of each compared variant."""

    def __init__(self, doc: Results):
        self.variants = list(doc.variants)
        self.scenarios = list(dict.fromkeys(c.scenario for c in doc.cases))
        self.by = by_case(doc.cases)
        self.verdicts: dict[tuple[str, str], Comparison] = {
            (c.variant, c.scenario): c for c in doc.comparison}
        self.compared = [v for v in self.variants
                         if any(c.variant == v for c in doc.comparison)]
        self.bases = bases_of(doc.run, doc.variants)
        # each variant's kernel, named where a run has several (a record of an older farm
        # has none)
        kernels = {v: info.version() for v, info in doc.variants.items() if info.version()}
        self.kernels = kernels if len(set(kernels.values())) > 1 else {}

    def column(self, variant: str) -> str:
        """A variant's column: its name, and its kernel where the run has several."""
        k = self.kernels.get(variant)
        return f"{variant} ({k})" if k else variant

    def pair(self, variant: str) -> str:
        """A compared variant's verdict column: 'baseline → my-fix'."""
        return f"{self.bases.get(variant, variant)} → {variant}"

    def cases(self, variant: str, scenario: str) -> list[CaseRecord]:
        return self.by.get((variant, scenario), [])


def source_text(run: RunInfo) -> str:
    src = run.source  # absent when a run stopped before the source was ready
    return f"{src.describe} ({src.digest[:23]})" if src else "not prepared"


def kernels_text(doc: Results) -> str | None:
    """'6.12.118: baseline, my-fix; 6.1.192 (tarball:...6.1.tar.xz): baseline-6.1': the
    variants of each kernel, with the source of those that have their own; None for a run
    whose record names no kernel (an older farm's)."""
    if not any(info.kernel for info in doc.variants.values()):
        return None
    by: dict[str, list[str]] = {}
    for v, info in doc.variants.items():
        label = (info.version() or "?") + (f" ({info.source.describe})" if info.source else "")
        by.setdefault(label, []).append(v)
    return "; ".join(f"{label}: {', '.join(vs)}" for label, vs in by.items())


def boots_text(doc: Results) -> str:
    """How the run's guests started: '85 restored from a snapshot, 2 booted cold (why: 2)'
    ('' for a run whose cases say nothing of it: an older farm's)."""
    ran = guests_of(doc.cases)
    if not ran:
        return ""
    restored = sum(c.boot == "snapshot" for c in ran)
    why = Counter(c.boot_why or "?" for c in ran if c.boot == "cold")
    out = [f"{restored} restored from a snapshot"] if restored else []
    if why:
        out.append(f"{sum(why.values())} booted cold (" + "; ".join(
            f"{markdown(w)[:160]}: {n}" for w, n in why.most_common(3))
            + ("; ..." if len(why) > 3 else "") + ")")
    return ", ".join(out)


def _header(doc: Results) -> list[str]:
    run = doc.run
    accel = run.accel_reason if run.accel_reason is not None else run.accelerator
    kernels = kernels_text(doc)
    out = [f"# hwpoison farm run {run.id}", "",
           f"- kernel source: {source_text(run)}",
           *([f"- kernels: {kernels}"] if kernels else []),
           f"- accelerator: {accel}",
           *([f"- guests: {boots}"] if (boots := boots_text(doc)) else []),
           f"- config layers: {', '.join(run.layers or []) or 'none'}",
           f"- jobs: {run.jobs}, repeats: {run.repeat}, wall time: {run.seconds or 0:.0f}s"
           + (", INTERRUPTED" if run.interrupted else "")]
    if run.seed is not None:
        out.append(f"- race seed: {run.seed} (the same races again: --seed {run.seed})")
    if run.affected:  # the headline of --affected's account (all of it: run.json)
        lines = run.affected.splitlines()
        out.append("- " + next((ln for ln in lines if ln.startswith("--affected:")),
                               "--affected: " + lines[0]).rstrip(":"))
    return out


def summary(doc: Results, code: int, why: str = "") -> str:
    """The run as Markdown (summary.md, and what the terminal shows): every piece of text
    from a guest, a patch or a file inert (inert.py). why: what ended the run, when an
    error did."""
    g = Grid(doc)
    out = [*_header(doc), ""]
    head = ["scenario", *map(g.column, g.variants), *map(g.pair, g.compared)]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for s in g.scenarios:
        row = [s, *[cell(g.cases(v, s)) for v in g.variants],
               *[g.verdicts[(v, s)].verdict if (v, s) in g.verdicts else "-"
                 for v in g.compared]]
        out.append("| " + " | ".join(r.replace("|", "\\|") for r in row) + " |")
    out += ["", "## Builds", "", *builds_text(doc), ""]
    for v, t in doc.totals.items():
        out.append(f"- {v}: " + ", ".join(f"{n} {k}" for k, n in t.items()))
    counts = Counter(c.verdict for c in doc.comparison)
    if counts:
        out.append("- verdicts: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    notable = [c for c in doc.cases if c.status in ("fail", "error", "skip")]
    if notable:
        out += ["", "## Not passed", ""]
        out += [f"- {c.variant} / {c.scenario} r{c.repeat}: **{c.status}** — {c.message} "
                f"({c.log_paths.get('console', 'no log')})" for c in notable]
    changes = [c for c in doc.comparison if c.verdict != "same"]
    if changes:
        out += ["", "## A/B verdicts other than same", ""]
        out += [f"- {c.scenario}: {c.base} → {c.variant}: **{c.verdict}** "
                f"({c.runs_text()}) — {c.detail}" for c in changes]
    out += changes_markdown(doc)
    out += summary_lines(doc.coverage)
    out += ["", f"exit code {code}" + (f": {why}" if why else "")]
    return markdown("\n".join(out) + "\n")
