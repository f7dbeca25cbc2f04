"""Scenario files: a list of page kind x injector x access x policy rows, each with its
expected outcome and the reason for it, loaded with their line numbers and checked in full
against the registry's words (every problem reported at once, file:line: message)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigErrors
from .expectations import Older, expect_of, older_of
from .registry import (
    ACCESSES,
    CLEANUPS,
    DEFAULT_ROUNDS,
    DISK_KINDS,
    INJECTORS,
    KSELFTEST_AUTO,
    MAX_ROUNDS,
    MAX_STEPS,
    PAGE_KINDS,
    RACE_CPUS,
    RACE_INJECTORS,
    RACE_KINDS,
    RACES,
    SWAP_KINDS,
    TIERS,
    own_steps,
    steps_for,
)
from .versions import before, text_for
from .versions import key as version_key
from .yamlcheck import Checker, scalar

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")  # scenarios, variants, layers
KSELFTEST_RE = re.compile(r"^[a-z0-9_-]+/[A-Za-z0-9_.-]+$")  # under tools/testing/selftests
SYSCTL_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
# A sysctl value goes onto the kernel command line (farm.sysctl=name=value,...): one token.
SYSCTL_VALUE_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
MAX_SYSCTLS = 16
MAX_CPUS = 4  # vCPUs a guest may have: kernels/base.config's CONFIG_NR_CPUS


@dataclass(frozen=True)
class Scenario:
    name: str
    page: str
    injector: str
    access: str
    why: str
    early_kill: int = 0
    expect: dict[str, Any] = field(default_factory=dict)
    recovery: int = 1  # vm.memory_failure_recovery
    cleanup: str = "none"
    kselftest: str = ""  # e.g. "mm/hugetlb-soft-offline": a program of the variant's own tree
    sysctl: dict[str, str] = field(default_factory=dict)  # set in the guest before the run
    tier: str = "default"  # default | full | race: which runs include it (docs: tiers)
    cpus: int = 0  # vCPUs of its guest; 0: the guest's setting (guest.cpus)
    race: str = ""  # a racer's action (RACES): poison while it runs, `rounds` times
    rounds: int = 0
    seed: int = 0  # the race's seed: the run's (--seed), set when the run is planned
    older: tuple[Older, ...] = ()  # `before:` what older kernels do where they differ
    program: str = ""  # `program:` a test program from outside the tree: its dir or binary
    result: str = ""  # how a program's result is read: ktap, or exit (0 pass, 4 skip)
    args: tuple[str, ...] = ()  # the program's arguments
    kernel: str = ""  # the kernel version it was planned for ('6.1.192'), from the tree
    expect_for: str = ""  # which expectation that kernel gets: '' (its own) or 'before 6.12'

    def for_kernel(self, version: str | None) -> Scenario:
        """The scenario as a kernel of this version is held to it: its own expectations,
        then, oldest last, those of every `before:` release the kernel is older than."""
        if not version:
            return self
        expect, why, applies = dict(self.expect), self.why, ""
        for o in sorted(self.older, key=lambda o: version_key(o.before), reverse=True):
            if before(version, o.before):
                expect.update(o.expect)
                why, applies = o.why, f"before {o.before}"
        return replace(self, expect=expect, why=text_for(why, version), older=(),
                       kernel=version, expect_for=applies)

    @property
    def steps(self) -> tuple[str, ...]:
        """The access as a list of steps: 'read,pread' -> ('read', 'pread')."""
        return tuple(self.access.split(","))

    @property
    def needs_disk(self) -> bool:
        """The ext2 disk: for a file kind's page, and for a selftest, which runs from a
        directory on it as kselftest's runner runs a test from its own directory."""
        return self.page in DISK_KINDS or bool(self.kselftest or self.program)

    @property
    def step_observables(self) -> tuple[str, ...]:
        return own_steps(self.steps)

    @property
    def needs_swap(self) -> bool:
        return self.page in SWAP_KINDS

    @property
    def from_host(self) -> bool:
        return self.injector.startswith("host-")


def load_scenarios(path: Path | str) -> tuple[Scenario, ...]:
    """Load and validate a scenario file; raise ConfigErrors listing every problem."""
    c = Checker(Path(path))
    root = c.load()
    if root is None:
        raise ConfigErrors(c.problems)
    top = c.mapping(root, "scenario file", {"scenarios": True})
    node = top.get("scenarios")
    if node is not None and not isinstance(node, yaml.SequenceNode):
        c.err(node, "scenarios must be a list")
        node = None
    seen: set[str] = set()
    out = [s for s in (_scenario(c, item, seen) for item in (node.value if node else ())) if s]
    if node is not None and not node.value:
        c.err(node, "scenarios: the list is empty")
    if c.problems:
        raise ConfigErrors(c.problems)
    return tuple(out)


