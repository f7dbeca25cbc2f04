"""farm.yaml and scenario validation: every problem at once, each with file and line."""

import textwrap

import pytest

from orchestrator.cli import main
from orchestrator.errors import ConfigErrors
from orchestrator.farmfile import load_farm
from orchestrator.scenarios import load_scenarios

REPO_FARM = __import__("pathlib").Path(__file__).parent.parent / "farm.yaml"

SCENARIOS = """\
scenarios:
  - name: anon-madvise
    page: anon
    injector: madvise
    access: read
    why: the page is unmapped and the caller killed
    expect:
      recovery: ["dirty LRU page: Recovered"]
"""


@pytest.fixture
def farm_dir(tmp_path):
    (tmp_path / "guest-tests" / "agent").mkdir(parents=True)
    (tmp_path / "guest-tests" / "agent" / "init").write_text("#!/bin/sh\n")
    (tmp_path / "guest-tests" / "scenarios.yaml").write_text(SCENARIOS)
    (tmp_path / "linux.tar.xz").write_bytes(b"")
    (tmp_path / "fix.patch").write_text("--- a/x\n+++ b/x\n")
    return tmp_path


def write_farm(d, text):
    p = d / "farm.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def problems(path):
    with pytest.raises(ConfigErrors) as e:
        load_farm(path)
    return e.value.problems


def test_the_repos_own_farm_yaml_is_valid():
    cfg = load_farm(REPO_FARM)
    assert list(cfg.variants) == ["baseline", "poison-clean-ptes"]
    assert cfg.base == "baseline"
    assert len(cfg.scenarios) >= 8
    assert cfg.source.kind == "tarball"


def test_minimal_farm(farm_dir):
    cfg = load_farm(write_farm(farm_dir, """\
        source: {tarball: linux.tar.xz}
        variants:
          baseline: {}
          fixed: {patches: [fix.patch]}
        """))
    assert cfg.variants["fixed"].patches == (farm_dir / "fix.patch",)
    assert cfg.base == "baseline" and cfg.repeat == 1
    assert cfg.scenarios[0].name == "anon-madvise"


def test_every_problem_is_reported_at_once_with_file_and_line(farm_dir):
    path = write_farm(farm_dir, """\
        source: {tarball: linux.tar.xz}
        colour: blue
        variants:
          baseline: {}
          Bad_Name: {}
          fixed:
            patches: [missing.patch]
            fragmnets: []
        guest:
          memory_mb: lots
          accel: warp
        jobs: 0
        """)
    got = problems(path)
    assert f"{path}:2: farm.yaml: unknown key 'colour'" in got[0]
    text = "\n".join(got)
    assert f"{path}:5: variant name 'Bad_Name'" in text
    assert f"{path}:7: variants.fixed.patches[0]: no such file: {farm_dir / 'missing.patch'}" \
        in text
    assert f"{path}:8: variant 'fixed': unknown key 'fragmnets'" in text
    assert f"{path}:10: guest.memory_mb must be int, not a string 'lots'" in text
    assert f"{path}:11: guest.accel is 'warp', expected one of: auto, tcg, kvm" in text
    assert f"{path}:12: jobs must be 1 to 256, not 0" in text
    assert len(got) == 7


def test_missing_source_and_variants(farm_dir):
    path = write_farm(farm_dir, "base: nope\n")
    got = problems(path)
    assert f"{path}:1: farm.yaml: missing key 'source'" in got
    assert f"{path}:1: farm.yaml: missing key 'variants'" in got


def test_base_must_be_a_variant(farm_dir):
    path = write_farm(farm_dir, """\
        source: {tarball: linux.tar.xz}
        variants: {baseline: {}}
        base: upstream
        """)
    assert problems(path) == [f"{path}:3: base 'upstream' is not a variant (variants: baseline)"]


def test_missing_tarball_says_how_to_install_it(farm_dir):
    path = write_farm(farm_dir, "source: {tarball: /nonexistent/linux.tar.xz}\n"
                                "variants: {baseline: {}}\n")
    assert "linux-source-6.12 and linux-source-6.1" in problems(path)[0]
    path = write_farm(farm_dir, "source: {tarball: /nowhere/linux-source-6.1.tar.xz}\n"
                                "variants: {baseline: {}}\n")
    assert "apt-get install linux-source-6.1)" in problems(path)[0]


