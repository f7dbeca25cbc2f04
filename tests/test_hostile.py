"""Hostile input, as a merge request could bring it: farm.yaml and scenario files that try to
escape onto the kernel command line or a QEMU option, explode in memory, or crash the farm.
Each must end `farm run` with exit 2, a message that names the file and line, no traceback,
and nothing built or written. Then hypothesis feeds `farm validate` generated files."""

import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.errors import ConfigErrors
from orchestrator.farmfile import load_farm
from orchestrator.registry import INJECTORS, PAGE_KINDS

REPO = Path(__file__).parent.parent

FARM = """\
source: {tarball: linux.tar.xz}
config: {fragments: [base.config]}
variants:
  baseline: {}
  fixed:
    description: a fix
    patches: [fix.patch]
guest:
  memory_mb: 256
  cpu: Skylake-Server
  machine: pc
  timeout: 90
"""
SCENARIO = """\
scenarios:
  - name: anon-madvise
    page: anon
    injector: madvise
    access: read
    sysctl: {vm.nr_hugepages: 8}
    why: the page is unmapped and the caller killed
    expect:
      recovery: ["dirty LRU page: Recovered"]
"""
BOMB = "\n".join([
    'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
    *[f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)],
])  # 10**9 strings once expanded, 9 lines of text


def farm_dir(tmp_path: Path) -> Path:
    d = tmp_path / "farm"
    (d / "guest-tests" / "agent").mkdir(parents=True)
    (d / "guest-tests" / "agent" / "init").write_text("#!/bin/sh\n")
    (d / "linux.tar.xz").write_bytes(b"")
    (d / "fix.patch").write_text("--- a/x\n+++ b/x\n")
    (d / "base.config").write_text("CONFIG_MEMORY_FAILURE=y\n")
    return d


def farm(replace: tuple[str, str] | None = None, append: str = "", prepend: str = "") -> str:
    text = FARM if not replace else FARM.replace(*replace)
    assert replace is None or text != FARM, replace
    return prepend + text + append


def scen(replace: tuple[str, str] | None = None, append: str = "") -> str:
    text = SCENARIO if not replace else SCENARIO.replace(*replace)
    assert replace is None or text != SCENARIO, replace
    return text + append


