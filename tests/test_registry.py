"""The registry of page kinds, injectors, access steps and race actions is declared once, in
the workload's tables (guest-tests/workloads/hwpoison-case.c): the real workload, compiled,
prints it with --list; orchestrator/registry.py reads the same tables; the scenario docs'
tables name the same kinds, injectors, steps and actions. One added in one place and not the
others fails here."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from orchestrator import registry
from orchestrator.qemu import MCE_STATUS

REPO = Path(__file__).parent.parent
DOC = (REPO / "docs" / "scenarios.md").read_text()
TABLES = {"kinds": "| page kind | how the workload gets it |",
          "injectors": "| injector | side | what it does |",
          "steps": "| step | what the workload does | its observables |",
          "races": "| `race:` | what the racer does | page kinds |"}


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    exe = tmp_path_factory.mktemp("workload") / "hwpoison-case"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-static", "-pthread", "-o", str(exe),
                    str(registry.WORKLOAD)], check=True)
    return json.loads(subprocess.run([str(exe), "--list"], check=True, capture_output=True,
                                     text=True).stdout)


def test_the_workload_lists_what_the_registry_reads_from_its_tables(listed):
    assert list(listed) == list(registry.REGISTRY)
    for table, rows in listed.items():
        got = {r.pop("name"): frozenset(f for f, on in r.items() if on) for r in rows}
        assert list(got) == list(registry.REGISTRY[table]), table
        assert got == registry.REGISTRY[table], table
    assert set(registry.UNMAPPED_KINDS) < set(registry.UNTOUCHED_KINDS)
    assert registry.ACCESS_STEPS[:2] == ("read", "write")
    assert registry.CLASSIC_ACCESSES == ("read", "write", "none")


def test_what_the_orchestrator_derives_from_the_rows():
    """The rows' flags give what config.py once spelled out by hand."""
    mapping = ("read", "write", "child-read", "populate-read", "after-drop-caches")
    assert registry.steps_for("anon") == mapping
    assert set(registry.steps_for("sysv-shm")) == {*mapping, "remap-read", "remap-write"}
    assert registry.steps_for("shmem") == registry.ACCESS_STEPS
    assert registry.steps_for("vdso") == ()
    assert registry.RACES["truncate"] == ("pagecache-clean", "pagecache-dirty", "shmem",
                                          "memfd", "hugetlb-file")
    assert registry.RACES["punch-hole"] == ("shmem", "memfd", "hugetlb-file")
    assert "hugetlb-anon" not in registry.RACES["pageout"]
    assert registry.RACES["munmap"] == registry.RACE_KINDS
    assert registry.CUTTING_RACES == ("truncate", "punch-hole")
    assert registry.UNPOISONING_RACES == ("unpoison",)
    assert registry.RACE_INJECTORS == ("madvise", "madvise-soft", "corrupt-pfn",
                                       "hard-offline", "soft-offline")


def test_a_host_injectors_machine_check_is_in_its_row():
    checks = {i: registry.machine_check(i) for i in registry.INJECTORS}
    assert {i: c for i, c in checks.items() if c} == {
        "host-srao": ("srao", None), "host-srar": ("srar", "3"),
        "host-srar-kernel": ("srar", "0")}
    assert {c[0] for c in checks.values() if c} == set(MCE_STATUS)
    assert registry.machine_check("madvise") is None
    assert registry.machine_check("nonsense") is None


def doc_table(header: str) -> list[str]:
    """The backticked names of the first column of the docs' table with this header."""
    block = DOC[DOC.index(header):]
    rows = block.split("\n\n")[0].splitlines()[2:]
    return [n for row in rows for n in re.findall(r"`([a-z0-9-]+)`", row.split("|")[1])]


@pytest.mark.parametrize("table", list(TABLES))
def test_the_docs_tables_name_every_row_once(table):
    assert sorted(doc_table(TABLES[table])) == sorted(registry.REGISTRY[table])


def test_an_unknown_kind_or_step_is_refused_by_the_workload_itself(tmp_path):
    subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", str(tmp_path / "w"),
                    str(registry.WORKLOAD)], check=True)
    for args, what in ((["--kind", "nope", "--injector", "none", "--access", "none"],
                        "unknown kind"),
                       (["--kind", "anon", "--injector", "none", "--access", "read,peek"],
                        "unknown access step"),
                       (["--kind", "anon", "--injector", "madvise", "--race", "jump"],
                        "unknown race action")):
        res = subprocess.run([str(tmp_path / "w"), *args], capture_output=True, text=True)
        assert res.returncode == 2
        assert json.loads(res.stdout.splitlines()[0]) == {
            "event": "setup-error", "what": what, "errno": 22, "error": "Invalid argument"}
