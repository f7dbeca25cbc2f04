"""The run's coverage report: per variant the union of its cases (Cobertura XML, the totals
in results.json, an annotated view of each profiled file, every line with the scenarios that
reached it), per compared variant what each side reached that the other did not and its
changed lines that nothing reached; and the coverage section of the summary."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from pathlib import Path

from .coverage import Union, ab, patched_files, union_outputs
from .errors import FarmError
from .files import atomic_write
from .results import Results
from .runner import Runner


def annotate(u: Union, rel: str, changed: set[int], base: str | None) -> str:
    """One profiled file of a variant as HTML: every line with how many scenarios reached it,
    linking to the list of those scenarios; lines the patch series changed are marked."""
    e = html.escape
    src = u.source(rel)
    groups: dict[frozenset, int] = {}
    rows = []
    for n, text in enumerate(src, 1):
        who = frozenset(u.lines[rel].get(n, ()))
        if who:
            k = groups.setdefault(who, len(groups))
            cell = f'<a href="#set-{k}">{len(who)}</a>'
            cls = "hit"
        elif n in u.executable[rel]:
            cell, cls = "0", "miss"
        else:
            cell, cls = "", ""
        mark = "±" if n in changed else ""
        rows.append(f'<tr id="L{n}" class="{cls}{" chg" if mark else ""}"><td class=n>'
                    f'<a href="#L{n}">{n}</a></td><td class=c>{cell}</td><td class=m>{mark}'
                    f"</td><td><pre>{e(text)}</pre></td></tr>")
    sets = []
    for who, k in sorted(groups.items(), key=lambda kv: kv[1]):
        items = "".join(f"<li>{e(s)}</li>" for s in sorted(who))
        sets.append(f'<div id="set-{k}"><h3>reached by {len(who)} scenario(s)</h3>'
                    f"<ul>{items}</ul></div>")
    t = u.totals(rel)
    note = (f"; ± marks the {len(changed)} line(s) the variant's patches change against "
            f"{e(base)}" if base and changed else "")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(rel)}: {e(u.variant)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td{{padding:0 6px;vertical-align:top}} pre{{margin:0;font-size:90%}}
td.n,td.c{{text-align:right;color:#555}} tr.hit td.c{{background:#c8f0c8}}
tr.miss td.c{{background:#f7c1c1}} tr.chg td.m{{background:#f0d070;font-weight:bold}}
:target{{outline:2px solid #36c}}</style></head><body>
<h1>{e(rel)} in {e(u.variant)}</h1>
<p>{t['lines_reached']} of {t['lines_total']} lines ({t['percent']} %) and
{t['functions_reached']} of {t['functions_total']} functions reached by
{len({c.scenario for c in u.with_data})} scenario(s). The second column: how many
scenarios reached the line (a link to them); 0 is a line nothing reached{note}.</p>
<table>{''.join(rows)}</table>
<h2>Scenarios by line</h2>{''.join(sets)}
</body></html>
"""


def report(doc: Results, results: Path, runner: Runner | None = None) -> dict | None:
    """The run's coverage: per variant the union (results.json's totals, coverage.xml, an
    annotated view of each file), and per compared variant the A/B differences and its
    changed lines that nothing reached. None for a run without coverage."""
    if not any(isinstance(c.coverage, dict) for c in doc.cases):
        return None
    runner = runner or Runner()
    base = doc.run.base
    unions = {v: Union(v, info.build, doc.of_variant(v), results)
              for v, info in doc.variants.items()}
    out: dict = {"files": doc.run.coverage or [], "variants": {}, "ab": {}}
    for v, u in unions.items():  # first the union of each: it also gives each file's shape
        out["variants"][v] = _union_entry(u, results, runner)
    for v, u in unions.items():
        changes: dict[str, set[int]] = {}
        if base in unions and v != base:
            out["ab"][v], changes = ab(unions[base], u)
            out["ab"][v]["_outside"] = [
                f for f in patched_files(doc.variants[v].patches or []) if f not in u.files]
        for rel in u.files:
            page = Path("coverage") / v / (rel + ".html")
            (results / page).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(results / page, annotate(u, rel, changes.get(rel, set()),
                                                  base if v != base else None))
            out["variants"][v]["html"][rel] = str(page)
    return out


def _union_entry(u: Union, results: Path, runner: Runner) -> dict:
    """A variant's entry: how many cases sent data, which did not, its Cobertura XML, each
    file's totals and the functions no scenario reached."""
    where = Path("coverage") / u.variant
    entry: dict = {"cases": len(u.with_data), "without_data": u.without, "html": {}}
    try:
        if union_outputs(u, results / where, runner):
            entry["cobertura"] = str(where / "coverage.xml")
    except (FarmError, OSError, ValueError, ET.ParseError) as e:
        entry["cobertura_error"] = str(e).splitlines()[0]
    entry["files"] = {rel: u.totals(rel) for rel in u.files}
    entry["unreached_functions"] = {rel: sorted(u.all_funcs[rel] - set(u.funcs[rel]))
                                    for rel in u.files}
    return entry


def summary_lines(cov: dict | None) -> list[str]:
    """The coverage section of summary.md."""
    if not cov:
        return []
    out = ["", f"## Coverage ({', '.join(cov['files'])})", ""]
    for v, entry in cov["variants"].items():
        parts = [f"{rel} {t['lines_reached']}/{t['lines_total']} lines ({t['percent']} %), "
                 f"{t['functions_reached']}/{t['functions_total']} functions"
                 for rel, t in entry["files"].items()]
        out.append(f"- {v}: " + "; ".join(parts) + f" ({entry['cases']} cases"
                   + (f", {len(entry['without_data'])} without data" if entry["without_data"]
                      else "") + ")" + (f"; {entry['cobertura']}" if entry.get("cobertura")
                                        else ""))
        for why in entry["without_data"][:5]:
            out.append(f"  - no coverage: {why}")
        for rel, names in entry.get("unreached_functions", {}).items():
            if names:
                out.append(f"  - functions of {rel} no scenario reaches: {', '.join(names)}")
    for v, files in cov["ab"].items():
        for rel, d in files.items():
            if rel == "_outside":
                continue
            here, there = d["reached_only_here"], d["reached_only_in_base"]
            out.append(f"- {v} vs base, {rel}: reached only in {v}: {len(here['lines'])} "
                       f"lines" + (f" (functions {', '.join(here['functions'])})"
                                   if here["functions"] else "")
                       + f"; reached only in the base: {len(there['lines'])} lines"
                       + (f" (functions {', '.join(there['functions'])})"
                          if there["functions"] else ""))
        hit = [(rel, x) for rel, d in files.items() if rel != "_outside"
               for x in d["changed_reached"]]
        if hit:
            out.append(f"- {v}: changed lines that scenarios reached: " + "; ".join(
                f"{rel}:{x['line']} `{x['text']}` ({len(x['scenarios'])} scenarios)"
                for rel, x in hit[:10]) + ("; ..." if len(hit) > 10 else ""))
        unreached = [(rel, x) for rel, d in files.items() if rel != "_outside"
                     for x in d["changed_unreached"]]
        out.append(f"- {v}: changed but not reached by any scenario: "
                   + (f"{len(unreached)} line(s)" if unreached else "none"))
        out += [f"  - {rel}:{x['line']}: `{x['text']}`" for rel, x in unreached[:40]]
        if len(unreached) > 40:
            out.append(f"  - ... {len(unreached) - 40} more in results.json")
        if files.get("_outside"):
            out.append(f"- {v}: the patches also change files not profiled: "
                       + ", ".join(files["_outside"]))
    return out