def _keys(kself: bool, racing: bool, program: bool = False) -> dict[str, bool]:
    """A scenario's keys (key -> required): a kselftest's, a program's, a race's or a page
    scenario's."""
    common = {"name": True, "why": True, "policy": False, "sysctl": False, "tier": False,
              "cpus": False, "before": False}
    if kself:
        return {**common, "kselftest": True}
    if program:
        return {**common, "program": True}
    if racing:
        return {**common, "page": True, "injector": True, "race": True, "rounds": False,
                "expect": False}
    return {**common, "page": True, "injector": True, "access": True, "cleanup": False,
            "expect": True}


def _scenario(c: Checker, item, seen: set[str]) -> Scenario | None:
    """One entry of the list, checked, or None when it has problems (recorded in c)."""
    keys = {scalar(k): v for k, v in item.value} if isinstance(item, yaml.MappingNode) else {}
    kself = "kselftest" in keys
    outside = "program" in keys and not kself
    racing = "race" in keys and not kself and not outside
    named = keys.get("name")
    f = c.mapping(item, f"scenario '{named.value}'" if isinstance(named, yaml.ScalarNode)
                  else "scenario", _keys(kself, racing, outside))
    name = _name(c, f, seen)
    label = f"scenario '{name}'" if name else "scenario"
    program = program_of(c, f["program"], label) if outside and "program" in f else None
    if kself:
        page, inj, acc, prog = "kselftest", "kselftest", "none", _kselftest(c, f, label)
    elif outside:
        page, inj, acc, prog = "program", "program", "none", "" if program else None
    else:
        prog = ""
        page = c.choice(f["page"], f"{label}: page", PAGE_KINDS) if "page" in f else None
        inj = c.choice(f["injector"], f"{label}: injector", INJECTORS) \
            if "injector" in f else None
        acc = _access(c, f["access"], label, page) if "access" in f else None
    race, rounds = "", 0
    if racing:
        acc = "none"
        race, rounds = _race(c, f, label, page, inj)
    tier = c.choice(f["tier"], f"{label}: tier", TIERS) if "tier" in f else (
        "race" if racing else "default")
    cpus = (c.bounded(f["cpus"], f"{label}: cpus", 1, MAX_CPUS) or 1) if "cpus" in f else (
        RACE_CPUS if racing else 0)
    why = c.value(f["why"], f"{label}: why", (str,)) if "why" in f else None
    sysctl = _sysctl(c, f["sysctl"], label) if "sysctl" in f else {}
    policy = _policy(c, f["policy"], label) if "policy" in f else {"early_kill": 0,
                                                                     "recovery": 1}
    cleanup = c.choice(f["cleanup"], f"{label}: cleanup", CLEANUPS) if "cleanup" in f \
        else "none"
    expect = expect_of(c, f["expect"], label, acc, racing) if "expect" in f else {}
    older = older_of(c, f["before"], label, acc, racing) if "before" in f else ()
    if not (name and page and inj and acc and why and prog is not None and tier
            and (race or not racing)):
        return None
    return Scenario(name, page, inj, acc, why, policy["early_kill"], expect,
                    policy["recovery"], cleanup or "none", prog, sysctl, tier, cpus, race,
                    rounds, older=older, **(program or {}))


PROGRAM_RESULTS = ("ktap", "exit")
ARG_RE = re.compile(r"^[A-Za-z0-9_.,=+/-]{1,64}$")  # one word of farm.run on the command line


def program_of(c: Checker, node, label: str) -> dict | None:
    """`program`: {dir: a directory of C sources | binary: a static binary, result: ktap |
    exit, args: [...]}, its path inside the scenario file's directory."""
    f = c.mapping(node, f"{label}: program", {"dir": False, "binary": False, "result": False,
                                               "args": False})
    kinds = [k for k in ("dir", "binary") if k in f]
    if len(kinds) != 1:
        c.err(node, f"{label}: program needs exactly one of: dir (C sources), binary")
        return None
    home = c.path.parent.resolve()
    path = c.file(f[kinds[0]], f"{label}: program.{kinds[0]}", home,
                  "dir" if kinds[0] == "dir" else "file")
    if path and not path.is_relative_to(home):
        c.err(f[kinds[0]], f"{label}: program.{kinds[0]}: {path} is outside {home} (a "
                           "program lives beside the scenario file, e.g. under programs/)")
        path = None
    result = c.choice(f["result"], f"{label}: program.result", PROGRAM_RESULTS) \
        if "result" in f else "ktap"
    args: list[str] = []
    if "args" in f:
        vals = c.value(f["args"], f"{label}: program.args", (list,)) or []
        for a in vals[:16]:
            if not isinstance(a, str | int) or not ARG_RE.match(str(a)):
                c.err(f["args"], f"{label}: program.args: {str(a)[:40]!r} is not one word "
                                 "(letters, digits, _.,=+/- only; it goes onto the kernel "
                                 "command line)")
            else:
                args.append(str(a))
    if not (path and result):
        return None
    return {"program": str(path), "result": result, "args": tuple(args)}


