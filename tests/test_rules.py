"""The scenarios' `why` lines are held to the kernel source they cite: every kernel name a
`why` gives (a function, a flag, a sysfs file) must exist in the 6.12 tree the farm builds,
and every scenario that expects something of an access step must name at least one function
of that tree, the one that decides it. A typo or a function that does not exist in this
kernel fails here, not in a reader's head."""

import re
import subprocess
import sys

import pytest
from conftest import REPO

from orchestrator.farmfile import load_farm
from orchestrator.progress import Progress
from orchestrator.registry import OBSERVABLES
from orchestrator.runner import Runner
from orchestrator.source import prepare_source

pytestmark = pytest.mark.e2e  # unpacks the kernel source into the cache (~15 s the first time)

NAME = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")  # snake_case: shmem_undo_range
WHERE = ("mm", "fs", "include", "kernel", "ipc", "drivers/base", "arch/x86/kernel/cpu/mce")
FARM_WORDS = set(OBSERVABLES)  # the farm's own observables are not kernel names


@pytest.fixture(scope="module")
def tree():
    cfg = load_farm(REPO / "farm.yaml")
    return cfg, prepare_source(cfg.source, cfg.cache, Runner(), Progress(sys.stderr)).path


def found(tree, names: set[str], pattern: str) -> set[str]:
    """Which of the names occur in the tree, by one grep over the directories that matter."""
    if not names:
        return set()
    proc = subprocess.run(["grep", "-rhoE", pattern.format("|".join(sorted(names))), *WHERE],
                          cwd=tree, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return {m.rstrip("(") for m in proc.stdout.split()}


def test_every_kernel_name_a_why_cites_exists_in_the_source(tree):
    cfg, src = tree
    cited: dict[str, list[str]] = {}
    for s in cfg.scenarios:
        for name in set(NAME.findall(s.why)) - FARM_WORDS:
            cited.setdefault(name, []).append(s.name)
    assert len(cited) > 20  # the whys do cite the source
    missing = set(cited) - found(src, set(cited), r"\b({})\b")
    assert not missing, {m: cited[m][:3] for m in sorted(missing)}


def test_each_expectation_of_an_access_step_cites_the_function_that_decides_it(tree):
    cfg, src = tree
    with_steps = [s for s in cfg.scenarios if any("." in k for k in s.expect)]
    assert len(with_steps) >= 60
    names = {n for s in with_steps for n in NAME.findall(s.why)}
    functions = found(src, names, r"\b({})\(")  # called or defined somewhere
    bare = [s.name for s in with_steps if not set(NAME.findall(s.why)) & functions]
    assert not bare, f"scenarios whose why names no function of the tree: {bare}"
