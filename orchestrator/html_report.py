"""report.html, the page a person reads, answer first: the totals per variant, a grid of page
kinds by injectors coloured by each scenario's worst verdict, the verdicts other than same
with their observables side by side, the errors, then the full table (which a checkbox
narrows to what is not `same`), the builds, coverage and every case that did not pass.
Everything that came from a guest is escaped; the page runs no script."""

from __future__ import annotations

import html
from collections import Counter

from .build import BuildResult
from .caserecords import CaseRecord
from .inert import inert, relative_link
from .kernel_changes import kernel_pairs, scenario_list
from .registry import INJECTORS, PAGE_KINDS
from .results import Results, bases_of
from .summary import Grid, cell, kernels_text, source_text
from .verdicts import signature


def e(text) -> str:
    """Text for the page: HTML-escaped, and its control characters written as escapes."""
    return html.escape(inert(str(text)))


COLORS = {"pass": "#c8f0c8", "fail": "#f7c1c1", "error": "#f7dc9c", "skip": "#dddddd",
          "same": "#eeeeee", "regression": "#f08080", "fixed": "#90d890",
          "changed": "#a8c8f0", "flaky": "#e0b0f0"}
# Worst first: what a grid cell shows when its scenario has several outcomes.
VERDICT_RANK = ("regression", "error", "flaky", "changed", "fixed", "same")
STATUS_RANK = ("error", "fail", "skip", "pass")
STYLE = """body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse}
td,th{border:1px solid #999;padding:4px 8px;vertical-align:top;text-align:left}
tr.diff td{background:#fde0e0;font-weight:bold} h1{margin:0 0 .2em} p.meta{margin:0}
#grid td{padding:2px;min-width:2em} #grid th{font-size:85%}
a.box{display:inline-block;margin:1px;padding:1px 3px;font-size:75%;color:#000;
text-decoration:none;border:1px solid #777;border-radius:2px}
#notsame:checked ~ #matrix tr.quiet{display:none} """


def rank(order: tuple[str, ...], value: str) -> int:
    """Where a verdict or status stands in its order, worst first; one it does not know
    counts as the worst."""
    return order.index(value) if value in order else 0


def worst(doc: Results, g: Grid, scenario: str) -> str:
    """A scenario's worst A/B verdict over the compared variants, else (a run of one
    variant) its worst status over every case of it."""
    verdicts = [c.verdict for c in doc.comparison if c.scenario == scenario]
    if verdicts:
        return min(verdicts, key=lambda v: rank(VERDICT_RANK, v))
    statuses = [c.status for v in g.variants for c in g.cases(v, scenario)]
    return min(statuses or ["error"], key=lambda s: rank(STATUS_RANK, s))


def _side_by_side(doc: Results, g: Grid) -> list[str]:
    """For each verdict other than same: the observables of base and variant next to each
    other, the ones that differ marked."""
    out = []
    for c in sorted(doc.comparison, key=lambda c: rank(VERDICT_RANK, c.verdict)):
        a, b = g.cases(c.base, c.scenario), g.cases(c.variant, c.scenario)
        if c.verdict == "same" or not a or not b:
            continue
        sa, sb = signature(a[0].observed), signature(b[0].observed)
        keys = [k for k in {**sa, **sb} if sa.get(k) is not None or sb.get(k) is not None]
        rows = "".join(
            f"<tr{' class=diff' if sa.get(k) != sb.get(k) else ''}><td>{e(k)}</td>"
            f"<td>{e(repr(sa.get(k)))}</td><td>{e(repr(sb.get(k)))}</td></tr>" for k in keys)
        out.append(
            f'<h3 id="{e(c.variant)}--{e(c.scenario)}">{e(c.scenario)}: '
            f'<span class="v-{e(c.verdict)}">{e(c.verdict)}</span></h3>'
            f"<p>{e(c.detail)}</p><p class=runs>runs: {e(c.runs_text())}</p>"
            f"<table><tr><th>observable</th><th>{e(c.base)} "
            f"({e(a[0].status)})</th><th>{e(c.variant)} ({e(b[0].status)})</th></tr>"
            f"{rows}</table>")
    return out


def _kernels_html(doc: Results) -> str:
    """What memory failure does differently on the run's kernels: a table per pair."""
    out = []
    for p in kernel_pairs(doc):
        rows = "".join(f"<tr><td>{e(scenario_list(ss)) if i == 0 else ''}</td><td>{e(obs)}"
                       f"</td><td>{e(repr(a))}</td><td>{e(repr(b))}</td></tr>"
                       for ss, diff in p.groups() for i, (obs, a, b) in enumerate(diff))
        out.append(f'<h2 id="kernels">What memory failure does differently: '
                   f"{e(p.older_kernel)} → {e(p.newer_kernel)}</h2><p>{e(p.older)} against "
                   f"{e(p.newer)}: {len({c.scenario for c in p.changes})} scenario(s) differ, "
                   f"{p.same} behave alike, {len(p.unjudged)} not compared</p>"
                   + (f"<table><tr><th>scenarios</th><th>observable</th><th>{e(p.older_kernel)}"
                      f"</th><th>{e(p.newer_kernel)}</th></tr>{rows}</table>" if rows else ""))
    return "".join(out)