HOSTS = "hosts:\n  - ssh: build1\n    dir: {}\n"
# (id, farm.yaml, scenario file, which file the message names, its line, a word of it)
CASES = [
    ("sysctl-words-onto-cmdline", farm(), scen(("{vm.nr_hugepages: 8}",
     '{vm.nr_hugepages: "8 panic=0 farm.run=/bin/poweroff"}')), "scen", 6, "not one value"),
    ("sysctl-comma", farm(), scen(("{vm.nr_hugepages: 8}", '{vm.nr_hugepages: "8,vm.x=1"}')),
     "scen", 6, "not one value"),
    ("sysctl-quote", farm(), scen(("{vm.nr_hugepages: 8}", "{vm.nr_hugepages: \"8'\"}")),
     "scen", 6, "not one value"),
    ("sysctl-name-path", farm(), scen(("{vm.nr_hugepages: 8}", "{vm/../../x: 1}")), "scen", 6,
     "sysctl name"),
    ("sysctl-too-long", farm(), scen(("{vm.nr_hugepages: 8}", "{vm.x: " + "9" * 80 + "}")),
     "scen", 6, "not one value"),
    ("alias-bomb-description", farm(("description: a fix", "description: *i"),
                                    prepend=BOMB + "\n"), scen(), "farm", 5, "aliases expand"),
    ("alias-bomb-cpu", farm(("cpu: Skylake-Server", "cpu: *i"), prepend=BOMB + "\n"), scen(),
     "farm", 5, "aliases expand"),
    ("recursive-alias", farm(append="x: &r [1, *r]\n"), scen(), "farm", 13, "contains it"),
    ("tag-on-string", farm(("description: a fix", "description: !evil a fix")), scen(),
     "farm", 6, "tag !evil"),
    ("python-tag", farm(("description: a fix",
                         'description: !!python/object/apply:os.system ["touch /tmp/x"]')),
     scen(), "farm", 6, "python/object"),
    ("merge-key", farm(("  baseline: {}", "  baseline: {<<: {a: 1}}")), scen(), "farm", 4,
     "merge key"),
    ("binary-tag", farm(("description: a fix", "description: !!binary aGk=")), scen(), "farm",
     6, "binary"),
    ("non-utf8-farm", farm(("description: a fix", "description: a f\udcffix")), scen(), "farm",
     6, "not UTF-8"),
    ("non-utf8-scenarios", farm(), scen(("why: the page", "why: th\udcfe page")), "scen", 7,
     "not UTF-8"),
    ("nul-byte", farm(("description: a fix", "description: a\x00fix")), scen(), "farm", 6,
     "not valid YAML"),
    ("nested-too-deep", farm(append="deep: " + "[" * 5000 + "]" * 5000 + "\n"), scen(), "farm",
     13, "nested too deeply"),
    ("memory-1mb", farm(("memory_mb: 256", "memory_mb: 1")), scen(), "farm", 9,
     "guest.memory_mb must be 64 to 65536"),
    ("memory-huge", farm(("memory_mb: 256", "memory_mb: 99999999")), scen(), "farm", 9,
     "guest.memory_mb must be 64 to 65536"),
    ("cpu-unknown", farm(("cpu: Skylake-Server", "cpu: nonsense")), scen(), "farm", 10,
     "QEMU knows no cpu 'nonsense'"),
    ("cpu-with-option", farm(("cpu: Skylake-Server", 'cpu: "Skylake-Server -append x"')),
     scen(), "farm", 10, "not a cpu name"),
    ("machine-with-option", farm(("machine: pc", 'machine: "pc,accel=kvm"')), scen(), "farm", 11,
     "not a machine name"),
    ("machine-unknown", farm(("machine: pc", "machine: vax")), scen(), "farm", 11,
     "QEMU knows no machine 'vax'"),
    ("timeout-zero", farm(("timeout: 90", "timeout: 0")), scen(), "farm", 12,
     "guest.timeout must be 5 to 86400"),
    ("timeout-float", farm(("timeout: 90", "timeout: 1e9")), scen(), "farm", 12,
     "guest.timeout must be int"),
    ("accel-unknown", farm(append="  accel: warp\n"), scen(), "farm", 13, "guest.accel"),
    ("variant-name-path", farm(("  baseline: {}", "  ../../etc: {}")), scen(), "farm", 4,
     "variant name '../../etc'"),
    ("variant-name-list", farm(("  baseline: {}", "  [a, b]: {}")), scen(), "farm", 4,
     "plain word"),
    ("missing-patch", farm(("patches: [fix.patch]", "patches: [/no/such.patch]")), scen(),
     "farm", 7, "no such file"),
    ("duplicate-key", farm(append="variants: {}\n"), scen(), "farm", 13, "duplicate key"),
    ("unknown-key", farm(append="colour: blue\n"), scen(), "farm", 13, "unknown key 'colour'"),
    ("huge-integer", farm(append="repeat: " + "9" * 5000 + "\n"), scen(), "farm", 13,
     "repeat"),
    ("repeat-too-many", farm(append="repeat: 1000\n"), scen(), "farm", 13,
     "repeat must be 1 to 100"),
    ("confirm-negative", farm(append="confirm: -1\n"), scen(), "farm", 13,
     "confirm must be 0 to 20"),
    ("fail-on-unknown", farm(append="fail_on: [everything]\n"), scen(), "farm", 13,
     "fail_on is 'everything'"),
    ("bad-date", farm(("description: a fix", "description: 2024-13-45")), scen(), "farm", 6,
     "not a value the farm can read"),
    ("host-dir-root", farm(append=HOSTS.format("/")), scen(), "farm", 15, "hosts[0].dir"),
    ("host-dir-dot", farm(append=HOSTS.format(".")), scen(), "farm", 15, "hosts[0].dir"),
    ("host-dir-home", farm(append=HOSTS.format("'~'")), scen(), "farm", 15, "hosts[0].dir"),
    ("host-dir-up", farm(append=HOSTS.format("a/../..")), scen(), "farm", 15, "hosts[0].dir"),
    ("host-ssh-shell", farm(append="hosts: [{ssh: 'h; rm -rf /'}]\n"), scen(), "farm", 13,
     "not [user@]host[:port]"),
    ("yaml-syntax", farm(("description: a fix", "description: 'a fix")), scen(), "farm", 13,
     "starts at line 6"),
    ("scenario-page-unknown", farm(), scen(("page: anon", "page: everything")), "scen", 3,
     "page is 'everything'"),
    ("scenario-name-path", farm(), scen(("name: anon-madvise", "name: ../x")), "scen", 2,
     "scenario name '../x'"),
    ("kselftest-path", farm(), scen(append="  - {name: k, kselftest: ../../../bin/sh, why: w}\n"),
     "scen", 10, "kselftest '../../../bin/sh'"),
    ("expect-unknown", farm(), scen(append="      pwned: true\n"), "scen", 10,
     "unknown observable 'pwned'"),
    ("scenario-empty", farm(), "", "scen", None, "the file is empty"),
    # an access step goes onto the kernel command line (farm.run=...:--access:read,pread)
    ("access-step-colon", farm(), scen(("access: read", "access: [read, 'pread:--kind:x']")),
     "scen", 5, "access is 'pread:--kind:x', expected one of"),
    ("access-step-space", farm(), scen(("access: read", "access: 'read rdinit=/bin/sh'")),
     "scen", 5, "access is 'read rdinit=/bin/sh', expected one of"),
    ("access-steps-too-many", farm(), scen(("access: read", "access: [" + ", ".join(
        ["read"] * 17) + "]")), "scen", 5, "access must list 1 to 16 steps"),
    ("expect-step-key-dots", farm(), scen(("access: read", "access: [read, pread]"),
                                          append="      pread.errno.x: 5\n"), "scen", 10,
     "a step's observables are signal, si_addr_lsb, data, errno, bytes"),
    # escape sequences that would clear the terminal and set its title, if echoed raw
    ("scenario-name-escapes", farm(), scen(("name: anon-madvise", 'name: "\\e]0;pwned\\a\\e[2J"')),
     "scen", 2, "scenario name '\\x1b]0;pwned\\x07\\x1b[2J'"),
    ("farm-key-escapes", farm(append='"\\e[2Jdanger\\u202e": 1\n'), scen(), "farm", 13,
     "\\x1b[2Jdanger\\u202e"),
    ("git-ref-option", farm(("source: {tarball: linux.tar.xz}",
                             "source: {git: ., ref: --output=/tmp/x}")), scen(), "farm", 1,
     "source.ref: '--output=/tmp/x' is not a git ref"),
]


