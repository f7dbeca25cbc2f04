"""Checks shared by the report tests and the end-to-end tests."""

import os
from collections import Counter
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped
from lxml import etree

# The JUnit schema Jenkins' xUnit plugin reads (a copy of ../shared/schemas/junit-10.xsd).
XSD = Path(__file__).parent / "data" / "junit-10.xsd"


def validate(path: Path) -> None:
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.parse(str(path))
    assert schema.validate(doc), f"{path}: {schema.error_log}"


def _counts(suite) -> Counter:
    c = Counter(tests=0)
    for case in suite:
        c["tests"] += 1
        for r in case.result:
            kind = {Failure: "failures", Error: "errors", Skipped: "skipped"}.get(type(r))
            if kind:
                c[kind] += 1
    return c


def check_junit(results: Path, doc: dict) -> None:
    """Both JUnit files are valid and count what results.json holds, read by a real reader."""
    for name in ("junit.xml", "compare.xml"):
        validate(results / name)
    suites = {s.name: s for s in JUnitXml.fromfile(str(results / "junit.xml"))}
    assert set(suites) == set(doc["variants"])
    for variant, suite in suites.items():
        mine = [c for c in doc["cases"] if c["variant"] == variant]
        build = doc["variants"][variant].get("build")
        want = Counter(tests=len(mine) + bool(build),
                       failures=sum(c["status"] == "fail" for c in mine) + bool(
                           build and build["status"] == "failed"),
                       errors=sum(c["status"] == "error" for c in mine),
                       skipped=sum(c["status"] == "skip" for c in mine))
        assert _counts(suite) == +want | Counter(tests=want["tests"]), variant
        if build:  # the kernel build is a testcase of its own
            assert [c.name for c in suite][0] == "build"
        assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (
            want["tests"], want["failures"], want["errors"], want["skipped"])
        props = {p.name: p.value for p in suite.properties()}
        assert props["variant"] == variant and props["kernel_version"]
    comp = {s.name: s for s in JUnitXml.fromfile(str(results / "compare.xml"))}
    for name, suite in comp.items():
        base, variant = name.split("..")
        mine = [c for c in doc["comparison"] if c["variant"] == variant and c["base"] == base]
        assert suite.tests == len(mine)
        assert suite.failures == sum(c["verdict"] == "regression" for c in mine)
        assert suite.errors == sum(c["verdict"] == "error" for c in mine)
        assert suite.skipped == sum(c["verdict"] == "flaky" for c in mine)
    assert sum(s.tests for s in comp.values()) == len(doc["comparison"])


def processes_of(*dirs: Path) -> list[str]:
    """Live processes of a run: whatever names one of these directories on its command line
    (QEMU, the pytest session, a host's farm) or works inside one (the pytest-xdist workers)."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(p / "cwd")
        except OSError:
            continue
        if any(str(d) in cmd or cwd == str(d) or cwd.startswith(f"{d}/") for d in dirs):
            found.append(f"{p.name}: {cmd[:200]}")
    return found


def run_info(**kw):
    """A run's record with what every one has, for tests that make results by hand."""
    from orchestrator.results import RunInfo
    return RunInfo(**{"id": "t", "farm_version": "0.1.0", "started": 0.0, "started_iso":
                      "1970-01-01T00:00:00+00:00", "host": "h", "config": "farm.yaml",
                      "base": "baseline", **kw})
