"""Coverage without a guest: the build's gcov side on the fake tree, the agent's gcov events,
gcovr reading .gcda recorded from real guests of the default kernel, the A/B line matching,
and --affected's choice of scenarios."""

import base64
import hashlib
import lzma
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from orchestrator.affected import Region, choose, regions
from orchestrator.build import BuildRequest, build, build_key
from orchestrator.case import kernel_cmdline
from orchestrator.coverage import line_map, patched_files, reached, read_case, save_gcda
from orchestrator.errors import ConfigErrors, UserError
from orchestrator.farmfile import Variant, load_farm
from orchestrator.progress import Progress
from orchestrator.registry import coverage_files
from orchestrator.runner import Runner
from orchestrator.source import prepare_source
from orchestrator.versions import short, version_of_makefile

REPO = Path(__file__).parent.parent
MF = "mm/memory-failure.c"
TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
# gcovr counts a file's lines from its source: the recorded data goes with this one
MF_SHA256 = "76d96f207be19f15535b6b0c11a1e74bdb8542adba5d1af7cb5c875c138273e8"


def kernel_file(rel: str, dest: Path) -> None:
    """A file of Debian's 6.12 source: from a 6.12 tree the farm unpacked (the cache may
    hold other kernels' too), else the tarball."""
    cache = Path(os.environ.get("FARM_CACHE", "~/.cache/hwpoison-farm")).expanduser()
    found = [p for p in (cache / "sources").glob(f"*/{rel}") if p.is_file()
             and short(version_of_makefile(_text(p.parents[len(Path(rel).parts) - 1]
                                                 / "Makefile")) or "0.0") == "6.12"]
    if found:
        dest.write_bytes(found[0].read_bytes())
    else:
        if not TARBALL.is_file():
            pytest.fail(f"{TARBALL} is missing (Debian: apt-get install linux-source-6.12)")
        with open(dest, "wb") as out:
            subprocess.run(["tar", "-xJOf", TARBALL, f"linux-source-6.12/{rel}"], stdout=out,
                           check=True)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == MF_SHA256


