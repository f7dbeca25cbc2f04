"""A result directory's outputs: its case files gathered into results.json, then every
report written from that document (junit.xml, compare.xml, summary.md, report.html,
kcidb.json), the summary printed and the exit code returned. Needs no kernel and no guest:
a run ends with it, and `farm report`, `farm merge` and `farm compare` do it again."""

from __future__ import annotations

import logging
from pathlib import Path

from .coverage_report import report as coverage_report
from .files import atomic_write, os_error, write_json
from .html_report import report_html
from .junit import compare_junit, junit
from .kcidb import kcidb_doc, validate
from .progress import say
from .results import Results, assemble, exit_code, load_cases, missing_cases, read_plan_of, read_run
from .summary import summary


def report_dir(results: Path, plan_missing: str = "not run",
               fail_on: tuple[str, ...] | None = None,
               ended: tuple[int, str] | None = None) -> int:
    """Gather a result directory's case files into results.json and write the reports;
    print the summary and return the exit code. A planned case with no case file is an
    error (plan_missing says why). ended: the exit code and kind of the error that ended
    the run, which is the run's exit code unless a case failed or regressed."""
    run, variants = read_run(results)
    if fail_on is not None:
        run = run.but(fail_on=list(fail_on))
    plan = read_plan_of(results)
    cases = load_cases(results)
    cases += missing_cases(plan, cases, plan_missing)
    order = list(dict.fromkeys(spec.scenario.name for spec in plan))
    doc = assemble(run, variants, cases, order)
    cov = coverage_report(doc, results)
    if cov:
        doc = doc.but(coverage=cov)
    return write(doc, results, ended)


def write(doc: Results, out: Path, ended: tuple[int, str] | None = None) -> int:
    """results.json and the reports; the summary is printed even when the disk is too full
    to keep it."""
    code, why = exit_code(doc), ""
    if ended and code != 1:
        code, why = ended
    try:
        write_json(out / "results.json", doc.to_json())
        text = write_reports(doc, out, code, why)
    except OSError as e:
        say(summary(doc, code, why))
        raise os_error(e, f"writing the reports into {out}") from None
    say(text)
    return code


def write_reports(doc: Results, results: Path, code: int, why: str = "") -> str:
    atomic_write(results / "junit.xml", junit(doc, results))
    atomic_write(results / "compare.xml", compare_junit(doc))
    text = summary(doc, code, why)
    atomic_write(results / "summary.md", text)
    atomic_write(results / "report.html", report_html(doc))
    write_kcidb(doc, results)
    return text


def write_kcidb(doc: Results, results: Path, origin: str = "", url: str = "",
                out: Path | None = None) -> Path:
    """kcidb.json (docs: KCIDB), checked with kcidb-io's own validation; a document that
    fails it is the farm's bug: it is written all the same and the failure logged."""
    import jsonschema

    kdoc = kcidb_doc(doc, results, origin, url)
    out = out or results / "kcidb.json"
    write_json(out, kdoc)
    try:
        validate(kdoc)
    except jsonschema.ValidationError as e:
        logging.getLogger("farm").warning("%s does not validate against KCIDB's schema: %s",
                                          out, e.message)
    return out
