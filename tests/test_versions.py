"""Kernel versions as data: the version read from a tree's Makefile, a scenario's expectations
for older releases (`before:`) and its why as each kernel reads it, variants with sources and
bases of their own, and each variant compared with the base of its own kernel."""

import json
import textwrap
from pathlib import Path

import pytest

from orchestrator.caserecords import CaseRecord, CaseSpec, scenario_from_json
from orchestrator.errors import ConfigErrors, UserError
from orchestrator.farmfile import Source, load_farm
from orchestrator.judge import judge
from orchestrator.options import RunOptions
from orchestrator.parse import Observed
from orchestrator.plan import Matrix, plan_doc, plan_text
from orchestrator.runner import Runner
from orchestrator.scenarios import load_scenarios
from orchestrator.source import source_version
from orchestrator.verdicts import compare
from orchestrator.versions import before, key, short, text_for, version_of_makefile

REPO = Path(__file__).parent.parent
MAKEFILE = ("# SPDX-License-Identifier: GPL-2.0\nVERSION = {}\nPATCHLEVEL = {}\nSUBLEVEL = {}\n"
            "EXTRAVERSION ={}\nNAME = Baby Opossum Posse\n")


def makefile(v: str, p: str, s: str, extra: str = "") -> str:
    return MAKEFILE.format(v, p, s, f" {extra}" if extra else "")


def test_the_version_is_read_from_the_makefile_and_compared_as_numbers():
    assert version_of_makefile(makefile(6, 12, 118)) == "6.12.118"
    assert version_of_makefile(makefile(7, 0, 0, "-rc3")) == "7.0.0-rc3"
    assert version_of_makefile("all:\n\techo not a kernel\n") is None
    assert version_of_makefile(makefile(6, 1, "x")) is None
    assert key("6.1.192") == (6, 1, 192) and key("6.12") == (6, 12, 0)
    assert before("6.1.192", "6.12") and not before("6.12.0", "6.12")
    assert before("6.9.1", "6.10")  # not as strings: '6.9' > '6.10'
    assert short("6.12.118") == "6.12"


def test_a_why_names_the_function_of_each_kernel():
    why = "truncate_error_folio [before 6.12: truncate_error_page] (shmem_error_remove_folio " \
          "[before 6.12: shmem_error_remove_page]) decides"
    assert text_for(why, "6.12.118") == "truncate_error_folio (shmem_error_remove_folio) decides"
    assert text_for(why, "6.1.192") == "truncate_error_page (shmem_error_remove_page) decides"


def test_the_version_comes_from_each_kind_of_source(tmp_path, fake_kernel):
    cache = tmp_path / "cache"
    assert source_version(Source("dir", fake_kernel), cache, Runner()) == "6.12.0-fake"
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "Makefile").write_text("all:\n")
    with pytest.raises(UserError, match="no kernel version in its top Makefile"):
        source_version(Source("dir", bare), cache, Runner())


SCENARIO = """\
scenarios:
  - name: anon-madvise
    page: anon
    injector: madvise
    access: read
    why: 'memory_failure with MF_ACTION_REQUIRED kills the caller at once'
    expect:
      inject_signal: BUS_MCEERR_AR
      access_signal: BUS_MCEERR_AR
    before:
      '6.12':
        why: '6.1: no MF_ACTION_REQUIRED, no signal at the injection'
        expect: {inject_signal: null}
      '6.6':
        why: '6.5: older still'
        expect: {access_signal: BUS_MCEERR_AO}
"""


def test_each_kernel_gets_its_releases_expectation(tmp_path):
    (tmp_path / "s.yaml").write_text(SCENARIO)
    s, = load_scenarios(tmp_path / "s.yaml")
    new, mid, old = (s.for_kernel(v) for v in ("6.12.118", "6.8.1", "6.1.192"))
    assert (new.expect, new.expect_for, new.kernel) == (s.expect, "", "6.12.118")
    assert mid.expect == {"inject_signal": None, "access_signal": "BUS_MCEERR_AR"}
    assert (mid.expect_for, mid.why) == ("before 6.12", "6.1: no MF_ACTION_REQUIRED, no signal "
                                                        "at the injection")
    assert old.expect == {"inject_signal": None, "access_signal": "BUS_MCEERR_AO"}
    assert old.expect_for == "before 6.6" and old.why.startswith("6.5:")
    assert s.for_kernel(None) is s
    # a planned case keeps what it was resolved to; a shard's record keeps the overrides
    again = scenario_from_json(CaseSpec.planned("b", old, 1).to_json()["scenario"], "plan")
    assert again == old
    assert scenario_from_json(json.loads(json.dumps(
        CaseSpec.planned("b", s, 1).to_json()["scenario"])), "plan") == s
    # judged as its kernel: 6.1 sends no signal at the injection, and that passes there
    obs = Observed(guest="survived", booted=True, recovery=(), kernel_errors=(),
                   kernel_reports=(), panic=None, sigbus_sent=(), mce_killed=(),
                   mce_logged=False, workload_rc=0, reported=True, page_set_up=True,
                   inject_signal=None, access_signal="BUS_MCEERR_AR")
    assert judge(s.for_kernel("6.12.118"), obs)[0] == "fail"
    assert judge(mid, obs) == ("pass", "as expected")