def _build_item(v: str, b: BuildResult | None) -> str:
    """A variant's kernel: not built, failed with its error lines, or built and booted how."""
    if b is None:
        return f"<li>{e(v)}: not built (the run stopped before)</li>"
    if b.status == "failed":
        return (f'<li class="s-fail">{e(v)}: <b>build failed</b>: {e(str(b.error))}; log '
                f'{e(str(b.log))}<pre>{e(chr(10).join(b.error_lines or []))}</pre></li>')
    return (f"<li>{e(v)}: {e(str(b.status))} {e(str(b.release))} ({e(str(b.key))}, boot "
            f"{e(str(b.boot_via))})</li>")


def _coverage_html(cov: dict | None) -> str:
    """The run's coverage: per variant and file, lines and functions reached, with links
    to the annotated file and the Cobertura XML; per compared variant, its changed lines
    that no scenario reached."""
    if not cov:
        return ""
    rows = []
    for v, entry in cov["variants"].items():
        for rel, t in entry["files"].items():
            link = relative_link(entry["html"].get(rel))
            name = f'<a href="{e(link)}">{e(rel)}</a>' if link else e(rel)
            rows.append(f"<tr><td>{e(v)}</td><td>{name}</td><td>{t['lines_reached']}/"
                        f"{t['lines_total']} ({t['percent']} %)</td><td>"
                        f"{t['functions_reached']}/{t['functions_total']}</td></tr>")
    todo = []
    for v, files in cov["ab"].items():
        items = "".join(
            f'<li><a href="{e(relative_link(cov["variants"][v]["html"].get(rel)))}'
            f'#L{x["line"]}">'
            f"{e(rel)}:{x['line']}</a> <code>{e(x['text'])}</code></li>"
            for rel, d in files.items() if rel != "_outside" for x in d["changed_unreached"])
        todo.append(f"<h3>{e(v)}: changed but not reached by any scenario</h3>"
                    + (f"<ul>{items}</ul>" if items else "<p>none</p>"))
    xml = " · ".join(f'<a href="{e(relative_link(x["cobertura"]))}">{e(v)} coverage.xml</a>'
                     for v, x in cov["variants"].items() if relative_link(x.get("cobertura")))
    return (f'<h2 id="coverage">Coverage</h2><p>{xml}</p><table><tr><th>variant</th>'
            f"<th>file</th><th>lines reached</th><th>functions reached</th></tr>"
            f"{''.join(rows)}</table>{''.join(todo)}")


def _totals_html(doc: Results) -> str:
    """Per variant: its cases by status, and its verdicts against the base."""
    verdicts: dict[str, Counter] = {}
    for c in doc.comparison:
        verdicts.setdefault(c.variant, Counter())[c.verdict] += 1
    rows, bases = [], set(bases_of(doc.run, doc.variants).values())
    for v, t in doc.totals.items():
        cells = "".join(f'<td class="{"s-" + k if n else ""}">{n} {k}</td>'
                        for k, n in t.items())
        vs = verdicts.get(v)
        verdict = (", ".join(f'<span class="v-{e(k)}">{n} {e(k)}</span>'
                             for k, n in sorted(vs.items(),
                                                key=lambda kv: rank(VERDICT_RANK, kv[0])))
                   if vs else ("base" if v in bases else "-"))
        rows.append(f"<tr><th>{e(v)}</th>{cells}<td>{verdict}</td></tr>")
    return f'<table id="totals">{"".join(rows)}</table>'


def _ordered(names: set[str], known: tuple[str, ...]) -> list[str]:
    """Names in the registry's order (then kselftest), those it does not know after them."""
    first = [k for k in (*known, "kselftest") if k in names]
    return first + sorted(names - set(first))


def _grid_html(doc: Results, g: Grid) -> str:
    """Page kinds by injectors: in each cell a box per scenario of that kind and injector,
    coloured by its worst verdict (or status), a link to its row of the full table."""
    first: dict[str, CaseRecord] = {}
    for s in g.scenarios:
        cs = next((g.cases(v, s) for v in g.variants if g.cases(v, s)), [])
        if cs:
            first[s] = cs[0]
    kinds = _ordered({c.page_kind or "?" for c in first.values()}, PAGE_KINDS)
    injectors = _ordered({c.injector or "?" for c in first.values()}, INJECTORS)
    rows = []
    for k in kinds:
        cells = []
        for inj in injectors:
            boxes = []
            for s, c in first.items():
                if (c.page_kind or "?", c.injector or "?") != (k, inj):
                    continue
                w = worst(doc, g, s)
                label = (f"race {c.race['action']}" if c.race else
                         c.access or "").split(",")[0] or s
                boxes.append(f'<a class="box v-{e(w)} s-{e(w)}" href="#row-{e(s)}" '
                             f'title="{e(s)}: {e(w)}">{e(label[:14])}</a>')
            cells.append(f"<td>{''.join(boxes)}</td>")
        rows.append(f"<tr><th>{e(k)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{e(i)}</th>" for i in injectors)
    return (f'<table id="grid"><tr><th>page kind \\ injector</th>{head}</tr>'
            f"{''.join(rows)}</table>")