def _text(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""


# ---- gcovr on data recorded from real guests -----------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The default kernel's memory-failure.gcno (from its coverage build) and the .gcda three
    real guests sent back: an anonymous, a clean and a dirty page-cache page poisoned with
    madvise (baseline, `farm run --coverage`)."""
    d = tmp_path_factory.mktemp("recorded")
    data = Path(__file__).parent / "data" / "coverage"
    (d / "build/mm").mkdir(parents=True)
    (d / "build/mm/memory-failure.gcno").write_bytes(
        lzma.decompress((data / "memory-failure.gcno.xz").read_bytes()))
    kernel_file(MF, d / "build" / MF)
    out = {}
    for name in ("anon-madvise", "pagecache-clean-madvise", "pagecache-dirty-madvise"):
        case = d / name
        (case / "gcov/mm").mkdir(parents=True)
        shutil.copy(data / f"{name}.gcda", case / "gcov/mm/memory-failure.gcda")
        doc = read_case(d / "build", [MF], case / "gcov")
        out[name] = reached(doc)[MF]
        # gcov's scratch copy and gcovr's JSON are gone; the .gcda stay
        assert sorted(p.name for p in case.iterdir()) == ["gcov"]
    return out


def test_gcovr_reads_the_guests_counters_beside_the_builds_notes(recorded):
    anon = recorded["anon-madvise"]
    assert anon["lines_total"] == 738 and anon["functions_total"] == 73
    assert len(anon["lines"]) == 168  # 22.8 %, as the probe of DESIGN.md found
    # internal functions count too (gcovr drops names starting with __ by default)
    assert "__add_to_kill" in anon["functions"]
    assert {"memory_failure", "hwpoison_user_mappings", "me_pagecache_dirty",
            "me_pagecache_clean", "kill_proc"} <= set(anon["functions"])


def test_truncate_error_folio_is_reached_by_the_page_cache_not_by_anonymous_pages(recorded):
    # a dirty anonymous page takes the "dirty LRU" row: me_pagecache_dirty, then the
    # anonymous branch of me_pagecache_clean, which returns before truncate_error_folio
    assert "truncate_error_folio" not in recorded["anon-madvise"]["functions"]
    assert "truncate_error_folio" in recorded["pagecache-clean-madvise"]["functions"]
    assert "me_pagecache_dirty" not in recorded["pagecache-clean-madvise"]["functions"]
    assert {"truncate_error_folio", "me_pagecache_dirty"} <= set(
        recorded["pagecache-dirty-madvise"]["functions"])
    assert not {"unpoison_memory", "soft_offline_page", "me_huge_page"} & set(
        recorded["pagecache-clean-madvise"]["functions"])


# ---- the agent's gcov events ---------------------------------------------------------------

def _event(rel, data: bytes | str):
    text = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {"event": "gcov", "file": rel, "base64": text}


def test_gcov_events_become_gcda_files_under_their_tree_path(tmp_path):
    files = [MF, "mm/madvise.c"]
    written, problem = save_gcda([_event(MF, b"adcg1"), _event("mm/madvise.c", b"adcg2")],
                                 files, tmp_path)
    assert (written, problem) == (files, "")
    assert (tmp_path / "mm/memory-failure.gcda").read_bytes() == b"adcg1"


@pytest.mark.parametrize("events, says", [
    ([], "sent no gcov data for mm/memory-failure.c"),
    ([_event(MF, "YWRj!Zw==")], "not base64"),
    ([_event("../../etc/passwd.c", b"x")], "unexpected gcov event for '../../etc/passwd.c'"),
    ([{"event": "gcov", "file": MF}], "unexpected gcov event"),
])
def test_a_torn_foreign_or_missing_gcov_event_is_a_problem_not_a_traceback(tmp_path, events,
                                                                             says):
    written, problem = save_gcda(events, [MF], tmp_path)
    assert written == [] and says in problem
    assert not any(tmp_path.rglob("*.gcda")) and not (tmp_path.parent / "etc").exists()


# ---- configuration -------------------------------------------------------------------------

def test_coverage_files_reach_the_guest_command_line_without_their_suffix():
    cfg = load_farm(REPO / "farm.yaml")
    line = kernel_cmdline(cfg.scenarios[0], [MF, "mm/madvise.c"])
    assert "farm.gcov=mm/memory-failure,mm/madvise" in line.split()
    assert "farm.gcov" not in kernel_cmdline(cfg.scenarios[0])


@pytest.mark.parametrize("value, says", [
    ("[../mm/x.c]", "is not a C file of the kernel tree"),
    ("[mm/x.c;reboot]", "is not a C file"),
    ("['mm/x.c farm.run=sh']", "is not a C file"),
    ("[/etc/x.c]", "is not a C file"),
    ("[mm/memory-failure.h]", "is not a C file"),
    ("[mm/a.c, mm/a.c]", "mm/a.c is listed twice"),
    ("[]", "coverage must be true, false or a list"),
    ("{file: mm/a.c}", "coverage must be true, false or a list"),
    ("3", "coverage must be bool or list"),
])
def test_bad_coverage_in_farm_yaml_names_the_line(tmp_path, value, says):
    farm = tmp_path / "farm.yaml"
    text = (REPO / "farm.yaml").read_text().replace("scenarios: guest-tests/scenarios.yaml",
                                                     f"scenarios: {REPO}/guest-tests/"
                                                     "scenarios.yaml")
    text = text.replace("source:\n  tarball: /usr/src/", "source:\n  tarball: /usr/src/")
    farm.write_text(text + f"guest_tests: {REPO}/guest-tests\ncoverage: {value}\n")
    line = len(text.splitlines()) + 2
    for p in ("kernels",):
        os.symlink(REPO / p, tmp_path / p)
    with pytest.raises(ConfigErrors) as e:
        load_farm(farm)
    assert any(f"farm.yaml:{line}:" in p and says in p for p in e.value.problems), \
        e.value.problems


def test_coverage_true_means_the_default_files(tmp_path):
    farm = tmp_path / "farm.yaml"
    farm.write_text((REPO / "farm.yaml").read_text() + "coverage: true\n")
    for p in ("kernels", "guest-tests"):
        os.symlink(REPO / p, tmp_path / p)
    assert load_farm(farm).coverage == (MF, "mm/madvise.c")


def test_coverage_flag_checks_each_file():
    assert coverage_files("mm/memory-failure.c, mm/huge_memory.c") == (
        MF, "mm/huge_memory.c")
    with pytest.raises(UserError, match="'mm/../x.c'"):
        coverage_files("mm/../x.c")


# ---- the build: a coverage build on the fake tree ------------------------------------------

@pytest.fixture
def fake(tmp_path, fake_kernel):
    runner = Runner()
    progress = Progress(stream=open(tmp_path / "progress.txt", "w"))
    cache = tmp_path / "cache"
    src = prepare_source(__import__("orchestrator.farmfile").farmfile.Source("dir", fake_kernel),
                         cache, runner, progress)

    def req(coverage=()):
        return BuildRequest(Variant("baseline"), src, "tinyconfig", (), cache, 2,
                            coverage=coverage)
    return runner, progress, req, fake_kernel


def test_a_coverage_build_has_its_own_key_notes_and_source_and_leaves_the_tree_pristine(fake):
    runner, progress, req, tree = fake
    before = (tree / "mm/Makefile").read_text()
    plain, cov = build(req(), runner, progress), build(req((MF,)), runner, progress)
    assert plain.key != cov.key and plain.coverage == ""
    assert build_key(req((MF,)), "gcc") != build_key(req(("mm/madvise.c",)), "gcc")
    assert cov.coverage_files == [MF] and cov.coverage_missing == []
    published = Path(cov.coverage)
    assert (published / "mm/memory-failure.gcno").stat().st_size > 0
    assert (published / MF).read_text() == (tree / MF).read_text()
    assert (tree / "mm/Makefile").read_text() == before  # a hard link, written anew
    config = Path(cov.config).read_text()
    assert "CONFIG_GCOV_KERNEL=y" in config and "CONFIG_GCOV_KERNEL" not in Path(
        plain.config).read_text()


def test_a_profiled_file_that_is_not_in_the_tree_stops_the_build(fake):
    runner, progress, req, _ = fake
    with pytest.raises(UserError, match="coverage: mm/nope.c is not a file of the kernel tree"):
        build(req(("mm/nope.c",)), runner, progress)


# ---- A/B: lines matched through a diff -----------------------------------------------------

def test_line_map_matches_unchanged_lines_and_names_changed_ones():
    old = ["a", "b", "c", "d"]
    new = ["a", "B", "c", "x", "d"]
    same, changed, removed = line_map(old, new)
    assert same == {1: 1, 3: 3, 5: 4} and changed == {2, 4} and removed == {2}


def test_patched_files_reads_the_series():
    patches = sorted(str(p) for p in (REPO / "kernels/patches").rglob("*.patch")
                     if p.parent.name != "selftest-demo")
    assert patched_files(patches) == [MF]
    demo = sorted(str(p) for p in (REPO / "kernels/patches/selftest-demo").glob("*.patch"))
    assert patched_files(demo) == ["tools/testing/selftests/mm/Makefile",
                                   "tools/testing/selftests/mm/hwpoison-pagemap.c",
                                   "tools/testing/selftests/mm/hwpoison-broken.c"]


# ---- --affected ----------------------------------------------------------------------------

SOURCE = textwrap.dedent("""\
    /* a file */
    struct s { int a; };
    int f(int x)
    {
    \tint y = 0;
    \t/* note */
    \tif (x)
    \t\ty = 1;
    \treturn y;
    }
    int g(void)
    {
    \treturn 2;
    }
""")
SHAPE = {"executable": [3, 5, 7, 8, 9, 11, 13],
         "function_of": {"3": "f", "5": "f", "7": "f", "8": "f", "9": "f", "11": "g",
                         "13": "g"}}
SAVED = {"scenarios": {"takes-branch": {"a.c": {"lines": [3, 5, 7, 8, 9]}},
                       "skips-branch": {"a.c": {"lines": [3, 5, 7, 9]}},
                       "only-g": {"a.c": {"lines": [11, 13]}}},
         "no_data": {"panics": "the guest sent no gcov data"}}
NAMES = ["takes-branch", "skips-branch", "only-g", "panics"]


def _affected(new: str) -> tuple[list[Region], list[str] | None, dict]:
    rs = regions("a.c", SOURCE, new, SHAPE)
    sel = choose(SAVED, rs, NAMES)
    return rs, sel.names, sel.why


def test_a_changed_line_selects_the_scenarios_that_reached_it():
    rs, names, why = _affected(SOURCE.replace("\t\ty = 1;", "\t\ty = 2;"))
    assert [(r.first, r.last, r.scope, r.function) for r in rs] == [(8, 8, "lines", "f")]
    assert names == ["takes-branch", "panics"]  # no coverage of it: selected, and said so
    assert "reaches a.c:8 in f (line 8)" in why["takes-branch"][0]
    assert "the guest sent no gcov data" in why["panics"][0]


def test_an_insertion_stands_for_the_executable_lines_around_it():
    _, names, _ = _affected(SOURCE.replace("\treturn y;", "\ty++;\n\treturn y;"))
    assert names == ["takes-branch", "skips-branch", "panics"]


def test_a_comment_selects_nothing_and_a_struct_selects_the_whole_file():
    rs, names, _ = _affected(SOURCE.replace("/* note */", "/* a better note */"))
    assert rs[0].scope == "comment" and names == ["panics"]
    rs, names, why = _affected(SOURCE.replace("int a; }", "int a, b; }"))
    assert rs[0].scope == "file" and names == NAMES
    assert "outside every function" in why["only-g"][0]