def _name(c: Checker, f: dict, seen: set[str]) -> str | None:
    name = c.value(f["name"], "scenario name", (str,)) if "name" in f else None
    if name is not None:
        if not NAME_RE.match(name):
            c.err(f["name"], f"scenario name '{name}' must match {NAME_RE.pattern}")
        elif name in seen:
            c.err(f["name"], f"duplicate scenario '{name}'")
        seen.add(name)
    return name


def _kselftest(c: Checker, f: dict, label: str) -> str | None:
    prog = c.value(f["kselftest"], f"{label}: kselftest", (str,))
    if prog is not None and prog != KSELFTEST_AUTO and not KSELFTEST_RE.match(prog):
        c.err(f["kselftest"], f"{label}: kselftest '{prog}' must name a program under "
                              "tools/testing/selftests, e.g. mm/hugetlb-soft-offline")
        return None
    return prog


def _sysctl(c: Checker, node, label: str) -> dict[str, str]:
    """`sysctl`: name: value pairs, each value one token of the kernel command line."""
    if not isinstance(node, yaml.MappingNode):
        c.err(node, f"{label}: sysctl must be a mapping of name: value")
        return {}
    if len(node.value) > MAX_SYSCTLS:
        c.err(node, f"{label}: at most {MAX_SYSCTLS} sysctls")
    out: dict[str, str] = {}
    for k, v in node.value[:MAX_SYSCTLS]:
        key = scalar(k)
        if key is None or not SYSCTL_RE.match(key):
            c.err(k, f"{label}: a sysctl name must be like vm.nr_hugepages")
            continue
        val = c.value(v, f"{label}: sysctl.{key}", (int, str))
        if val is None:
            continue
        if not SYSCTL_VALUE_RE.match(str(val)):
            c.err(v, f"{label}: sysctl.{key}: {str(val)[:80]!r} is not one value (letters, "
                     "digits, ._+- only; it goes onto the kernel command line)")
        else:
            out[key] = str(val)
    return out


def _policy(c: Checker, node, label: str) -> dict[str, int]:
    """`policy`: vm.memory_failure_early_kill and _recovery, each 0 or 1."""
    policy = {"early_kill": 0, "recovery": 1}
    pol = c.mapping(node, f"{label}: policy", dict.fromkeys(policy, False))
    for key, vnode in pol.items():
        val = c.value(vnode, f"{label}: policy.{key}", (int,))
        if val not in (0, 1, None):
            c.err(vnode, f"{label}: policy.{key} must be 0 or 1")
        elif val is not None:
            policy[key] = val
    return policy


def _access(c: Checker, node, label: str, page: str | None) -> str | None:
    """`access`: one step or a list of steps, each applicable to the page kind, as the
    comma-joined string the workload takes ('read,pread,remap-read')."""
    if isinstance(node, yaml.SequenceNode):
        if not node.value or len(node.value) > MAX_STEPS:
            c.err(node, f"{label}: access must list 1 to {MAX_STEPS} steps")
            return None
        items = node.value
    else:
        items = [node]
    steps: list[str] = []
    for item in items:
        step = c.choice(item, f"{label}: access", ACCESSES)
        if step is None:
            return None
        if step in steps:
            c.err(item, f"{label}: access step '{step}' is listed twice (each step's "
                        "observables are named after it)")
            return None
        if step == "none" and len(items) > 1:
            c.err(item, f"{label}: access 'none' cannot be one step of several")
            return None
        if step != "none" and page in PAGE_KINDS and step not in steps_for(page):
            fits = steps_for(page)
            c.err(item, f"{label}: access step '{step}' does not apply to {page} pages ("
                        + (f"its steps: {', '.join(fits)})" if fits else
                           "the workload never touches it: access must be none)"))
            return None
        steps.append(step)
    return ",".join(steps)


def _race(c: Checker, f: dict, label: str, page: str | None,
          injector: str | None) -> tuple[str, int]:
    """`race` (an action of RACES that fits the page kind) and `rounds`; the injector must
    be one whose poisoning is over when its call returns."""
    race = c.choice(f["race"], f"{label}: race", tuple(RACES))
    rounds = DEFAULT_ROUNDS
    if "rounds" in f:
        rounds = c.bounded(f["rounds"], f"{label}: rounds", 1, MAX_ROUNDS) or 0
    if page and page not in RACE_KINDS:
        c.err(f["page"], f"{label}: race mode does not set up {page} pages (it does: "
                         f"{', '.join(RACE_KINDS)})")
        return "", 0
    if race and page and page not in RACES[race]:
        c.err(f["race"], f"{label}: race '{race}' does not apply to {page} pages (it does to: "
                         f"{', '.join(RACES[race])})")
        return "", 0
    if injector and injector not in RACE_INJECTORS:
        c.err(f["injector"], f"{label}: a race poisons with {', '.join(RACE_INJECTORS)} "
                             f"(their poisoning is over when the call returns), not {injector}")
        return "", 0
    return race or "", rounds