def test_yaml_syntax_error_names_the_line(farm_dir):
    path = write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: [\n  baseline\n")
    got = problems(path)
    assert len(got) == 1 and got[0].startswith(f"{path}:") and "not valid YAML" in got[0]


def test_scenario_file_problems_are_reported_with_the_farm_problems(farm_dir):
    (farm_dir / "guest-tests" / "scenarios.yaml").write_text(textwrap.dedent("""\
        scenarios:
          - name: anon-madvise
            page: anon
            injector: laser
            access: read
            why: because
            expect:
              recovery: Recovered
              colour: red
          - name: anon-madvise
            page: anon
            injector: madvise
            access: read
            expect: {}
        """))
    path = write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: {a: {}}\nrepeat: x\n")
    text = "\n".join(problems(path))
    scen = farm_dir / "guest-tests" / "scenarios.yaml"
    assert f"{path}:3: repeat must be int" in text
    assert f"{scen}:4: scenario 'anon-madvise': injector is 'laser'" in text
    assert f"{scen}:8: scenario 'anon-madvise': expect.recovery must be list" in text
    assert f"{scen}:9: scenario 'anon-madvise': expect: unknown observable 'colour'" in text
    assert f"{scen}:10: duplicate scenario 'anon-madvise'" in text
    assert f"{scen}:10: scenario 'anon-madvise': missing key 'why'" in text


def test_shipped_scenarios_each_say_why():
    scen = load_scenarios(REPO_FARM.parent / "guest-tests" / "scenarios.yaml")
    assert all(len(s.why) > 40 and (s.expect or s.kselftest or s.race or s.program)
               for s in scen)


def test_cli_validate_exits_2_and_prints_every_problem(farm_dir, capsys):
    path = write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: {a: {x: 1}}\n"
                                "jobs: -1\n")
    assert main(["validate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: variant 'a': unknown key 'x'" in err
    assert f"{path}:3: jobs must be 1 to 256, not -1" in err


def test_cli_run_with_broken_farm_yaml_exits_2_before_building(farm_dir, capsys):
    path = write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: {a: {x: 1}}\n")
    assert main(["run", "-c", str(path), "--results", str(farm_dir / "res")]) == 2
    assert not (farm_dir / "res").exists()


def test_cli_unknown_variant_is_bad_input(capsys):
    assert main(["run", "-c", str(REPO_FARM), "--variants", "nope"]) == 2
    assert "unknown variant(s) nope" in capsys.readouterr().err


def test_kselftest_scenarios_need_no_page_but_a_program_path(farm_dir):
    scen = farm_dir / "guest-tests" / "scenarios.yaml"
    scen.write_text(textwrap.dedent("""\
        scenarios:
          - name: kst
            kselftest: mm/hugetlb-soft-offline
            sysctl: {vm.nr_hugepages: 8}
            why: the tree's own test
          - name: bad
            kselftest: ../../etc/passwd
            page: anon
            sysctl: {"nr hugepages": 8}
            why: no
        """))
    path = write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: {a: {}}\n")
    text = "\n".join(problems(path))
    assert f"{scen}:7: scenario 'bad': kselftest '../../etc/passwd' must name a program" in text
    assert f"{scen}:8: scenario 'bad': unknown key 'page'" in text
    assert f"{scen}:9: scenario 'bad': a sysctl name must be like vm.nr_hugepages" in text
    scen.write_text("\n".join(scen.read_text().splitlines()[:5]) + "\n")
    (s,) = load_farm(path).scenarios
    assert (s.kselftest, s.page, s.sysctl) == ("mm/hugetlb-soft-offline", "kselftest",
                                               {"vm.nr_hugepages": "8"})
    scen.write_text(scen.read_text().replace("mm/hugetlb-soft-offline", "auto"))
    assert load_farm(path).scenarios[0].kselftest == "auto"  # the tree's, found at build


def test_plan_filters_and_json_build_nothing(capsys):
    import json
    assert main(["plan", "-c", str(REPO_FARM), "--page-kind", "hugetlb-anon",
                 "--injector", "host-srao,host-srar", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["scenario"] for r in doc["scenarios"]] == ["hugetlb-anon-host-srao",
                                                        "hugetlb-anon-host-srar"]
    assert doc["cases"] == 4 and doc["variants"] == ["baseline", "poison-clean-ptes"]
    assert main(["plan", "-c", str(REPO_FARM), "--scenarios", "anon-madvise*",
                 "--variants", "baseline", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 scenarios x 1 variants (baseline; base baseline) x 3 repeat(s) "
                          "= 12 cases")
    assert ["anon-madvise-recovery-off", "anon", "madvise", "read", "early_kill=0",
            "recovery=0"] in [line.split() for line in out.splitlines()]
    assert ["anon-madvise", "anon", "madvise", "read,child-read,populate-read,after-drop-caches,"
            "write", "early_kill=0"] in [line.split() for line in out.splitlines()]
    assert main(["plan", "-c", str(REPO_FARM), "--page-kind", "lava"]) == 2
    assert main(["plan", "-c", str(REPO_FARM), "--scenarios", "nothing-*"]) == 2


def test_guest_tests_directory_is_found_or_named(farm_dir, tmp_path):
    cfg = load_farm(write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: {a: {}}\n"))
    assert cfg.guest_tests == farm_dir / "guest-tests"
    path = write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: {a: {}}\n"
                                "guest_tests: linux.tar.xz\n")
    assert problems(path) == [f"{path}:3: guest_tests: no such dir: {farm_dir / 'linux.tar.xz'}"]


def test_hosts_are_checked_with_file_and_line(farm_dir):
    (farm_dir / "id_farm").write_text("")
    cfg = load_farm(write_farm(farm_dir, """\
        source: {tarball: linux.tar.xz}
        variants: {baseline: {}}
        hosts:
          - ssh: farm@build1.example.org:2222
            dir: /srv/hwpoison-farm
            jobs: 4
            key: id_farm
          - {ssh: build2}
        """))
    assert [(h.ssh, h.dir, h.jobs) for h in cfg.hosts] == [
        ("farm@build1.example.org:2222", "/srv/hwpoison-farm", 4),
        ("build2", "hwpoison-farm", None)]
    assert cfg.hosts[0].key == farm_dir / "id_farm"
    path = write_farm(farm_dir, """\
        source: {tarball: linux.tar.xz}
        variants: {baseline: {}}
        hosts:
          - ssh: "build1; rm -rf /"
          - {ssh: build2, dir: "my farm", jobs: 0, key: nokey}
          - {ssh: build3, port: 22}
          - {ssh: build4}
          - {ssh: build4}
        """)
    got = problems(path)
    assert got == [
        f"{path}:4: hosts[0].ssh: not [user@]host[:port]: 'build1; rm -rf /'",
        f"{path}:5: hosts[1].dir: use letters, digits and ._/- only (a relative path is under "
        "the home directory there): 'my farm'",
        f"{path}:5: hosts[1].jobs must be at least 1, not 0",
        f"{path}:5: hosts[1].key: no such file: {farm_dir / 'nokey'}",
        f"{path}:6: hosts[2]: unknown key 'port' (known: ssh, dir, jobs, key, known_hosts, "
        "accept_new)",
        f"{path}:8: hosts[4]: build4 with dir hwpoison-farm is listed twice",
    ]


def test_access_steps_are_checked_against_the_page_kind(farm_dir):
    scen = farm_dir / "guest-tests" / "scenarios.yaml"
    scen.write_text(textwrap.dedent("""\
        scenarios:
          - name: shm-paths
            page: shmem
            injector: madvise
            access: [read, pread, remap-read, fsync]
            tier: full
            why: the page cache keeps the poisoned folio
            expect:
              access_signal: BUS_MCEERR_AR
              pread.errno: 5
              remap-read.signal: BUS_MCEERR_AR
              remap-read.data: unreadable
          - name: anon-pread
            page: anon
            injector: madvise
            access: [read, child-read]
            tier: nightly
            why: no file
            expect:
              read.signal: BUS_MCEERR_AR
              pread.colour: red
              populate-read.errno: 14
          - name: buddy-read
            page: free-buddy
            injector: corrupt-pfn
            access: [none, read]
            why: no mapping
            expect: {}
          - name: anon-file-steps
            page: anon
            injector: madvise
            access: [read, pread]
            why: no file
            expect: {}
          - name: buddy-touch
            page: kernel
            injector: host-srao
            access: read
            why: no mapping
            expect: {}
        """))
    path = write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: {a: {}}\n")
    text = "\n".join(problems(path))
    assert f"{scen}:17: scenario 'anon-pread': tier is 'nightly', expected one of: default, " \
           "full" in text
    assert f"{scen}:20: scenario 'anon-pread': expect.read.signal: 'read' is not a step of " \
           "this scenario's access with observables of its own (child-read); a first " \
           "read/write step reports access_signal and data" in text
    assert f"{scen}:21: scenario 'anon-pread': expect.pread.colour: 'pread' is not a step" \
        in text
    assert f"{scen}:22: scenario 'anon-pread': expect.populate-read.errno: 'populate-read' " \
           "is not a step" in text
    assert f"{scen}:26: scenario 'buddy-read': access 'none' cannot be one step of several" \
        in text
    assert f"{scen}:32: scenario 'anon-file-steps': access step 'pread' does not apply to " \
           "anon pages (its steps: read, write, child-read, populate-read, after-drop-caches)" \
        in text
    assert f"{scen}:38: scenario 'buddy-touch': access step 'read' does not apply to kernel " \
           "pages (the workload never touches it: access must be none)" in text
    assert "shm-paths" not in text
    scen.write_text("\n".join(scen.read_text().splitlines()[:12]) + "\n")
    (s,) = load_farm(path).scenarios
    assert s.steps == ("read", "pread", "remap-read", "fsync")
    assert s.step_observables == ("pread", "remap-read", "fsync")
    assert s.tier == "full" and s.access == "read,pread,remap-read,fsync"
    assert s.expect == {"access_signal": "BUS_MCEERR_AR", "pread.errno": 5,
                        "remap-read.signal": "BUS_MCEERR_AR", "remap-read.data": "unreadable"}


def test_a_steps_listed_twice_or_an_unknown_step_is_named(farm_dir):
    scen = farm_dir / "guest-tests" / "scenarios.yaml"
    scen.write_text(textwrap.dedent("""\
        scenarios:
          - name: twice
            page: memfd
            injector: madvise
            access: [pread, pread]
            why: x
            expect: {}
          - name: colon
            page: memfd
            injector: madvise
            access: [read, "pread:x"]
            why: x
            expect: {}
        """))
    path = write_farm(farm_dir, "source: {tarball: linux.tar.xz}\nvariants: {a: {}}\n")
    text = "\n".join(problems(path))
    assert f"{scen}:5: scenario 'twice': access step 'pread' is listed twice" in text
    assert f"{scen}:11: scenario 'colon': access is 'pread:x', expected one of: none, read" \
        in text


def test_the_default_tier_meets_every_page_kind_by_every_step_that_applies(capsys):
    """The issue's promise, checked on the shipped scenario file: each page kind with a
    mapping is met by each access step that applies to it, in the default run."""
    from orchestrator.options import RunOptions
    from orchestrator.plan import select, uncovered
    cfg = load_farm(REPO_FARM)
    _, default = select(cfg, RunOptions())
    assert uncovered(default) == []
    _, full = select(cfg, RunOptions(tier="full"))
    assert len(full) > len(default) and {s.tier for s in full} == {"default", "full", "race"}
    from orchestrator.plan import takes
    from orchestrator.registry import PAGE_KINDS, steps_for
    thin = [(k, st) for k in PAGE_KINDS for st in steps_for(k)
            if sum(s.page == k and takes(s, st) for s in full) < 3]
    assert not thin  # docs/scenarios.md: every applicable cell of the full tier is 3 or more
    assert main(["plan", "-c", str(REPO_FARM), "--steps"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| page kind | read | write | remap-read |")
    assert "| free-buddy |" not in table
    assert main(["plan", "-c", str(REPO_FARM), "--scenarios", "NO-SUCH-*"]) == 2


def test_the_docs_step_table_is_what_farm_plan_prints(capsys):
    """docs/scenarios.md's page kind x access step table is `farm plan --steps`, not a copy
    that drifts."""
    doc = (REPO_FARM.parent / "docs" / "scenarios.md").read_text()
    assert main(["plan", "-c", str(REPO_FARM), "--steps"]) == 0
    assert capsys.readouterr().out in doc
