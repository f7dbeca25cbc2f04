"""JUnit from the results document: junit.xml (a testsuite per variant, its kernel build a
testcase of its own) and compare.xml (a testcase per scenario and compared variant), both
as the JUnit 10 schema that Jenkins' xUnit plugin reads has them."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from .build import BuildResult
from .caserecords import CaseRecord, guests_of
from .files import tail
from .parse import KERNEL_ERROR, strip_timestamp
from .results import Results, VariantInfo

EXCERPT = re.compile(r"Memory failure|MCE|Hardware Error|mce:|soft offline|Injecting memory|"
                     + KERNEL_ERROR.pattern, re.IGNORECASE)
# Characters XML 1.0 cannot carry, which a guest console may well contain.
XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(s: str) -> str:
    return XML_BAD.sub("\N{REPLACEMENT CHARACTER}", s)


def console_excerpt(results: Path, case: CaseRecord, tail: int = 8, limit: int = 60) -> str:
    path = case.log_paths.get("console")
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


def _expected_vs_observed(case: CaseRecord) -> str:
    exp, obs = case.expected or {}, case.obs
    rows = [f"{'':2}{k}: expected {v!r}, observed {obs.get(k)!r}"
            + ("" if obs.get(k) == v else "   <-- differs") for k, v in exp.items()]
    return "\n".join([case.message, *rows])


def patch_digest(variant: VariantInfo) -> str:
    patches = (variant.build.patches if variant.build else None) or []
    h = hashlib.sha256()
    for p in patches:
        h.update(p["sha256"].encode())
    return h.hexdigest()[:16] if patches else "none"


def junit_text(suites: list[TestSuite]) -> str:
    """JUnit XML of these suites, as the JUnit 10 schema has it: junit-xml writes a
    `disabled` attribute that the schema does not know, and times with any precision."""
    root = ET.fromstring(to_xml_report_string(suites))
    for el in root.iter():
        el.attrib.pop("disabled", None)
        if "time" in el.attrib:
            el.attrib["time"] = f"{float(el.attrib['time']):.3f}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _properties(doc: Results, name: str, variant: VariantInfo) -> dict[str, str]:
    run, build = doc.run, variant.build
    release = build.release if build else None
    return {"variant": name, "kernel_version": release or (
                "not built" if build and build.status == "failed" else "?"),
            "kernel_source": (variant.source or run.source).digest
            if (variant.source or run.source) else "?",
            "build_key": build.key if build else "?", "patch_digest": patch_digest(variant),
            "patches": " ".join(Path(p["path"]).name for p in (build.patches if build else [])),
            "accelerator": run.accelerator or "?",
            "boot": (build.boot_via if build else None) or "?",
            **({"guest_boot": b} if (b := guest_boot(doc.of_variant(name))) else {}),
            "farm_version": run.farm_version,
            "layers": ",".join((build.layers if build else None) or run.layers or []) or "none",
            **({"race_seed": str(run.seed)} if run.seed is not None else {})}


def guest_boot(cases: list[CaseRecord]) -> str:
    """How a variant's guests started: snapshot (every one restored), cold, or both, with how
    many booted cold ("snapshot, 2 of 85 cold")."""
    ran = guests_of(cases)
    cold = sum(c.boot == "cold" for c in ran)
    if not ran:  # an older farm's run: its cases do not say
        return ""
    if cold in (0, len(ran)):
        return ran[0].boot
    return f"snapshot, {cold} of {len(ran)} cold"


def _boot_line(c: CaseRecord) -> str:
    if not c.boot:
        return ""
    return f"boot: {c.boot}" + (f" ({c.boot_why})" if c.boot_why else "") + "\n"


def _case(results: Path, variant: str, c: CaseRecord, runs: Counter) -> TestCase:
    out = _boot_line(c) + console_excerpt(results, c)
    tc = TestCase(name=c.scenario + (f" #{c.repeat}" if runs[c.scenario] > 1 else ""),
                  classname=f"hwpoison.{variant}", elapsed_sec=c.seconds or 0.0,
                  stdout=xml_text(out) or None)
    if c.status == "fail":
        tc.add_failure_info(message=xml_text(c.message),
                            output=xml_text(_expected_vs_observed(c)), failure_type="kernel")
    elif c.status == "error":
        tc.add_error_info(message=xml_text(c.message), error_type="infrastructure")
    elif c.status == "skip":
        tc.add_skipped_info(message=xml_text(c.message))
    return tc


def junit(doc: Results, results: Path) -> str:
    """junit.xml: a testsuite per variant, its build first, then a testcase per case
    (`name #N` where a scenario ran more than once)."""
    suites = []
    for name, variant in doc.variants.items():
        cases = [_build_case(name, variant.build)] if variant.build else []
        mine = doc.of_variant(name)
        runs = Counter(c.scenario for c in mine)
        cases += [_case(results, name, c, runs) for c in mine]
        suites.append(TestSuite(name, cases, hostname=doc.run.host,
                                timestamp=doc.run.started_iso,
                                properties=_properties(doc, name, variant)))
    return junit_text(suites)


def _build_case(variant: str, build: BuildResult) -> TestCase:
    """A variant's kernel build as a testcase of its suite: a build that failed is a failure
    with the log's error lines and tail, so that CI shows why nothing of it ran."""
    tc = TestCase(name="build", classname=f"hwpoison.{variant}",
                  elapsed_sec=build.seconds or 0.0,
                  stdout=xml_text(f"{build.status}: kernel {build.release or '?'}, "
                                  f"build {build.key}, log {build.log}"))
    if build.status == "failed":
        last = tail(Path(build.log or ""), 40)
        tc.add_failure_info(message=xml_text(f"{build.error}; log {build.log}"),
                            output=xml_text("\n".join(
                                ["-- error lines --", *(build.error_lines or []),
                                 f"-- last {len(last)} lines of the build log --", *last])),
                            failure_type="build")
    return tc


def compare_junit(doc: Results) -> str:
    """compare.xml: a testsuite per compared pair, a testcase per scenario; a regression is a
    failure, an error an error, a flaky verdict skipped."""
    run = doc.run
    groups: dict[tuple[str, str], list] = {}
    for c in doc.comparison:
        groups.setdefault((c.base, c.variant), []).append(c)
    suites = []
    for (base, variant), comps in groups.items():
        cases = []
        for c in comps:
            tc = TestCase(name=c.scenario, classname=f"compare.{base}.{variant}",
                          elapsed_sec=0.0, stdout=xml_text(f"verdict: {c.verdict}\n"
                                                           f"{c.runs_text()}\n{c.detail}"))
            if c.verdict == "regression":
                tc.add_failure_info(message=xml_text(f"regression: {c.detail}"),
                                    failure_type="regression")
            elif c.verdict == "error":
                tc.add_error_info(message=xml_text(c.detail), error_type="infrastructure")
            elif c.verdict == "flaky":
                tc.add_skipped_info(message=xml_text(f"flaky: {c.detail}"))
            cases.append(tc)
        kernels = [doc.variants[v].kernel for v in (base, variant) if v in doc.variants]
        props = {"base": base, "variant": variant, "accelerator": run.accelerator or "?",
                 "farm_version": run.farm_version,
                 **({"kernel": " → ".join(dict.fromkeys(kernels))} if all(kernels) and kernels
                    else {})}
        suites.append(TestSuite(f"{base}..{variant}", cases, hostname=run.host,
                                timestamp=run.started_iso, properties=props))
    return junit_text(suites)