@pytest.mark.parametrize("block, message", [
    ("    before: {'6.12': {expect: {inject_signal: null}}}\n", "before 6.12: missing key 'why'"),
    ("    before: {'six': {why: x, expect: {inject_signal: null}}}\n",
     "'six' is not a kernel release"),
    ("    before: {'6.12': {why: x, expect: {}}}\n", "expect names no observable that differs"),
    ("    before: {'6.12': {why: x, expect: {nope: 1}}}\n", "unknown observable 'nope'"),
    ("    before: {'6.12': {why: x, expect: {inject_signal: null}}, '6.12.0': {why: y, "
     "expect: {data: intact}}}\n", "before: 6.12.0 is listed twice"),
    ("    before: []\n", "before must map a release"),
])
def test_a_bad_older_expectation_is_named_with_its_line(tmp_path, block, message):
    text = SCENARIO.split("    before:")[0] + block
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigErrors) as e:
        load_scenarios(tmp_path / "s.yaml")
    assert any(message in p for p in e.value.problems), e.value.problems
    assert all(p.startswith(f"{tmp_path / 's.yaml'}:") for p in e.value.problems)


def two_kernels(tmp_path: Path, fake_kernel: Path, variants: str) -> Path:
    old = tmp_path / "old"
    old.mkdir(exist_ok=True)
    (old / "Makefile").write_text(makefile(6, 1, 192))
    (tmp_path / "fix.patch").write_text("--- a/x\n+++ b/x\n")
    (tmp_path / "farm.yaml").write_text(textwrap.dedent(f"""\
        source: {{dir: {fake_kernel}}}
        scenarios: {REPO}/guest-tests/scenarios.yaml
        guest_tests: {REPO}/guest-tests
        cache: cache
        base: baseline
        variants:
        """) + textwrap.indent(textwrap.dedent(variants), "  "))
    return tmp_path / "farm.yaml"


TWO = """\
baseline: {}
fix: {patches: [fix.patch]}
baseline-6.1: {source: {dir: old}}
fix-6.1: {source: {dir: old}, base: baseline-6.1, patches: [fix.patch]}
"""


def test_a_run_of_two_kernels_plans_each_variant_against_its_own_base(tmp_path, fake_kernel):
    cfg = load_farm(two_kernels(tmp_path, fake_kernel, TWO))
    assert cfg.source_of("fix-6.1") == Source("dir", tmp_path / "old")
    m = Matrix.of(cfg, RunOptions(scenarios="anon-madvise,anon-corrupt-pfn"))
    assert m.kernels == {"baseline": "6.12.0-fake", "fix": "6.12.0-fake", "baseline-6.1": "6.1.192",
                         "fix-6.1": "6.1.192"}
    assert m.bases == {"baseline": "baseline", "fix": "baseline",
                       "baseline-6.1": "baseline-6.1", "fix-6.1": "baseline-6.1"}
    doc = plan_doc(cfg, RunOptions(scenarios="anon-madvise,anon-corrupt-pfn"))
    row = next(r for r in doc["scenarios"] if r["scenario"] == "anon-madvise")
    assert row["expect_for"] == {"baseline": "", "fix": "", "baseline-6.1": "before 6.12",
                                 "fix-6.1": "before 6.12"}
    text = plan_text(doc)
    assert ("kernels: baseline 6.12.0-fake, fix 6.12.0-fake, baseline-6.1 6.1.192 (a base), "
            "fix-6.1 6.1.192 (base baseline-6.1)") in text
    line = next(ln for ln in text.splitlines() if ln.startswith("anon-madvise "))
    assert line.endswith("before 6.12: baseline-6.1, fix-6.1")
    assert not next(ln for ln in text.splitlines()
                    if ln.startswith("anon-corrupt-pfn ")).endswith("fix-6.1")
    # a variant of the 6.1 source, alone in its run, is the base of its own kernel
    assert Matrix.of(cfg, RunOptions(variants=("fix-6.1",), scenarios="anon-madvise")
                     ).bases == {"fix-6.1": "fix-6.1"}


