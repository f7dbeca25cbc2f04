"""Reports from results.json: junit.xml (one testsuite per variant), compare.xml (one
testcase per scenario and compared variant), summary.md and report.html."""

from __future__ import annotations

import hashlib
import html
import logging
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from .coverage import summary_lines
from .files import atomic_write, tail, write_json
from .parse import KERNEL_ERROR, strip_timestamp
from .results import signature

EXCERPT = re.compile(r"Memory failure|MCE|Hardware Error|mce:|soft offline|Injecting memory|"
                     + KERNEL_ERROR.pattern, re.IGNORECASE)
# Characters XML 1.0 cannot carry, which a guest console may well contain.
XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(s: str) -> str:
    return XML_BAD.sub("\N{REPLACEMENT CHARACTER}", s)


def console_excerpt(results: Path, case: dict, tail: int = 8, limit: int = 60) -> str:
    path = case.get("logs", {}).get("console")
    if not path:
        return ""
    try:
        lines = (results / path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    picked = [strip_timestamp(ln) for ln in lines if EXCERPT.search(ln)][:limit]
    last = [strip_timestamp(ln) for ln in lines[-tail:]]
    return xml_text("\n".join(["-- console: memory-failure lines --", *picked,
                               f"-- console: last {len(last)} lines ({path}) --", *last]))


def _expected_vs_observed(case: dict) -> str:
    exp, obs = case.get("expected", {}), case.get("observed", {})
    rows = [f"{'':2}{k}: expected {v!r}, observed {obs.get(k)!r}"
            + ("" if obs.get(k) == v else "   <-- differs") for k, v in exp.items()]
    return "\n".join([case["message"], *rows])


def patch_digest(variant: dict) -> str:
    h = hashlib.sha256()
    for p in variant.get("build", {}).get("patches", []):
        h.update(p["sha256"].encode())
    return h.hexdigest()[:16] if variant.get("build", {}).get("patches") else "none"


def junit_text(suites: list[TestSuite]) -> str:
    """JUnit XML of these suites, as the JUnit 10 schema has it."""
    return _clean(to_xml_report_string(suites))


def _clean(xml: str) -> str:
    """junit-xml writes a `disabled` attribute that the JUnit 10 schema does not know."""
    root = ET.fromstring(xml)
    for el in root.iter():
        el.attrib.pop("disabled", None)
        for key in ("time",):
            if key in el.attrib:
                el.attrib[key] = f"{float(el.attrib[key]):.3f}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def junit(doc: dict, results: Path) -> str:
    run = doc["run"]
    suites = []
    for name, variant in doc["variants"].items():
        build = variant.get("build", {})
        props = {"variant": name, "kernel_version": build.get("release") or (
                     "not built" if build.get("status") == "failed" else "?"),
                 "kernel_source": run.get("source", {}).get("digest", "?"),
                 "build_key": build.get("key", "?"), "patch_digest": patch_digest(variant),
                 "patches": " ".join(Path(p["path"]).name for p in build.get("patches", [])),
                 "accelerator": run.get("accelerator", "?"),
                 "boot": build.get("boot_via") or "?", "farm_version": run["farm_version"],
                 "layers": ",".join(build.get("layers") or run.get("layers") or []) or "none",
                 **({"race_seed": str(run["seed"])} if "seed" in run else {})}
        cases = [_build_case(name, build)] if build else []
        mine = [c for c in doc["cases"] if c["variant"] == name]
        runs = Counter(c["scenario"] for c in mine)
        for c in mine:
            tc = TestCase(name=c["scenario"] + (f" #{c['repeat']}" if runs[c["scenario"]] > 1
                                                else ""),
                          classname=f"hwpoison.{name}", elapsed_sec=c.get("seconds") or 0.0,
                          stdout=console_excerpt(results, c) or None)
            if c["status"] == "fail":
                tc.add_failure_info(message=xml_text(c["message"]),
                                    output=xml_text(_expected_vs_observed(c)),
                                    failure_type="kernel")
            elif c["status"] == "error":
                tc.add_error_info(message=xml_text(c["message"]), error_type="infrastructure")
            elif c["status"] == "skip":
                tc.add_skipped_info(message=xml_text(c["message"]))
            cases.append(tc)
        suites.append(TestSuite(name, cases, hostname=run.get("host"),
                                timestamp=run.get("started_iso"), properties=props))
    return _clean(to_xml_report_string(suites))


def _build_case(variant: str, build: dict) -> TestCase:
    """A variant's kernel build as a testcase of its suite: a build that failed is a failure
    with the log's error lines and tail, so that CI shows why nothing of it ran."""
    tc = TestCase(name="build", classname=f"hwpoison.{variant}",
                  elapsed_sec=build.get("seconds") or 0.0,
                  stdout=xml_text(f"{build.get('status')}: kernel {build.get('release') or '?'}, "
                                  f"build {build.get('key')}, log {build.get('log')}"))
    if build.get("status") == "failed":
        last = tail(Path(build.get("log") or ""), 40)
        tc.add_failure_info(message=xml_text(f"{build.get('error')}; log {build.get('log')}"),
                            output=xml_text("\n".join(
                                ["-- error lines --", *build.get("error_lines", []),
                                 f"-- last {len(last)} lines of the build log --", *last])),
                            failure_type="build")
    return tc


def compare_junit(doc: dict) -> str:
    run = doc["run"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in doc["comparison"]:
        groups.setdefault((c["base"], c["variant"]), []).append(c)
    suites = []
    for (base, variant), comps in groups.items():
        cases = []
        for c in comps:
            tc = TestCase(name=c["scenario"], classname=f"compare.{base}.{variant}",
                          elapsed_sec=0.0, stdout=xml_text(f"verdict: {c['verdict']}\n"
                                                           f"{runs_text(c)}\n{c['detail']}"))
            if c["verdict"] == "regression":
                tc.add_failure_info(message=xml_text(f"regression: {c['detail']}"),
                                    failure_type="regression")
            elif c["verdict"] == "error":
                tc.add_error_info(message=xml_text(c["detail"]), error_type="infrastructure")
            elif c["verdict"] == "flaky":
                tc.add_skipped_info(message=xml_text(f"flaky: {c['detail']}"))
            cases.append(tc)
        props = {"base": base, "variant": variant, "accelerator": run.get("accelerator", "?"),
                 "farm_version": run["farm_version"]}
        suites.append(TestSuite(f"{base}..{variant}", cases, hostname=run.get("host"),
                                timestamp=run.get("started_iso"), properties=props))
    return _clean(to_xml_report_string(suites))


def runs_text(c: dict) -> str:
    """How a verdict was reached: the runs of each side, and whether it was confirmed."""
    runs = c.get("runs")
    if not runs:
        return ""
    text = f"{c['base']}: {runs['base']}; {c['variant']}: {runs['variant']}"
    return text + ("; confirmed by re-running both" if c.get("confirmed") else "")


def builds_text(doc: dict) -> list[str]:
    out = []
    for v, vdoc in doc["variants"].items():
        b = vdoc.get("build")
        if not b:
            out.append(f"- {v}: not built (the run stopped before)")
        elif b.get("status") == "failed":
            out.append(f"- {v}: **build FAILED** — {b.get('error')}; log {b.get('log')}")
            out += [f"  - `{ln}`" for ln in b.get("error_lines", [])[:5]]
        else:
            out.append(f"- {v}: {b.get('status')} {b.get('release')} ({b.get('key')})")
    return out


def race_note(race: dict) -> str:
    """A race's rounds at a glance: '10 rounds: data=unreadable 7, data=intact 3'."""
    data = Counter()
    for outcome, n in (race.get("outcomes") or {}).items():
        word = next((w for w in outcome.split() if w.startswith("data=")), "data=?")
        data[word] += n
    return f"{race.get('rounds')} rounds" + "".join(
        f"{', ' if i else ': '}{w} {n}" for i, (w, n) in enumerate(data.most_common()))


def _cell(case_list: list[dict]) -> str:
    if not case_list:
        return "-"
    statuses = [c["status"] for c in case_list]
    text = statuses[0] if len(set(statuses)) == 1 else "/".join(statuses)
    obs = case_list[0].get("observed", {})
    notes = list(obs.get("recovery") or [])
    if isinstance(obs.get("race"), dict):
        notes = [race_note(obs["race"])]
    if obs.get("guest") not in (None, "survived"):
        notes.insert(0, f"guest {obs['guest']}")
    if notes:
        text += f" ({'; '.join(notes)})"
    return text


def _grid(doc: dict):
    variants = list(doc["variants"])
    scenarios = list(dict.fromkeys(c["scenario"] for c in doc["cases"]))
    by: dict[tuple[str, str], list[dict]] = {}
    for c in doc["cases"]:
        by.setdefault((c["variant"], c["scenario"]), []).append(c)
    verdicts = {(c["variant"], c["scenario"]): c for c in doc["comparison"]}
    compared = [v for v in variants if any(c["variant"] == v for c in doc["comparison"])]
    return variants, scenarios, by, verdicts, compared


def _source(run: dict) -> str:
    src = run.get("source")  # absent when a run stopped before the source was ready
    return f"{src['describe']} ({src['digest'][:23]})" if src else "not prepared"


def summary(doc: dict, code: int) -> str:
    run = doc["run"]
    variants, scenarios, by, verdicts, compared = _grid(doc)
    out = [f"# hwpoison farm run {run['id']}", "",
           f"- kernel source: {_source(run)}",
           f"- accelerator: {run.get('accel_reason', run.get('accelerator'))}",
           f"- config layers: {', '.join(run.get('layers') or []) or 'none'}",
           f"- jobs: {run.get('jobs')}, repeats: {run.get('repeat')}, "
           f"wall time: {run.get('seconds', 0):.0f}s" + (", INTERRUPTED" if run.get(
               "interrupted") else "")]
    if "seed" in run:
        out.append(f"- race seed: {run['seed']} (the same races again: --seed {run['seed']})")
    if run.get("affected"):  # the headline of --affected's account (all of it: run.json)
        lines = run["affected"].splitlines()
        out.append("- " + next((ln for ln in lines if ln.startswith("--affected:")),
                               "--affected: " + lines[0]).rstrip(":"))
    out.append("")
    head = ["scenario", *variants, *[f"{doc['run']['base']} → {v}" for v in compared]]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for s in scenarios:
        row = [s, *[_cell(by.get((v, s), [])) for v in variants],
               *[(verdicts.get((v, s)) or {}).get("verdict", "-") for v in compared]]
        out.append("| " + " | ".join(r.replace("|", "\\|") for r in row) + " |")
    out += ["", "## Builds", "", *builds_text(doc), ""]
    for v, t in doc["totals"].items():
        out.append(f"- {v}: " + ", ".join(f"{n} {k}" for k, n in t.items()))
    counts: dict[str, int] = {}
    for c in doc["comparison"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    if counts:
        out.append("- verdicts: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    notable = [c for c in doc["cases"] if c["status"] in ("fail", "error", "skip")]
    if notable:
        out += ["", "## Not passed", ""]
        out += [f"- {c['variant']} / {c['scenario']} r{c['repeat']}: **{c['status']}** — "
                f"{c['message']} ({c.get('logs', {}).get('console', 'no log')})" for c in notable]
    changes = [c for c in doc["comparison"] if c["verdict"] != "same"]
    if changes:
        out += ["", "## A/B verdicts other than same", ""]
        out += [f"- {c['scenario']}: {c['base']} → {c['variant']}: **{c['verdict']}** "
                f"({runs_text(c)}) — {c['detail']}" for c in changes]
    out += summary_lines(doc.get("coverage"))
    out += ["", f"exit code {code}"]
    return "\n".join(out) + "\n"


COLORS = {"pass": "#c8f0c8", "fail": "#f7c1c1", "error": "#f7dc9c", "skip": "#dddddd",
          "same": "#eeeeee", "regression": "#f08080", "fixed": "#90d890",
          "changed": "#a8c8f0", "flaky": "#e0b0f0"}


def _side_by_side(doc: dict, by: dict) -> list[str]:
    """For each verdict other than same: the observables of base and variant next to each
    other, the ones that differ marked."""
    e = html.escape
    out = []
    for c in sorted(doc["comparison"], key=lambda c: rank(VERDICT_RANK, c["verdict"])):
        if c["verdict"] == "same":
            continue
        a, b = by.get((c["base"], c["scenario"]), []), by.get((c["variant"], c["scenario"]), [])
        if not a or not b:
            continue
        sa, sb = signature(a[0]), signature(b[0])
        keys = [k for k in {**sa, **sb} if sa.get(k) is not None or sb.get(k) is not None]
        rows = "".join(
            f"<tr{' class=diff' if sa.get(k) != sb.get(k) else ''}><td>{e(k)}</td>"
            f"<td>{e(repr(sa.get(k)))}</td><td>{e(repr(sb.get(k)))}</td></tr>" for k in keys)
        out.append(
            f'<h3 id="{e(c["variant"])}--{e(c["scenario"])}">{e(c["scenario"])}: '
            f'<span class="v-{e(c["verdict"])}">{e(c["verdict"])}</span></h3>'
            f"<p>{e(c['detail'])}</p><p class=runs>runs: {e(runs_text(c))}</p>"
            f"<table><tr><th>observable</th><th>{e(c['base'])} "
            f"({e(a[0]['status'])})</th><th>{e(c['variant'])} ({e(b[0]['status'])})</th></tr>"
            f"{rows}</table>")
    return out


def _build_items(doc: dict) -> list[str]:
    e = html.escape
    out = []
    for v, vdoc in doc["variants"].items():
        b = vdoc.get("build")
        if not b:
            out.append(f"<li>{e(v)}: not built (the run stopped before)</li>")
        elif b.get("status") == "failed":
            lines = "\n".join(b.get("error_lines", []))
            out.append(f'<li class="s-fail">{e(v)}: <b>build failed</b>: {e(str(b.get("error")))}'
                       f'; log {e(str(b.get("log")))}<pre>{e(lines)}</pre></li>')
        else:
            out.append(f"<li>{e(v)}: {e(str(b.get('status')))} {e(str(b.get('release')))} "
                       f"({e(str(b.get('key')))}, boot {e(str(b.get('boot_via')))})</li>")
    return out


def _coverage_html(cov: dict | None) -> str:
    """The run's coverage: per variant and file, lines and functions reached, with links
    to the annotated file and the Cobertura XML; per compared variant, its changed lines
    that no scenario reached."""
    if not cov:
        return ""
    e = html.escape
    rows = []
    for v, entry in cov["variants"].items():
        for rel, t in entry["files"].items():
            link = entry["html"].get(rel)
            name = f'<a href="{e(link)}">{e(rel)}</a>' if link else e(rel)
            rows.append(f"<tr><td>{e(v)}</td><td>{name}</td><td>{t['lines_reached']}/"
                        f"{t['lines_total']} ({t['percent']} %)</td><td>"
                        f"{t['functions_reached']}/{t['functions_total']}</td></tr>")
    todo = []
    for v, files in cov["ab"].items():
        items = "".join(
            f'<li><a href="{e(cov["variants"][v]["html"].get(rel, ""))}#L{x["line"]}">'
            f"{e(rel)}:{x['line']}</a> <code>{e(x['text'])}</code></li>"
            for rel, d in files.items() if rel != "_outside" for x in d["changed_unreached"])
        todo.append(f"<h3>{e(v)}: changed but not reached by any scenario</h3>"
                    + (f"<ul>{items}</ul>" if items else "<p>none</p>"))
    xml = " · ".join(f'<a href="{e(x["cobertura"])}">{e(v)} coverage.xml</a>'
                     for v, x in cov["variants"].items() if x.get("cobertura"))
    return (f'<h2 id="coverage">Coverage</h2><p>{xml}</p><table><tr><th>variant</th>'
            f"<th>file</th><th>lines reached</th><th>functions reached</th></tr>"
            f"{''.join(rows)}</table>{''.join(todo)}")


# Worst first: what a grid cell shows when its scenario has several outcomes.
VERDICT_RANK = ("regression", "error", "flaky", "changed", "fixed", "same")
STATUS_RANK = ("error", "fail", "skip", "pass")


def rank(order: tuple[str, ...], value: str) -> int:
    """Where a verdict or status stands in its order, worst first; one it does not know
    counts as the worst."""
    return order.index(value) if value in order else 0


def worst(doc: dict, by: dict, scenario: str, variants: list[str]) -> str:
    """A scenario's worst A/B verdict over the compared variants, else (a run of one
    variant) its worst status over every case of it."""
    verdicts = [c["verdict"] for c in doc["comparison"] if c["scenario"] == scenario]
    if verdicts:
        return min(verdicts, key=lambda v: rank(VERDICT_RANK, v))
    statuses = [c["status"] for v in variants for c in by.get((v, scenario), [])]
    return min(statuses or ["error"], key=lambda s: rank(STATUS_RANK, s))


def _totals_html(doc: dict) -> str:
    """Per variant: its cases by status, and its verdicts against the base."""
    e = html.escape
    verdicts: dict[str, Counter] = {}
    for c in doc["comparison"]:
        verdicts.setdefault(c["variant"], Counter())[c["verdict"]] += 1
    rows = []
    for v, t in doc["totals"].items():
        cells = "".join(f'<td class="{"s-" + k if n else ""}">{n} {k}</td>'
                        for k, n in t.items())
        vs = verdicts.get(v)
        verdict = (", ".join(f'<span class="v-{e(k)}">{n} {e(k)}</span>'
                             for k, n in sorted(vs.items(),
                                                key=lambda kv: rank(VERDICT_RANK, kv[0])))
                   if vs else ("base" if v == doc["run"].get("base") else "-"))
        rows.append(f"<tr><th>{e(v)}</th>{cells}<td>{verdict}</td></tr>")
    return f'<table id="totals">{"".join(rows)}</table>'


def _grid_html(doc: dict, by: dict, scenarios: list[str], variants: list[str]) -> str:
    """Page kinds by injectors: in each cell a box per scenario of that kind and injector,
    coloured by its worst verdict (or status), a link to its row of the full table."""
    from .config import INJECTORS, PAGE_KINDS
    e = html.escape
    first = {}
    for s in scenarios:
        cs = next((by[(v, s)] for v in variants if by.get((v, s))), [])
        if cs:
            first[s] = cs[0]
    kinds = [k for k in (*PAGE_KINDS, "kselftest")
             if any(c.get("page_kind") == k for c in first.values())]
    kinds += sorted({c.get("page_kind") or "?" for c in first.values()} - set(kinds))
    injectors = [i for i in (*INJECTORS, "kselftest")
                 if any(c.get("injector") == i for c in first.values())]
    injectors += sorted({c.get("injector") or "?" for c in first.values()} - set(injectors))
    rows = []
    for k in kinds:
        cells = []
        for inj in injectors:
            boxes = []
            for s, c in first.items():
                if (c.get("page_kind") or "?", c.get("injector") or "?") != (k, inj):
                    continue
                w = worst(doc, by, s, variants)
                label = (f"race {c['race']['action']}" if c.get("race") else
                         c.get("access") or "").split(",")[0] or s
                boxes.append(f'<a class="box v-{e(w)} s-{e(w)}" href="#row-{e(s)}" '
                             f'title="{e(s)}: {e(w)}">{e(label[:14])}</a>')
            cells.append(f"<td>{''.join(boxes)}</td>")
        rows.append(f"<tr><th>{e(k)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{e(i)}</th>" for i in injectors)
    return (f'<table id="grid"><tr><th>page kind \\ injector</th>{head}</tr>'
            f"{''.join(rows)}</table>")


def report_html(doc: dict) -> str:
    """The page a person reads, answer first: the totals per variant, the grid of page kinds
    by injectors coloured by each scenario's worst verdict, then the regressions, flaky
    verdicts and errors with their observables side by side, then the full table (which a
    checkbox narrows to what is not `same`), the builds, coverage and every case that did not
    pass. Everything that came from a guest is escaped; the page runs no script."""
    e = html.escape
    run = doc["run"]
    variants, scenarios, by, verdicts, compared = _grid(doc)
    rows = []
    for s in scenarios:
        cells = [f"<th>{e(s)}</th>"]
        for v in variants:
            cs = by.get((v, s), [])
            links = " ".join(
                f'<a href="{e(c["logs"][k])}">{k}{c["repeat"]}</a>'
                for c in cs for k in ("console", "agent") if c.get("logs", {}).get(k))
            status = cs[0]["status"] if cs else "-"
            title = e(cs[0]["message"]) if cs else ""
            secs = " ".join(f"{c['seconds']:.1f}s" for c in cs
                            if isinstance(c.get("seconds"), int | float))
            cells.append(f'<td class="s-{e(status)}" title="{title}">'
                         f"{e(_cell(cs))}<br><small>{e(secs)} {links}</small></td>")
        for v in compared:
            c = verdicts.get((v, s)) or {"verdict": "-", "detail": ""}
            verdict = e(c["verdict"])
            label = (f'<a href="#{e(v)}--{e(s)}">{verdict}</a>' if c["verdict"] not in
                     ("same", "-") else verdict)
            cells.append(f'<td class="v-{verdict}"><b>{label}</b></td>')
        quiet = worst(doc, by, s, variants) in ("same", "pass")
        rows.append(f'<tr id="row-{e(s)}"{" class=quiet" if quiet else ""}>'
                    + "".join(cells) + "</tr>")
    head = "".join(f"<th>{e(h)}</th>" for h in
                   ["scenario", *variants, *[f"{run['base']} → {v}" for v in compared]])
    details = []
    for c in doc["cases"]:
        if c["status"] == "pass":
            continue
        exp, obs = c.get("expected", {}), c.get("observed", {})
        trs = "".join(
            f"<tr{' class=diff' if obs.get(k) != v else ''}><td>{e(k)}</td><td>{e(repr(v))}"
            f"</td><td>{e(repr(obs.get(k)))}</td></tr>" for k, v in exp.items())
        log = c.get("logs", {}).get("console")
        details.append(f"<h3>{e(c['variant'])} / {e(c['scenario'])} r{c['repeat']}: "
                       f'<span class="s-{e(c["status"])}">{e(c["status"])}</span></h3>'
                       f"<p>{e(c['message'])}" + (f' (<a href="{e(log)}">console</a>)'
                                                   if log else "") + "</p>"
                       f"<table><tr><th>observable</th><th>expected</th><th>observed</th></tr>"
                       f"{trs}</table>")
    errors = [c for c in doc["cases"] if c["status"] == "error"]
    error_items = "".join(
        f"<li>{e(c['variant'])} / {e(c['scenario'])} r{c['repeat']}: {e(c['message'])}</li>"
        for c in errors)
    style = "".join(f".s-{k},.v-{k}{{background:{c}}}" for k, c in COLORS.items())
    side = _side_by_side(doc, by)
    n_attention = sum(c["verdict"] not in ("same",) for c in doc["comparison"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hwpoison farm {e(run['id'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 8px;vertical-align:top;text-align:left}}
tr.diff td{{background:#fde0e0;font-weight:bold}} h1{{margin:0 0 .2em}} p.meta{{margin:0}}
#grid td{{padding:2px;min-width:2em}} #grid th{{font-size:85%}}
a.box{{display:inline-block;margin:1px;padding:1px 3px;font-size:75%;color:#000;
text-decoration:none;border:1px solid #777;border-radius:2px}}
#notsame:checked ~ #matrix tr.quiet{{display:none}} {style}</style></head><body>
<h1>hwpoison farm run {e(run['id'])}</h1>
<p class=meta>kernel source {e(_source(run))}; config layers {e(', '.join(run.get('layers') or [])
                                                      or 'none')};
accelerator {e(str(run.get('accel_reason')))};{
    f" race seed {e(str(run['seed']))};" if "seed" in run else ""}
wall time {run.get('seconds', 0):.0f}s</p>
{_totals_html(doc)}
<h2 id="at-a-glance">Scenarios by page kind and injector</h2>
{_grid_html(doc, by, scenarios, variants)}
<h2 id="attention">Verdicts other than same, side by side ({n_attention})</h2>
{''.join(side) or '<p>none</p>'}
<h2 id="errors">Errors ({len(errors)})</h2>{f'<ul>{error_items}</ul>' if errors else '<p>none</p>'}
<h2 id="all">All scenarios</h2>
<input type="checkbox" id="notsame"><label for="notsame"> only what is not same (or not
passing)</label>
<table id="matrix"><tr>{head}</tr>{''.join(rows)}</table>
<h2>Builds</h2><ul id="builds">{''.join(_build_items(doc))}</ul>
{_coverage_html(doc.get("coverage"))}
<h2>Cases that did not pass</h2>{''.join(details) or '<p>none</p>'}
</body></html>
"""


def write_reports(doc: dict, results: Path, code: int) -> str:
    atomic_write(results / "junit.xml", junit(doc, results))
    atomic_write(results / "compare.xml", compare_junit(doc))
    text = summary(doc, code)
    atomic_write(results / "summary.md", text)
    atomic_write(results / "report.html", report_html(doc))
    write_kcidb(doc, results)
    return text


def write_kcidb(doc: dict, results: Path, origin: str = "", url: str = "",
                out: Path | None = None) -> Path:
    """kcidb.json (README: KCIDB), checked with kcidb-io's own validation; a document that
    fails it is the farm's bug: it is written all the same and the failure logged."""
    import jsonschema

    from .kcidb import kcidb_doc, validate
    kdoc = kcidb_doc(doc, results, origin, url)
    out = out or results / "kcidb.json"
    write_json(out, kdoc)
    try:
        validate(kdoc)
    except jsonschema.ValidationError as e:
        logging.getLogger("farm").warning("%s does not validate against KCIDB's schema: %s",
                                          out, e.message)
    return out