@pytest.mark.parametrize("name,farm_text,scen_text,which,line,words", CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_input_is_exit_2_with_file_and_line_and_nothing_built(
        tmp_path, name, farm_text, scen_text, which, line, words):
    d = farm_dir(tmp_path)
    files = {"farm": d / "farm.yaml", "scen": d / "guest-tests" / "scenarios.yaml"}
    # surrogate escapes stand for raw bytes that are not UTF-8
    files["farm"].write_bytes(farm_text.encode("utf-8", "surrogateescape"))
    files["scen"].write_bytes(scen_text.encode("utf-8", "surrogateescape"))
    cache, results = tmp_path / "cache", tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "-c", files["farm"], "--results",
         results], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "FARM_CACHE": str(cache), "PYTHONPATH": str(REPO)},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    where = f"{files[which]}:{line}: " if line else f"{files[which]}: "
    hits = [ln for ln in proc.stderr.splitlines() if where in ln and words in ln]
    assert hits, proc.stderr[-2000:]
    assert not any(ch in proc.stderr for ch in "\x1b\x07\u202e"), "a control character is live"
    assert not cache.exists() and not results.exists(), "something was built or written"


def test_an_alias_bomb_is_refused_in_bounded_memory(tmp_path):
    d = farm_dir(tmp_path)
    (d / "guest-tests" / "scenarios.yaml").write_text(SCENARIO)
    (d / "farm.yaml").write_text(farm(("description: a fix", "description: *i"),
                                      prepend=BOMB + "\n"))
    tracemalloc.start()
    try:
        with pytest.raises(ConfigErrors):
            load_farm(d / "farm.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, f"{peak >> 20} MB to refuse 9 lines"


# --- generated input ---------------------------------------------------------------------

WORDS = ["source", "tarball", "config", "fragments", "variants", "baseline", "patches",
         "description", "base", "guest", "memory_mb", "cpu", "machine", "accel", "timeout",
         "scenarios", "hosts", "ssh", "dir", "jobs", "repeat", "confirm", "fail_on", "cache",
         "name", "page", "injector", "access", "why", "expect", "policy", "sysctl", "cleanup",
         "kselftest", "early_kill", "recovery", "guest_tests", *PAGE_KINDS[:5], *INJECTORS[:4],
         "linux.tar.xz", "fix.patch", "base.config", "Skylake-Server", "pc", "changed"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(),
                    st.sampled_from(WORDS), st.text(max_size=20))
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), kids, max_size=5)),
    max_leaves=25)
