"""KTAP/TAP parsing on recorded kselftest output (tests/data/ktap/README.md says how each log
was made), on the KTAP spec's nested example, and on variants made from them in memory."""

import pytest

from orchestrator.ktap import KtapResult, KtapTest, flatten, parse_ktap, program_result


@pytest.fixture
def ktap(data):
    def load(name: str) -> list[str]:
        return (data / "ktap" / name).read_text().splitlines(keepends=True)
    return load


def statuses(result: KtapResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, t in flatten(result):
        counts[t.status] = counts.get(t.status, 0) + 1
    return counts


# name, plan, statuses, problems, recorded exit code, program_result
RECORDED = [
    ("madv_populate.log", 16, {"pass": 16}, [], 0, "pass"),
    ("mdwe_test.log", 36, {"pass": 32, "skip": 4}, [], 0, "pass"),
    ("mkdirty-nobody.log", 6, {"pass": 5, "skip": 1}, [], 0, "pass"),
    ("nanosleep.log", 12, {"pass": 4, "skip": 8}, [], 0, "pass"),
    ("nanosleep-killed.log", 12, {"pass": 2, "skip": 5, "error": 5},
     ["planned 12 tests, got 7"], None, "error"),
    ("mseal_test-nobody.log", 88, {"pass": 86, "fail": 2}, [], 1, "fail"),
    ("soft-dirty.log", 0, {}, [], 4, "skip"),
    ("map_hugetlb-nohugepages.log", 1, {"error": 1},
     ["bail out: mmap: Cannot allocate memory", "planned 1 test, got 0"], 1, "fail"),
    ("hugetlb-soft-offline-nohugepages.log", 2, {"fail": 2}, [], 1, "fail"),
    ("mremap_dontunmap-noplan.log", None, {"pass": 5}, ["missing plan"], 0, "pass"),
]


@pytest.mark.parametrize(("name", "plan", "counts", "problems", "exit_code", "verdict"),
                         RECORDED, ids=[r[0] for r in RECORDED])
def test_recorded_logs(ktap, name, plan, counts, problems, exit_code, verdict):
    r = parse_ktap(ktap(name))
    assert r.version == "TAP version 13"
    assert r.plan == plan
    assert statuses(r) == counts
    assert r.problems == problems
    assert [t.number for t in r.tests] == list(range(1, len(r.tests) + 1))
    assert program_result(r, exit_code) == verdict


def test_all_pass_names_and_diagnostics(ktap):
    r = parse_ktap(ktap("madv_populate.log"))
    assert r.tests[0].name == "MADV_POPULATE_READ with PROT_READ"
    assert r.tests[15].name == "range is populated"
    # "# [RUN] ..." comes before the first result of each group and belongs to that test.
    assert r.tests[0].diagnostics == ["# [RUN] test_prot_read"]
    assert r.tests[1].diagnostics == []
    assert r.tests[10].diagnostics == ["# [RUN] test_populate_read"]
    assert r.diagnostics == ["# Totals: pass:16 fail:0 xfail:0 xpass:0 skip:0 error:0"]
    assert all(t.reason == "" and t.subtests == [] for t in r.tests)


def test_harness_skips_keep_their_reasons(ktap):
    r = parse_ktap(ktap("mdwe_test.log"))
    skipped = [(t.number, t.name, t.reason) for t in r.tests if t.status == "skip"]
    assert skipped == [
        (15, "mdwe.stock.arm64_BTI", "HWCAP2_BTI not supported"),
        (22, "mdwe.enabled.arm64_BTI", "HWCAP2_BTI not supported"),
        (29, "mdwe.inherited.arm64_BTI", "HWCAP2_BTI not supported"),
        (36, "mdwe.not_inherited.arm64_BTI", "HWCAP2_BTI not supported"),
    ]
    assert r.tests[0].diagnostics == ["# Starting 36 tests from 12 test cases.",
                                      "#  RUN           global.prctl_flags ...",
                                      "#            OK  global.prctl_flags"]
    assert r.diagnostics == ["# PASSED: 36 / 36 tests passed.",
                             "# Totals: pass:32 fail:0 xfail:0 xpass:0 skip:4 error:0"]


def test_lines_before_the_version_line_are_dropped(ktap):
    lines = ktap("mkdirty-nobody.log")
    assert lines[0].startswith("# [INFO] detected THP size")
    r = parse_ktap(lines)
    every = r.diagnostics + [d for _, t in flatten(r) for d in t.diagnostics]
    assert not any("detected THP size" in d for d in every)
    assert r.tests[0].diagnostics == ["# [INFO] PTRACE write access"]


def test_nameless_skip_is_named_by_its_reason(ktap):
    r = parse_ktap(ktap("mkdirty-nobody.log"))
    last = r.tests[5]
    assert (last.number, last.status, last.name, last.reason) == (
        6, "skip", "__NR_userfaultfd failed", "__NR_userfaultfd failed")
    # kselftest names are not unique: the five passes share one name, so paths repeat.
    assert [p for p, _ in flatten(r)][:5] == ["SIGSEGV generated, page not modified"] * 5


def test_trailing_blanks_and_names_after_skip(ktap):
    r = parse_ktap(ktap("nanosleep.log"))
    assert [t.name for t in r.tests] == [
        "CLOCK_REALTIME", "CLOCK_MONOTONIC", "CLOCK_PROCESS_CPUTIME_ID",
        "CLOCK_THREAD_CPUTIME_ID", "CLOCK_MONOTONIC_RAW", "CLOCK_REALTIME_COARSE",
        "CLOCK_MONOTONIC_COARSE", "CLOCK_BOOTTIME", "CLOCK_REALTIME_ALARM",
        "CLOCK_BOOTTIME_ALARM", "UNKNOWN_CLOCKID", "CLOCK_TAI"]
    assert [t.number for t in r.tests if t.status == "pass"] == [1, 2, 8, 12]


def test_killed_run_marks_the_rest_as_errors(ktap):
    r = parse_ktap(ktap("nanosleep-killed.log"))
    assert len(r.tests) == 12
    assert [t.status for t in r.tests[:7]] == ["pass"] * 2 + ["skip"] * 5
    missing = r.tests[7:]
    assert [(t.number, t.name, t.status) for t in missing] == [
        (n, f"test {n}", "error") for n in range(8, 13)]
    assert all("output ended" in t.reason for t in missing)
    assert r.diagnostics == []


@pytest.mark.parametrize("cut", range(0, 44))
def test_torn_last_line_never_breaks_parsing(ktap, cut):
    lines = ktap("nanosleep-killed.log")
    last = lines[-1].rstrip("\n")
    assert last.rstrip() == "ok 7 # SKIP CLOCK_MONOTONIC_COARSE" and len(last) == 43
    r = parse_ktap(lines[:-1] + [last[:cut]])
    assert len(r.tests) == 12 and r.plan == 12
    assert [t.status for t in r.tests[:6]] == ["pass"] * 2 + ["skip"] * 4
    # "ok 7" may be the start of "ok 7 # SKIP ...": a cut line is kept, not believed.
    seventh = r.tests[6]
    assert (seventh.number, seventh.status) == (7, "error")
    torn = last[:cut].strip()
    assert seventh.diagnostics == ([torn] if torn else [])
    assert r.problems == ([f"last line cut off: {torn!r}"] if torn else []) + [
        "planned 12 tests, got 6"]
    # Lines handed over without newlines cannot show a cut: parsed as they read.
    assert len(parse_ktap([line.rstrip("\n") for line in lines[:-1]] + [last[:cut]]).tests) == 12


def test_failures(ktap):
    r = parse_ktap(ktap("mseal_test-nobody.log"))
    failed = [(t.number, t.name) for t in r.tests if t.status == "fail"]
    assert failed == [(63, "test_seal_mremap_move_fixed_zero: line:1464"),
                      (86, "test_seal_zero_address: line:485")]
    # A top-level "not ok" fails the program even when it exits 0.
    assert program_result(r, 0) == "fail"


def test_whole_program_skip(ktap):
    r = parse_ktap(ktap("soft-dirty.log"))
    assert (r.plan, r.tests, r.reason, r.problems) == (0, [], "soft-dirty is not support", [])
    assert program_result(r, 4) == "skip"


def test_bail_out(ktap):
    r = parse_ktap(ktap("map_hugetlb-nohugepages.log"))
    (t,) = r.tests
    assert (t.number, t.status) == (1, "error")
    assert t.reason == "no result line: bailed out: mmap: Cannot allocate memory"
    assert t.diagnostics == ["# Default size hugepages", "# Mapping 256 Mbytes",
                             "Bail out! mmap: Cannot allocate memory"]
    assert r.diagnostics == ["# Planned tests != run tests (1 != 0)",
                             "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0"]


def test_hugetlb_soft_offline_without_hugepages(ktap):
    r = parse_ktap(ktap("hugetlb-soft-offline-nohugepages.log"))
    assert [(t.number, t.name, t.status) for t in r.tests] == [
        (1, "MADV_SOFT_OFFLINE should reduced 1 hugepage", "fail"),
        (2, "Test soft-offline when enabled_soft_offline=0", "fail")]
    assert r.tests[0].diagnostics[0] == "# Test soft-offline when enabled_soft_offline=1"
    assert "#  !!! mmap failed: Cannot allocate memory (12)" in r.tests[0].diagnostics
    assert r.tests[1].diagnostics[-1] == "# After MADV_SOFT_OFFLINE nr_hugepages=0"


def test_plain_text_program_is_not_ktap(ktap):
    r = parse_ktap(ktap("hugetlb-read-hwpoison-nohugepages.log"))
    assert (r.version, r.plan, r.tests, r.problems) == (None, None, [], ["no KTAP output"])
    assert len(r.diagnostics) == 28
    assert r.diagnostics[2] == "... HugeTLB read regression test...TEST_SKIPPED"
    # Its exit code is all there is: every case skipped and it still exits 0.
    assert program_result(r, 0) == "pass"
    assert program_result(r, 255) == "fail"


def test_missing_plan(ktap):
    r = parse_ktap(ktap("mremap_dontunmap-noplan.log"))
    assert [t.name for t in r.tests] == [
        "mremap_dontunmap_simple", "mremap_dontunmap_simple_shmem",
        "mremap_dontunmap_simple_fixed", "mremap_dontunmap_partial_mapping",
        "mremap_dontunmap_partial_mapping_overwrite"]


def test_plan_after_the_results(ktap):
    r = parse_ktap(ktap("mremap_dontunmap-noplan.log") + ["1..5\n"])
    assert (r.plan, r.problems, len(r.tests)) == (5, [], 5)


def test_no_version_line(ktap):
    """kselftest prints no version line when KSFT_TAP_LEVEL is set."""
    r = parse_ktap(ktap("madv_populate.log")[1:])
    assert (r.version, r.plan, len(r.tests)) == (None, 16, 16)
    assert r.problems == ["missing version line"]


def test_timestamps_and_console_noise_before_the_version(ktap):
    plain = parse_ktap(ktap("madv_populate.log"))
    noisy = ["[    0.000000] Linux version 6.12.0 (root@build) #1 SMP\n",
             "[    1.000000] ok 99 not a result: before the version line\n"]
    noisy += [f"[{12 + i / 1000:12.6f}] {line}" for i, line in
              enumerate(ktap("madv_populate.log"))]
    noisy[5] = "[    1.234567][    T1] " + noisy[5].split("] ", 1)[1]
    assert parse_ktap(noisy) == plain


SPEC_TREE = [
    ("main_test", "fail", ""),
    ("main_test/example_test_1", "pass", ""),
    ("main_test/example_test_1/test_1", "pass", ""),
    ("main_test/example_test_2", "pass", ""),
    ("main_test/example_test_2/test_1", "skip", "test_1 skipped"),
    ("main_test/example_test_2/test_2", "pass", ""),
    ("main_test/example_test_3", "fail", ""),
    ("main_test/example_test_3/test_1", "pass", ""),
    ("main_test/example_test_3/test_2", "fail", ""),
    ("main_test/example_test_3/test_3", "skip", "test_3 skipped"),
]


def restyle(lines: list[str], *, width: int, subtest: bool, version: bool) -> list[str]:
    """The spec example as other producers print it: `width` spaces a level, and for each
    nested block a "# Subtest: <name>" header (KUnit, TAP 14) and/or its version line."""
    rows = [(len(s) - len(s.lstrip()), s.strip()) for s in (line.rstrip("\n") for line in lines)]
    out = []
    for i, (ind, text) in enumerate(rows):
        pad = " " * (ind // 2 * width)
        if text == "KTAP version 1" and ind > 0:
            if version:
                out.append(pad + text)
            if subtest:
                owner = next(t for j, t in rows[i + 1:] if j < ind and t.startswith(("ok", "not")))
                out.append(pad + "# Subtest: " + owner.split(" ", 3)[-1].split(" #")[0])
        else:
            out.append(pad + text)
    return [line + "\n" for line in out]


STYLES = {
    "spec": {"width": 2, "subtest": False, "version": True},
    "kunit": {"width": 4, "subtest": True, "version": True},
    "tap14": {"width": 4, "subtest": True, "version": False},
}


@pytest.mark.parametrize("style", STYLES)
def test_nested_subtests(ktap, style):
    r = parse_ktap(restyle(ktap("ktap-spec-nested.log"), **STYLES[style]))
    assert (r.version, r.plan, r.problems) == ("KTAP version 1", 1, [])
    assert [(p, t.status, t.reason) for p, t in flatten(r)] == SPEC_TREE
    tests = dict(flatten(r))
    assert tests["main_test/example_test_1/test_1"].diagnostics == ["# test_1: initializing test_1"]
    assert tests["main_test/example_test_3/test_2"].diagnostics == ["# test_2: FAIL"]
    assert [t.number for t in tests["main_test"].subtests] == [1, 2, 3]
    numbered = [(p, t.name) for p, t in flatten(r, numbers=True)]
    assert [p for p, _ in numbered] == ["1", "1.1", "1.1.1", "1.2", "1.2.1", "1.2.2", "1.3",
                                        "1.3.1", "1.3.2", "1.3.3"]
    assert numbered[5] == ("1.2.2", "test_2")
    assert program_result(r, 0) == "fail"


def test_nested_example_file_is_the_spec_verbatim(ktap):
    lines = ktap("ktap-spec-nested.log")
    assert restyle(lines, **STYLES["spec"]) == lines
    assert lines[2] == "  KTAP version 1\n" and lines[-1] == "not ok 1 main_test\n"


@pytest.mark.parametrize(("style", "parent", "suite"), [
    ("spec", "test 1", "test 3"),  # KTAP names a test only in its result line
    ("kunit", "main_test", "example_test_3"),
])
def test_output_ending_inside_subtests(ktap, style, parent, suite):
    lines = restyle(ktap("ktap-spec-nested.log"), **STYLES[style])
    cut = next(i for i, line in enumerate(lines) if "test_2: FAIL" in line)
    r = parse_ktap(lines[:cut + 1])
    got = {p: (t.status, t.name) for p, t in flatten(r)}
    assert got[parent] == ("error", parent)
    assert got[f"{parent}/example_test_2"] == ("pass", "example_test_2")
    assert got[f"{parent}/{suite}"] == ("error", suite)
    assert got[f"{parent}/{suite}/test_1"] == ("pass", "test_1")
    assert got[f"{parent}/{suite}/test 2"] == ("error", "test 2")
    assert got[f"{parent}/{suite}/test 3"] == ("error", "test 3")
    assert dict(flatten(r))[f"{parent}/{suite}/test 2"].diagnostics == ["# test_2: FAIL"]
    assert r.problems == [f"{parent}/{suite}: planned 3 tests, got 1",
                          f"output ended inside test 3 ({parent}/{suite})",
                          f"output ended inside test 1 ({parent})"]
    assert program_result(r, None) == "error"


def test_parent_result_before_a_subtest_result(ktap):
    lines = [line for line in ktap("ktap-spec-nested.log") if line != "    ok 2 test_2\n"]
    r = parse_ktap(lines)
    tests = dict(flatten(r))
    assert tests["main_test/example_test_2"].status == "pass"
    lost = tests["main_test/example_test_2/test 2"]
    assert (lost.number, lost.status) == (2, "error")
    assert "result came first" in lost.reason
    # The parent's name is not known yet when its block is found short.
    assert r.problems == ["test 1/example_test_2: planned 2 tests, got 1"]


def test_flatten_prefix(ktap):
    r = parse_ktap(ktap("nanosleep.log"))
    paths = [p for p, _ in flatten(r, "timers/nanosleep/")]
    assert paths[0] == "timers/nanosleep/CLOCK_REALTIME"
    assert len(paths) == 12


def one(line: str) -> KtapTest:
    (t,) = parse_ktap(["KTAP version 1\n", "1..1\n", line + "\n"]).tests
    return t


# The result lines kselftest.h and the spec print (ksft_test_result_* and ktap.rst).
@pytest.mark.parametrize(("line", "name", "status", "reason"), [
    ("ok 1 test_case_name", "test_case_name", "pass", ""),
    ("not ok 1 test_case_name", "test_case_name", "fail", ""),
    ("ok 1 - tap style name", "tap style name", "pass", ""),
    ("not ok 1 - tap style name # SKIP needs root", "tap style name", "skip", "needs root"),
    ("ok 1 test # SKIP necessary dependency unavailable", "test", "skip",
     "necessary dependency unavailable"),
    ("ok 1 test_4 # SKIP", "test_4", "skip", ""),
    ("not ok 1 later # TODO not written yet", "later", "pass", "TODO not written yet"),
    ("ok 1 # XFAIL unsupported on this arch", "unsupported on this arch", "pass",
     "XFAIL unsupported on this arch"),
    ("ok 1 unexpected # XPASS", "unexpected", "fail", "XPASS"),
    ("not ok 1 test # TIMEOUT 30 seconds", "test", "fail", "TIMEOUT 30 seconds"),
    ("not ok 1 # error could not fork", "could not fork", "fail", "error could not fork"),
    ("ok 1 check return code # rcode=0", "check return code", "pass", "rcode=0"),
    ("ok 1 name #  message", "name", "pass", "message"),  # ksft_test_result_code()
    ("ok 1", "test 1", "pass", ""),
    ("ok 1 issue#42 fixed", "issue#42 fixed", "pass", ""),
])
def test_result_lines(line, name, status, reason):
    t = one(line)
    assert (t.number, t.name, t.status, t.reason) == (1, name, status, reason)


@pytest.mark.parametrize("line", [
    "okay 1 this is printf output", "ok one", "not ok", "ok 99999999999999 huge",
    "1..99999999999", "1..999999999", "\x00\x01garbage", "# Subtest:", "KTAP version",
])
def test_foreign_lines_never_break_parsing(ktap, line):
    lines = ktap("madv_populate.log")
    r = parse_ktap(lines[:5] + [line + "\n"] + lines[5:])
    assert [t.status for t in r.tests] == ["pass"] * 16
    assert len(flatten(r)) == 16


@pytest.mark.parametrize(("exit_code", "verdict"), [
    (0, "pass"), (4, "skip"), (1, "fail"), (2, "fail"), (124, "fail"), (255, "fail"),
    (None, "error"), (-9, "error"),
])
def test_program_result_exit_codes(ktap, exit_code, verdict):
    assert program_result(parse_ktap(ktap("madv_populate.log")), exit_code) == verdict


def test_program_result_only_top_level_not_ok_fails(ktap):
    """The nested 'not ok test_2' alone does not fail a program whose parents passed."""
    lines = [line.replace("not ok", "ok") if not line.startswith("    ") else line
             for line in ktap("ktap-spec-nested.log")]
    r = parse_ktap(lines)
    assert [t.status for t in r.tests] == ["pass"]
    assert dict(flatten(r))["main_test/example_test_3/test_2"].status == "fail"
    assert program_result(r, 0) == "pass"
    assert program_result(parse_ktap(ktap("mseal_test-nobody.log")), 4) == "fail"