def _matrix_row(doc: Results, g: Grid, s: str) -> str:
    """A scenario's row of the full table: each variant's cases, each compared verdict."""
    cells = [f"<th>{e(s)}</th>"]
    for v in g.variants:
        cs = g.cases(v, s)
        roots = tuple(doc.run.compared or ())
        links = " ".join(f'<a href="{e(c.log_paths[k])}">{k}{c.repeat}</a>' for c in cs
                         for k in ("console", "agent")
                         if relative_link(c.log_paths.get(k), roots))
        status = cs[0].status if cs else "-"
        title = e(cs[0].message) if cs else ""
        secs = " ".join(f"{c.seconds:.1f}s" for c in cs if isinstance(c.seconds, int | float))
        cells.append(f'<td class="s-{e(status)}" title="{title}">'
                     f"{e(cell(cs))}<br><small>{e(secs)} {links}</small></td>")
    for v in g.compared:
        c = g.verdicts.get((v, s))
        verdict = e(c.verdict if c else "-")
        label = (f'<a href="#{e(v)}--{e(s)}">{verdict}</a>' if c and c.verdict != "same"
                 else verdict)
        cells.append(f'<td class="v-{verdict}"><b>{label}</b></td>')
    quiet = worst(doc, g, s) in ("same", "pass")
    return f'<tr id="row-{e(s)}"{" class=quiet" if quiet else ""}>' + "".join(cells) + "</tr>"


def _not_passed(doc: Results) -> list[str]:
    """Expected against observed for every case that did not pass."""
    out = []
    for c in doc.cases:
        if c.status == "pass":
            continue
        exp, obs = c.expected or {}, c.obs
        trs = "".join(
            f"<tr{' class=diff' if obs.get(k) != v else ''}><td>{e(k)}</td><td>{e(repr(v))}"
            f"</td><td>{e(repr(obs.get(k)))}</td></tr>" for k, v in exp.items())
        log = relative_link(c.log_paths.get("console"), tuple(doc.run.compared or ()))
        out.append(f"<h3>{e(c.variant)} / {e(c.scenario)} r{c.repeat}: "
                   f'<span class="s-{e(c.status)}">{e(c.status)}</span></h3>'
                   f"<p>{e(c.message)}" + (f' (<a href="{e(log)}">console</a>)' if log else "")
                   + "</p><table><tr><th>observable</th><th>expected</th><th>observed</th></tr>"
                   f"{trs}</table>")
    return out


def report_html(doc: Results) -> str:
    run, g = doc.run, Grid(doc)
    head = "".join(f"<th>{e(h)}</th>" for h in
                   ["scenario", *map(g.column, g.variants), *map(g.pair, g.compared)])
    kernels = kernels_text(doc)
    kernels = f" kernels {e(kernels)};" if kernels else ""
    errors = "".join(f"<li>{e(c.variant)} / {e(c.scenario)} r{c.repeat}: {e(c.message)}</li>"
                     for c in doc.cases if c.status == "error")
    n_errors = sum(c.status == "error" for c in doc.cases)
    style = STYLE + "".join(f".s-{k},.v-{k}{{background:{c}}}" for k, c in COLORS.items())
    layers = e(', '.join(run.layers or []) or 'none')
    seed = f" race seed {e(str(run.seed))};" if run.seed is not None else ""
    n_attention = sum(c.verdict != "same" for c in doc.comparison)
    builds = "".join(_build_item(v, info.build) for v, info in doc.variants.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hwpoison farm {e(run.id)}</title>
<style>{style}</style></head><body>
<h1>hwpoison farm run {e(run.id)}</h1>
<p class=meta>kernel source {e(source_text(run))};{kernels} config layers {layers};
accelerator {e(str(run.accel_reason))};{seed}
wall time {run.seconds or 0:.0f}s</p>
{_totals_html(doc)}
<h2 id="at-a-glance">Scenarios by page kind and injector</h2>
{_grid_html(doc, g)}
<h2 id="attention">Verdicts other than same, side by side ({n_attention})</h2>
{''.join(_side_by_side(doc, g)) or '<p>none</p>'}
<h2 id="errors">Errors ({n_errors})</h2>{f'<ul>{errors}</ul>' if errors else '<p>none</p>'}
<h2 id="all">All scenarios</h2>
<input type="checkbox" id="notsame"><label for="notsame"> only what is not same (or not
passing)</label>
<table id="matrix"><tr>{head}</tr>{''.join(_matrix_row(doc, g, s) for s in g.scenarios)}</table>
<h2>Builds</h2><ul id="builds">{builds}</ul>
{_kernels_html(doc)}{_coverage_html(doc.coverage)}
<h2>Cases that did not pass</h2>{''.join(_not_passed(doc)) or '<p>none</p>'}
</body></html>
"""
