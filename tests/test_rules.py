"""The scenarios' `why` lines are held to the kernel source they cite, on every kernel the farm
ships (Debian 12's 6.12 and 6.1): each scenario is resolved for a tree's version, as a run of
that kernel would hold it (its own expectation, or a `before:` release's), and every kernel
name its why gives (a function, a flag, a sysfs file) must exist in that tree, and every
scenario that expects something of an access step must name at least one function of that
tree, the one that decides it. A typo, or a function of one kernel cited for another, fails
here, not in a reader's head."""

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
from orchestrator.versions import short, version_of_makefile

pytestmark = pytest.mark.e2e  # unpacks the kernel sources into the cache (~15 s each, once)

NAME = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")  # snake_case: shmem_undo_range
WHERE = ("mm", "fs", "include", "kernel", "ipc", "drivers/base", "arch/x86/kernel/cpu/mce",
         "arch/x86/entry/vdso")
FARM_WORDS = set(OBSERVABLES)  # the farm's own observables are not kernel names
SHIPPED = {"6.12": ("farm.yaml", "baseline"), "6.1": ("kernels/two-kernels.yaml", "baseline-6.1")}


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def tree(request):
    """(the scenarios as a kernel of this release is held to them, its tree)."""
    farm, variant = SHIPPED[request.param]
    cfg = load_farm(REPO / farm)
    src = prepare_source(cfg.source_of(variant), cfg.cache, Runner(), Progress(sys.stderr)).path
    version = version_of_makefile((src / "Makefile").read_text())
    assert version and short(version) == request.param
    # A selftest its tree does not have is skipped there, saying so: its why is not this
    # kernel's.
    here = [s for s in cfg.scenarios if not s.kselftest or s.kselftest == "auto"
            or (src / "tools/testing/selftests" / f"{s.kselftest}.c").is_file()]
    return [s.for_kernel(version) for s in here], src


def found(tree, names: set[str], pattern: str) -> set[str]:
    """Which of the names occur in the tree, by one grep over the directories that matter."""
    if not names:
        return set()
    proc = subprocess.run(["grep", "-rhoE", pattern.format("|".join(sorted(names))), *WHERE],
                          cwd=tree, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return {m.rstrip("(") for m in proc.stdout.split()}


def test_every_kernel_name_a_why_cites_exists_in_the_source(tree):
    scenarios, src = tree
    cited: dict[str, list[str]] = {}
    for s in scenarios:
        for name in set(NAME.findall(s.why)) - FARM_WORDS:
            cited.setdefault(name, []).append(s.name)
    assert len(cited) > 20  # the whys do cite the source
    missing = set(cited) - found(src, set(cited), r"\b({})\b")
    assert not missing, {m: cited[m][:3] for m in sorted(missing)}


def test_each_expectation_of_an_access_step_cites_the_function_that_decides_it(tree):
    scenarios, src = tree
    with_steps = [s for s in scenarios if any("." in k for k in s.expect)]
    assert len(with_steps) >= 60
    names = {n for s in with_steps for n in NAME.findall(s.why)}
    functions = found(src, names, r"\b({})\(")  # called or defined somewhere
    bare = [s.name for s in with_steps if not set(NAME.findall(s.why)) & functions]
    assert not bare, f"scenarios whose why names no function of the tree: {bare}"


def test_an_older_release_expectation_says_what_differs_and_cites_its_kernel():
    """A `before:` entry changes at least one observable, and its why starts with the release
    whose tree it cites ('6.1: ...'), so a reader sees at once for which kernel it speaks."""
    cfg = load_farm(REPO / "farm.yaml")
    older = [(s, o) for s in cfg.scenarios for o in s.older]
    assert len(older) >= 20
    for s, o in older:
        assert any(s.expect.get(k, object()) != v for k, v in o.expect.items()), s.name
        assert re.match(r"^\d+\.\d+: ", o.why), (s.name, o.why[:40])