@pytest.mark.parametrize("variants, message", [
    ("baseline: {}\nx: {source: {dir: old}, base: baseline}\n",
     "variants.x.base: 'baseline' builds another kernel source"),
    ("baseline: {}\nx: {base: nope}\n", "variants.x.base: 'nope' is not a variant"),
    ("baseline: {}\nx: {base: x}\n", "a variant is not compared with itself"),
    ("baseline: {}\nx: {source: {dir: nowhere}}\n", "variants.x.source.dir: no such"),
])
def test_a_variants_source_and_base_are_checked(tmp_path, fake_kernel, variants, message):
    with pytest.raises(ConfigErrors) as e:
        load_farm(two_kernels(tmp_path, fake_kernel, variants))
    assert any(message in p for p in e.value.problems), e.value.problems


def record(variant: str, scenario: str, status: str, **obs) -> CaseRecord:
    return CaseRecord(id=f"{variant}::{scenario}::r1", variant=variant, scenario=scenario,
                      repeat=1, status=status, message="", observed=obs)


def test_each_variant_is_compared_with_the_base_of_its_own_kernel():
    cases = [record("baseline", "s", "pass"), record("fix", "s", "fail"),
             record("baseline-6.1", "s", "pass", inject_signal=None),
             record("fix-6.1", "s", "fail")]
    bases = {"baseline": "baseline", "fix": "baseline", "baseline-6.1": "baseline-6.1",
             "fix-6.1": "baseline-6.1"}
    got = {(c.base, c.variant): c.verdict
           for c in compare(cases, "baseline", list(bases), bases)}
    assert got == {("baseline", "fix"): "regression", ("baseline-6.1", "fix-6.1"): "regression"}


def test_the_table_of_what_two_kernels_do_differently():
    """The bare kernels of a run, older to newer, observable by observable (values of the
    real 6.1 and 6.12 runs of anon-madvise and ksm-corrupt-pfn)."""
    from orchestrator.kernel_changes import changes_markdown, kernel_pairs
    from orchestrator.results import RunInfo, VariantInfo, assemble

    cases = [record("baseline", "anon-madvise", "pass", inject_signal="BUS_MCEERR_AR",
                    access_signal="BUS_MCEERR_AR"),
             record("baseline-6.1", "anon-madvise", "pass", inject_signal=None,
                    access_signal="BUS_MCEERR_AR"),
             record("baseline", "ksm-corrupt-pfn", "pass", recovery=["dirty LRU page: Recovered"],
                    data="unreadable"),
             record("baseline-6.1", "ksm-corrupt-pfn", "pass",
                    recovery=["unmapping failed page: Ignored"], data="intact"),
             record("baseline", "anon-corrupt-pfn", "pass", data="unreadable"),
             record("baseline-6.1", "anon-corrupt-pfn", "pass", data="unreadable"),
             record("baseline", "kselftest-x", "pass"), record("baseline-6.1", "kselftest-x",
                                                               "skip"),
             record("fix", "anon-madvise", "fail", inject_signal=None)]
    variants = {"baseline": VariantInfo("", [], kernel="6.12.118"),
                "fix": VariantInfo("", ["fix.patch"], kernel="6.12.118"),
                "baseline-6.1": VariantInfo("", [], kernel="6.1.192", base="baseline-6.1")}
    run = RunInfo("r", "0", 0.0, "", "h", "farm.yaml", "baseline")
    doc = assemble(run, variants, cases)
    pair, = kernel_pairs(doc)
    assert (pair.older, pair.newer, pair.same, pair.unjudged) == (
        "baseline-6.1", "baseline", 1, ("kselftest-x",))
    assert [(c.scenario, c.observable, c.older, c.newer) for c in pair.changes] == [
        ("anon-madvise", "inject_signal", None, "BUS_MCEERR_AR"),
        ("ksm-corrupt-pfn", "recovery", ["unmapping failed page: Ignored"],
         ["dirty LRU page: Recovered"]),
        ("ksm-corrupt-pfn", "data", "intact", "unreadable")]
    text = "\n".join(changes_markdown(doc))
    assert "## What memory failure does differently: 6.1.192 → 6.12.118" in text
    assert "| anon-madvise | inject_signal | None | 'BUS_MCEERR_AR' |" in text
    assert [c.variant for c in doc.comparison] == ["fix"]  # the 6.1 base is no A/B pair
