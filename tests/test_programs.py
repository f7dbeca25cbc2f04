"""Test programs from outside the kernel tree: a scenario's `program:` checked with its line
(inside the scenario file's directory, one of dir or binary, a result the farm can read,
arguments that are one word each), built from its C sources with the real compiler or
copied as a binary, keyed by content, and judged by KTAP or by its exit code."""

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from orchestrator.case import kernel_cmdline
from orchestrator.errors import ConfigErrors
from orchestrator.judge import judge_kselftest
from orchestrator.ktap import parse_ktap
from orchestrator.parse import Observed
from orchestrator.programs import program_key, programs_of
from orchestrator.runner import Runner
from orchestrator.scenarios import load_scenarios

REPO = Path(__file__).parent.parent
SHIPPED = REPO / "guest-tests/programs/madvise-sigbus"


def scenarios(tmp_path: Path, program: str) -> Path:
    (tmp_path / "scenarios.yaml").write_text(textwrap.dedent(f"""\
        scenarios:
          - name: p
            program: {program}
            why: a program of the user's
        """))
    return tmp_path / "scenarios.yaml"


def observed(rc: int) -> Observed:
    return Observed(guest="survived", booted=True, recovery=(), kernel_errors=(),
                    kernel_reports=(), panic=None, sigbus_sent=(), mce_killed=(),
                    mce_logged=False, workload_rc=rc, reported=False, page_set_up=False)


def test_a_program_of_c_sources_is_built_once_by_content_and_runs(tmp_path):
    shutil.copytree(SHIPPED, tmp_path / "progs/sig")
    s, = load_scenarios(scenarios(tmp_path, "{dir: progs/sig, args: [-v, 3]}"))
    assert (s.program, s.result, s.args) == (str(tmp_path / "progs/sig"), "ktap", ("-v", "3"))
    assert s.needs_disk and "farm.run=program/p:-v:3" in kernel_cmdline(s)
    cache, log = tmp_path / "cache", tmp_path / "build.log"
    commands = []
    runner = Runner(on_command=commands.append)
    built, failed = programs_of([s], cache, runner, log)
    assert failed == {} and Path(built["p"]).read_bytes()[:4] == b"\x7fELF"
    out = subprocess.run(["file", built["p"]], capture_output=True, text=True).stdout
    assert "statically linked" in out
    n = len(commands)
    assert programs_of([s], cache, runner, log)[0] == built  # the cache's, not built again
    assert not any("-static" in c for c in commands[n:])
    (tmp_path / "progs/sig/madvise-sigbus.c").write_text("int main(void) { return 4; }\n")
    assert program_key(tmp_path / "progs/sig", "gcc") != Path(built["p"]).parent.name


def test_a_program_that_does_not_build_or_is_no_binary_is_named(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/x.c").write_text("int main(void) { return nope; }\n")
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    bad, = load_scenarios(scenarios(tmp_path, "{dir: bad}"))
    script, = load_scenarios(scenarios(tmp_path, "{binary: script, result: exit}"))
    runner = Runner()
    _, failed = programs_of([bad], tmp_path / "cache", runner, tmp_path / "log")
    assert failed["p"].startswith("did not build (gcc -static bad/*.c)") and \
        "nope’ undeclared" in failed["p"]
    _, failed = programs_of([script], tmp_path / "cache", runner, tmp_path / "log")
    assert failed == {"p": "did not build: script is not an ELF binary"}
    assert judge_kselftest(bad, observed(0), parse_ktap([]), missing=failed["p"])[0] == "error"


@pytest.mark.parametrize("program, message", [
    ("{dir: nowhere}", "program.dir: no such dir"),
    ("{dir: ..}", "is outside"),
    ("{binary: x, dir: y}", "exactly one of: dir (C sources), binary"),
    ("{dir: progs, result: junit}", "program.result"),
    ("{dir: progs, args: ['a b']}", "is not one word"),
    ("{dir: progs, args: ['$(reboot)']}", "is not one word"),
])
def test_a_bad_program_is_named_with_its_line(tmp_path, program, message):
    (tmp_path / "progs").mkdir()
    with pytest.raises(ConfigErrors) as e:
        load_scenarios(scenarios(tmp_path, program))
    assert any(message in p and p.startswith(f"{tmp_path / 'scenarios.yaml'}:")
               for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("rc, status", [(0, "pass"), (4, "skip"), (1, "fail"), (135, "fail")])
def test_a_program_read_by_its_exit_code(tmp_path, rc, status):
    (tmp_path / "b").write_bytes(b"\x7fELF")
    s, = load_scenarios(scenarios(tmp_path, "{binary: b, result: exit}"))
    got, message = judge_kselftest(s, observed(rc), parse_ktap([]))
    assert got == status, message
    if rc == 135:
        assert "killed by SIGBUS" in message


def test_the_shipped_program_passes_its_ktap_on_the_recorded_output():
    """What the shipped program printed in a real 6.12 guest (and the same on 6.1)."""
    s = next(s for s in load_scenarios(REPO / "guest-tests/scenarios.yaml")
             if s.name == "program-madvise-sigbus")
    ktap = parse_ktap(["TAP version 13", "1..2",
                       "ok 1 SIGBUS BUS_MCEERR_AR at the poisoned page (si_code 4)",
                       "ok 2 HardwareCorrupted grew by the page (0 kB to 4 kB)"])
    assert judge_kselftest(s, observed(0), ktap) == ("pass", "2 KTAP tests, as expected")