documents = st.dictionaries(st.sampled_from(WORDS), values, max_size=8)
scenario_docs = st.fixed_dictionaries({"scenarios": st.lists(
    st.dictionaries(st.sampled_from(WORDS), values, max_size=9), max_size=4)})
# text-level damage: YAML syntax that a dump never writes, and bytes that are not UTF-8
NOISE = ["!", "!!python/none ", "&a ", "*a", "<<: ", "{", "[", "'", '"', ":", "- ", "\t",
         "\x00", "\ufeff", "%YAML 1.1\n", "---\n", "...\n", "? ", "|\n", ">-\n", "#", "\\"]


def damaged(doc, noise) -> bytes:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()
    for pos, piece in noise:
        at = pos % (len(text) + 1)
        text = text[:at] + (piece if isinstance(piece, bytes) else piece.encode()) + text[at:]
    return text


noises = st.lists(st.tuples(st.integers(0, 10**6), st.one_of(
    st.sampled_from(NOISE), st.binary(min_size=1, max_size=3))), max_size=3)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(farm_doc=documents, scen_doc=scenario_docs, farm_noise=noises, scen_noise=noises,
       use_good_farm=st.booleans())
def test_validate_never_crashes_on_generated_files(tmp_path, capsys, farm_doc, scen_doc,
                                                    farm_noise, scen_noise, use_good_farm):
    d = farm_dir(Path(tempfile.mkdtemp(dir=tmp_path)))
    farm_bytes = FARM.encode() if use_good_farm else damaged(farm_doc, farm_noise)
    (d / "farm.yaml").write_bytes(farm_bytes)
    (d / "guest-tests" / "scenarios.yaml").write_bytes(damaged(scen_doc, scen_noise))
    tracemalloc.start()
    try:
        code = main(["validate", "-c", str(d / "farm.yaml")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("farm: error: ") and f"{d}/" in err
    assert peak < 100 << 20


def test_the_shipped_files_pass_the_same_checks():
    for path in (REPO / "farm.yaml", *sorted((REPO / "docs").rglob("farm*.yaml"))):
        assert main(["validate", "-c", str(path)]) == 0, path


def test_scenario_values_never_reach_the_kernel_command_line_as_more_words(tmp_path):
    """What validation lets through is one word per value on the command line."""
    from orchestrator.case import kernel_cmdline
    d = farm_dir(tmp_path)
    (d / "farm.yaml").write_text(FARM)
    (d / "guest-tests" / "scenarios.yaml").write_text(textwrap.dedent("""\
        scenarios:
          - name: s
            page: shmem
            injector: corrupt-pfn
            access: write
            sysctl: {vm.nr_hugepages: 8, kernel.panic_on_oops: -1, vm.x_y: a.b+c}
            why: w
            expect: {}
        """))
    cfg = load_farm(d / "farm.yaml")
    words = kernel_cmdline(cfg.scenarios[0]).split()
    assert [w for w in words if w.startswith("farm.sysctl=")] == [
        "farm.sysctl=vm.memory_failure_early_kill=0,vm.memory_failure_recovery=1,"
        "vm.nr_hugepages=8,kernel.panic_on_oops=-1,vm.x_y=a.b+c"]
    assert len(words) == 6  # console, panic, no_timer_check, rdinit, farm.run, farm.sysctl
