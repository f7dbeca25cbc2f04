"""The registry of page kinds and injectors is declared once, in the workload's tables
(guest-tests/workloads/hwpoison-case.c): the real workload, compiled, prints it with --list;
orchestrator/config.py reads the same tables; the README's tables name the same kinds and
injectors. A kind added in one place and not the others fails here."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from orchestrator import config

REPO = Path(__file__).parent.parent
README = (REPO / "README.md").read_text()


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    exe = tmp_path_factory.mktemp("workload") / "hwpoison-case"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-static", "-pthread", "-o", str(exe),
                    str(config.WORKLOAD)], check=True)
    return json.loads(subprocess.run([str(exe), "--list"], check=True, capture_output=True,
                                     text=True).stdout)


def test_the_workload_lists_what_config_reads_from_its_tables(listed):
    kinds = {k.pop("name"): {f for f, on in k.items() if on} for k in listed["kinds"]}
    injectors = {i.pop("name"): {f for f, on in i.items() if on} for i in listed["injectors"]}
    assert list(kinds) == list(config.PAGE_KINDS)
    assert kinds == config.REGISTRY["kinds"]
    assert list(injectors) == list(config.INJECTORS) and injectors == config.REGISTRY["injectors"]
    assert set(config.UNMAPPED_KINDS) < set(config.UNTOUCHED_KINDS)
    assert config.GUEST_INJECTORS == tuple(i for i in injectors if "host" not in injectors[i])


def readme_table(header: str) -> list[str]:
    """The backticked names of the first column of the README table with this header."""
    block = README[README.index(header):]
    rows = block.split("\n\n")[0].splitlines()[2:]
    return [n for row in rows for n in re.findall(r"`([a-z0-9-]+)`", row.split("|")[1])]


def test_the_readmes_tables_name_every_kind_and_injector_once():
    assert sorted(readme_table("| page kind | how the workload gets it |")) == sorted(
        config.PAGE_KINDS)
    assert sorted(readme_table("| injector | side | what it does |")) == sorted(
        config.INJECTORS)


def test_an_unknown_kind_is_refused_by_the_workload_itself(tmp_path):
    subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", str(tmp_path / "w"),
                    str(config.WORKLOAD)], check=True)
    res = subprocess.run([str(tmp_path / "w"), "--kind", "nope", "--injector", "none",
                          "--access", "none"], capture_output=True, text=True)
    assert res.returncode == 2
    assert json.loads(res.stdout.splitlines()[0]) == {
        "event": "setup-error", "what": "unknown kind", "errno": 22,
        "error": "Invalid argument"}
