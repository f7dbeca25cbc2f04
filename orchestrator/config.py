"""farm.yaml and scenario files: loaded with their line numbers and validated in full, every
problem reported at once (file:line: message) before anything is built."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigErrors, UserError
from .parse import STEP_OBSERVABLES as STEP_NAMES
from .qemu import known_names
from .results import FAIL_ON
from .runner import SSH_TARGET

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")
ACCELS = ("auto", "tcg", "kvm")
# The registry: page kinds and injectors are declared once, in the workload's own tables
# (guest-tests/workloads/hwpoison-case.c: kinds[], injectors[]), read here; its `--list`
# prints the same as JSON, and tests/test_registry.py holds this reading and the README to it.
WORKLOAD = Path(__file__).resolve().parent.parent / "guest-tests" / "workloads" / \
    "hwpoison-case.c"
KIND_FLAGS = {"K_DISK": "disk", "K_SWAP": "swap", "K_UNMAPPED": "unmapped",
              "K_UNTOUCHED": "untouched", "K_FILE": "file", "K_RACE": "race",
              "K_HUGETLB": "hugetlb", "K_THP": "thp"}
INJECTOR_FLAGS = {"I_HOST": "host", "I_SYNC": "synchronous"}


def read_registry(path: Path = WORKLOAD) -> dict[str, dict[str, set[str]]]:
    """The workload's tables: {"kinds": {name: {flag, ...}}, "injectors": {...}}, in order."""
    text = path.read_text()

    def table(start: str, row: re.Pattern, flags: dict[str, str]) -> dict[str, set[str]]:
        block = text[text.index(start):]
        block = block[:block.index("\n};")]
        return {m.group("name"): {flags[f.strip()] for f in m.group("flags").split("|")
                                  if f.strip() in flags} for m in row.finditer(block)}
    return {"kinds": table("} kinds[] = {", re.compile(
                r'\{"(?P<name>[a-z0-9-]+)", setup_\w+, (?P<flags>[A-Z_ |0]+)\}'), KIND_FLAGS),
            "injectors": table(" injectors[] = {", re.compile(
                r'\{"(?P<name>[a-z0-9-]+)", inject_\w+, (?P<flags>[A-Z_ |0]+)\}'),
                INJECTOR_FLAGS)}


REGISTRY = read_registry()
PAGE_KINDS = tuple(REGISTRY["kinds"])


def kinds_with(flag: str) -> tuple[str, ...]:
    return tuple(k for k, f in REGISTRY["kinds"].items() if flag in f)


# Kinds with no mapping in the workload: only a PFN, so nothing to touch afterwards.
UNMAPPED_KINDS = kinds_with("unmapped")
# Kinds the workload maps but does not own (the kernel's vDSO): poisoned, never touched.
UNTOUCHED_KINDS = kinds_with("untouched")
DISK_KINDS, SWAP_KINDS = kinds_with("disk"), kinds_with("swap")
INJECTORS = tuple(REGISTRY["injectors"])
GUEST_INJECTORS = tuple(i for i, f in REGISTRY["injectors"].items() if "host" not in f)
CLEANUPS = ("none", "unpoison")
KSELFTEST_RE = re.compile(r"^[a-z0-9_-]+/[A-Za-z0-9_.-]+$")  # under tools/testing/selftests
# `kselftest: auto`: every program of the variant's tree whose name says it tests memory
# failure, run one after the other in one guest, each a KTAP test of the case.
KSELFTEST_AUTO = "auto"
KSELFTEST_AUTO_RE = re.compile(r"hwpoison|memory[-_]failure|soft[-_]offline", re.I)
SYSCTL_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
# A sysctl value goes onto the kernel command line (farm.sysctl=name=value,...): one token.
SYSCTL_VALUE_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
MAX_SYSCTLS = 16
MAX_CPUS = 4  # vCPUs a guest may have: kernels/base.config's CONFIG_NR_CPUS
# Bounds of the guest's settings: below 64 MB the kernel does not boot; above, a typo.
GUEST_BOUNDS = {"memory_mb": (64, 65536), "timeout": (5, 86400), "cpus": (1, MAX_CPUS)}
CPU_RE = re.compile(r"^[A-Za-z0-9_.-]+(,[+-]?[A-Za-z0-9_.-]+(=[A-Za-z0-9_.-]+)?)*$")
MACHINE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
GIT_REF_RE = re.compile(r"^[A-Za-z0-9_.@{}^~/][A-Za-z0-9_.@{}^~/+-]{0,199}$")
# Access steps: the ways a program meets the poisoned page again, in the order the README's
# table lists them. A scenario's `access` is one of them or a list of them; a first step of
# read, write or none is the classic access (observables access_signal and data), every
# other step has observables of its own, named <step>.<observable>.
CLASSIC_ACCESSES = ("read", "write", "none")
MAPPING_STEPS = ("read", "write", "child-read", "populate-read", "after-drop-caches")
ACCESS_STEPS = ("read", "write", "remap-read", "remap-write", "private-read", "pread", "pwrite",
                "child-read", "populate-read", "after-drop-caches", "truncate-extend", "fsync")
ACCESSES = ("none", *ACCESS_STEPS)
# Kinds with a file behind the page: every step applies. SysV shm has no descriptor, only a
# segment to attach again (remap-read, remap-write).
FILE_KINDS = kinds_with("file")
MAX_STEPS = 16
# A step's observables, with the YAML types each may take (data is a DATA_STATES word).
STEP_OBSERVABLES: dict[str, tuple[type, ...]] = {
    name: (str,) if name == "data" else (str if name == "signal" else int, type(None))
    for name in STEP_NAMES}
# default: every run; full: all of them; race: the race scenarios, which run only when a run
# asks for them (--tier race or full, or --scenarios naming them): they take longer.
TIERS = ("default", "full", "race")
# Race mode (README: races): what a racer thread does to the page while the workload poisons
# it, round after round, and the page kinds each action applies to. The workload sets each of
# RACE_KINDS up again every round (guest-tests/workloads/hwpoison-case.c: race_main).
RACE_KINDS = kinds_with("race")
RACES: dict[str, tuple[str, ...]] = {
    "truncate": ("pagecache-clean", "pagecache-dirty", "shmem", "memfd", "hugetlb-file"),
    "punch-hole": ("shmem", "memfd", "hugetlb-file"),  # ext2 cannot punch holes
    "munmap": RACE_KINDS,
    "fork": RACE_KINDS,
    "pageout": tuple(k for k in RACE_KINDS if k not in kinds_with("hugetlb")),
    "compact": RACE_KINDS,
    "poison2": RACE_KINDS,  # corrupt-pfn of the same page at once
    "unpoison": RACE_KINDS,
    "soft-offline": RACE_KINDS,
}
# Synchronous injectors only: the round must know when its poisoning is over.
RACE_INJECTORS = tuple(i for i, f in REGISTRY["injectors"].items() if "synchronous" in f)
# What a race scenario observes over its rounds (race.<name>), each 0 on a correct kernel but
# rounds; parse.race_observables says how each is counted.
RACE_OBSERVABLES = ("rounds", "wrong_data", "hc_overcount", "not_back")
MAX_ROUNDS = 200
DEFAULT_ROUNDS = 10
RACE_CPUS = 2  # a race scenario's vCPUs unless it says cpus:
# The files a coverage run profiles unless farm.yaml or --coverage names others.
COVERAGE_DEFAULT = ("mm/memory-failure.c", "mm/madvise.c")
# A C file of the kernel tree, as a relative path: it reaches a Makefile variable, the
# guest's kernel command line and the agent's JSON, so nothing else is allowed.
COVERAGE_FILE_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}/){0,8}"
                              r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\.c$")


def own_steps(steps: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The steps that report observables of their own: all but a classic first one."""
    return tuple(steps[1:] if steps and steps[0] in CLASSIC_ACCESSES else steps)


def steps_for(kind: str) -> tuple[str, ...]:
    """The access steps that apply to a page kind."""
    if kind in UNTOUCHED_KINDS:
        return ()
    if kind in FILE_KINDS:
        return ACCESS_STEPS
    if kind == "sysv-shm":
        return (*MAPPING_STEPS, "remap-read", "remap-write")
    return MAPPING_STEPS
# Observables a scenario may expect, with the YAML types each may take.
OBSERVABLES: dict[str, tuple[type, ...]] = {
    "guest": (str,),
    "recovery": (list,),
    "inject_signal": (str, type(None)),
    "access_signal": (str, type(None)),
    "si_addr_is_page": (bool,),
    "si_addr_lsb": (int,),
    "data": (str,),
    "pfn_changed": (bool,),
    "hardware_corrupted_kb": (int,),
    "inject_errno": (int,),
    "fsync_errno": (int, type(None)),
    "kernel_errors": (list,),
    "early_signal": (str, type(None)),
    "sibling_early_signal": (str, type(None)),
    "sibling_access_signal": (str, type(None)),
    "sibling_data": (str,),
    "huge_pages_lost": (int,),
    "mce_logged": (bool,),
    "unpoison_errno": (int,),
    "hardware_corrupted_kb_after_unpoison": (int,),
}
GUEST_STATES = ("survived", "panicked", "hung")
DATA_STATES = ("intact", "zeroed", "changed", "unreadable", "written", "unchecked", "short",
               "child-killed")
SIGNAL_CODES = ("BUS_MCEERR_AR", "BUS_MCEERR_AO", "BUS_ADRERR", "BUS_OBJERR", "other")


def kselftest_file(prog: str) -> str:
    """The file name a kselftest program gets in the build and in the guest's
    /guest-tests/kselftest/: mm/hugetlb-soft-offline -> mm-hugetlb-soft-offline."""
    return prog.replace("/", "-")


@dataclass(frozen=True)
class Source:
    kind: str  # tarball | dir | git
    path: Path
    ref: str | None = None

    def describe(self) -> str:
        return f"{self.kind}:{self.path}" + (f"@{self.ref}" if self.ref else "")


@dataclass(frozen=True)
class Variant:
    name: str
    patches: tuple[Path, ...] = ()
    fragments: tuple[Path, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class GuestSettings:
    memory_mb: int = 256
    timeout: int = 90
    cpus: int = 1  # vCPUs of every guest unless a scenario says cpus:
    accel: str = "auto"
    cpu: str = "Skylake-Server"
    machine: str = "pc"


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
    tier: str = "default"  # default | full: which runs include it (README: tiers)
    cpus: int = 0  # vCPUs of its guest; 0: the guest's setting (guest.cpus)
    race: str = ""  # a racer's action (RACES): poison while it runs, `rounds` times
    rounds: int = 0
    seed: int = 0  # the race's seed: the run's (--seed), set when the run is planned

    @property
    def steps(self) -> tuple[str, ...]:
        """The access as a list of steps: 'read,pread' -> ('read', 'pread')."""
        return tuple(self.access.split(","))

    @property
    def needs_disk(self) -> bool:
        return self.page in DISK_KINDS

    @property
    def step_observables(self) -> tuple[str, ...]:
        return own_steps(self.steps)

    @property
    def needs_swap(self) -> bool:
        return self.page in SWAP_KINDS

    @property
    def from_host(self) -> bool:
        return self.injector.startswith("host-")


@dataclass(frozen=True)
class Host:
    """A machine of the pool: reached over SSH, it runs one shard of the matrix."""
    ssh: str  # [user@]host[:port]
    dir: str = "hwpoison-farm"  # where the farm is copied on the host (relative to its home)
    jobs: int | None = None  # guests at once there (default: its CPUs)
    key: Path | None = None  # SSH identity file (default: the SSH agent and ~/.ssh keys)
    known_hosts: Path | None = None  # the host keys trusted (default: ~/.ssh/known_hosts)
    accept_new: bool = False  # trust a host key seen for the first time (and remember it)


@dataclass(frozen=True)
class FarmConfig:
    path: Path
    source: Source
    base_config: str
    fragments: tuple[Path, ...]
    variants: dict[str, Variant]
    base: str
    guest: GuestSettings
    scenarios_path: Path
    guest_tests: Path  # the agent and the workloads that go into the guest image
    scenarios: tuple[Scenario, ...]
    jobs: int
    repeat: int
    cache: Path
    hosts: tuple[Host, ...] = ()
    confirm: int = 2  # more runs of base and variant for each verdict other than `same`
    tier: str = "default"  # the scenarios a run covers: default, or full (all of them)
    fail_on: tuple[str, ...] = ()  # verdicts that fail the run beside regression
    coverage: tuple[str, ...] = ()  # files profiled with gcov in every case (README: coverage)
    # Named layers of config fragments a run may add to every variant (--layer NAME).
    layers: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    kcidb: dict[str, str] = field(default_factory=dict)  # origin, url of kcidb.json


def coverage_files(text: str) -> tuple[str, ...]:
    """A comma-separated list of tree files to profile, checked; UserError if one is bad."""
    files = tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
    bad = [f for f in files if not coverage_file_ok(f)]
    if bad or not files:
        raise UserError(f"--coverage: {', '.join(map(repr, bad)) or 'no file'}: expected C "
                        "files of the kernel tree as relative paths, e.g. mm/memory-failure.c")
    return files


def coverage_file_ok(rel: str) -> bool:
    return bool(COVERAGE_FILE_RE.match(rel)) and ".." not in rel.split("/")


# Plain YAML only: no application tags (`!foo`, `!!python/...`), no merge keys, no binary.
YAML_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq",
                                                 "map", "timestamp")}
# How many values a file may hold once its aliases are expanded: a real farm.yaml or
# scenario file holds a few thousand; an alias bomb holds billions.
MAX_VALUES = 100_000


class _Checker:
    """Walks YAML nodes, collecting problems with file and line."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []
        self._construct = yaml.constructor.SafeConstructor()

    def err(self, node: yaml.Node | None, msg: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        self.problems.append(f"{self.path}{line}: {msg}")

    def load(self) -> yaml.Node | None:
        """The file's YAML node tree, or None with the problem recorded: unreadable, not
        UTF-8, not YAML, nested too deep, tagged, or with aliases that expand too far."""
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            self.problems.append(f"{self.path}: cannot read: {e.strerror}")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
            self.problems.append(f"{self.path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} "
                                 f"at column {col})")
            return None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            if mark is None and isinstance(getattr(e, "position", None), int):
                where = f":{text.count(chr(10), 0, e.position) + 1}"
            else:
                where = f":{mark.line + 1}" if mark else ""
            why = getattr(e, "problem", None) or str(e).splitlines()[0]
            ctx, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
            if ctx and cmark and mark and cmark.line != mark.line:
                why += f" ({ctx} that starts at line {cmark.line + 1})"
            self.problems.append(f"{self.path}{where}: not valid YAML: {why}")
            return None
        except RecursionError:
            self.problems.append(f"{self.path}:{_too_deep(text)}: nested too deeply")
            return None
        if root is None:
            self.problems.append(f"{self.path}: the file is empty")
            return None
        return root if self._vet(root) else None

    def _vet(self, root: yaml.Node) -> bool:
        """Tags and aliases, checked before any value is built: every node must be plain
        YAML, and the tree with its aliases expanded must stay small."""
        size: dict[int, int] = {}
        active: set[int] = set()
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        ok = True
        while stack:
            node, done = stack.pop()
            kids = _children(node)
            if done:
                active.discard(id(node))
                size[id(node)] = 1 + sum(size[id(k)] for k in kids)
                if size[id(node)] > MAX_VALUES:
                    self.err(node, f"aliases expand this to more than {MAX_VALUES} values")
                    return False
                continue
            if id(node) in size:
                continue
            if id(node) in active:
                self.err(node, "an alias refers to a value that contains it")
                return False
            if node.tag not in YAML_TAGS:
                what = "a merge key (<<)" if node.tag.endswith(":merge") else f"tag {node.tag}"
                self.err(node, f"{what} is not allowed: plain YAML values only")
                ok = False
            active.add(id(node))
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
        return ok

    def mapping(self, node, what: str, known: dict[str, bool]) -> dict[str, yaml.Node]:
        """known: key -> required. Unknown and missing keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping")
            return {}
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            key = _scalar(k)
            if key is None:
                self.err(k, f"{what}: a key must be a plain word, not a list or mapping")
            elif key in out:
                self.err(k, f"{what}: duplicate key '{key}'")
            elif key not in known:
                self.err(k, f"{what}: unknown key '{key}' (known: {', '.join(known)})")
            else:
                out[key] = v
        for key, required in known.items():
            if required and key not in out:
                self.err(node, f"{what}: missing key '{key}'")
        return out

    def value(self, node, what: str, types: tuple[type, ...]):
        """The Python value of a node, or None with a problem if it has the wrong type."""
        try:
            val = self._construct.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            self.err(node, f"{what}: not a value the farm can read: {str(e).splitlines()[0]}")
            return None
        if isinstance(val, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(val, types)
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            self.err(node, f"{what} must be {names}, not {_yaml_type(val)} {val!r}")
            return None
        return val

    def choice(self, node, what: str, choices: tuple[str, ...]) -> str | None:
        val = self.value(node, what, (str,))
        if val is not None and val not in choices:
            self.err(node, f"{what} is '{val}', expected one of: {', '.join(choices)}")
            return None
        return val

    def positive(self, node, what: str) -> int | None:
        return self.bounded(node, what, 1, None)

    def bounded(self, node, what: str, low: int, high: int | None) -> int | None:
        val = self.value(node, what, (int,))
        if val is not None and (val < low or high is not None and val > high):
            self.err(node, f"{what} must be " + (f"{low} to {high}" if high is not None
                                                 else f"at least {low}") + f", not {val}")
            return None
        return val

    def file(self, node, what: str, base: Path, kind: str = "file") -> Path | None:
        val = self.value(node, what, (str,))
        if val is None:
            return None
        p = (base / os.path.expanduser(val)).resolve()
        exists = p.is_dir() if kind == "dir" else p.is_file()
        if not exists:
            self.err(node, f"{what}: no such {kind}: {p}")
            return None
        return p

    def files(self, node, what: str, base: Path) -> tuple[Path, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, f"{what} must be a list of paths")
            return ()
        out = [self.file(n, f"{what}[{i}]", base) for i, n in enumerate(node.value)]
        return tuple(p for p in out if p)


def _too_deep(text: str, limit: int = 100) -> int:
    """The line where a document nests deeper than anyone writes by hand (brackets or
    indentation); the YAML parser itself only runs out of stack, with no line."""
    depth = 0
    for n, line in enumerate(text.splitlines(), 1):
        if len(line) - len(line.lstrip(" -")) > 4 * limit:
            return n
        for ch in line:
            depth += (ch in "[{") - (ch in "]}")
            if depth > limit:
                return n
    return 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def _scalar(node) -> str | None:
    """A mapping key as text, or None when the key is not a plain value."""
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _yaml_type(val) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", type(None): "null"}
    return names.get(type(val), type(val).__name__)


def load_farm(path: Path | str, *, check_scenarios: bool = True) -> FarmConfig:
    """Load and validate farm.yaml and the scenario file it names; raise ConfigErrors
    listing every problem."""
    path = Path(path).resolve()
    c = _Checker(path)
    root = c.load()
    if root is None:
        raise ConfigErrors(c.problems)
    base_dir = path.parent
    top = c.mapping(root, "farm.yaml", {
        "source": True, "config": False, "variants": True, "base": False, "guest": False,
        "scenarios": False, "guest_tests": False, "jobs": False, "repeat": False,
        "confirm": False, "fail_on": False, "cache": False, "hosts": False, "tier": False,
        "coverage": False, "layers": False, "kcidb": False})

    source = None
    if "source" in top:
        s = c.mapping(top["source"], "source", {"tarball": False, "dir": False, "git": False,
                                                  "ref": False})
        kinds = [k for k in ("tarball", "dir", "git") if k in s]
        if len(kinds) != 1:
            c.err(top["source"], "source needs exactly one of: tarball, dir, git")
        else:
            kind = kinds[0]
            p = c.file(s[kind], f"source.{kind}", base_dir, "file" if kind == "tarball" else "dir")
            ref = c.value(s["ref"], "source.ref", (str,)) if "ref" in s else None
            if ref is not None and not GIT_REF_RE.match(ref):
                c.err(s["ref"], f"source.ref: {ref[:80]!r} is not a git ref (a branch, tag or "
                                "commit; it may not start with '-')")
                ref = None
            if "ref" in s and kind != "git":
                c.err(s["ref"], "source.ref only goes with source.git")
            if p:
                if kind == "git" and not (p / ".git").exists():
                    c.err(s[kind], f"source.git: not a git repository: {p}")
                source = Source(kind, p, ref or ("HEAD" if kind == "git" else None))
            elif kind == "tarball":
                c.problems[-1] += " (Debian: apt-get install linux-source-6.12)"

    base_config, fragments = "tinyconfig", ()
    if "config" in top:
        cfg = c.mapping(top["config"], "config", {"base": False, "fragments": False})
        if "base" in cfg:
            base_config = c.choice(cfg["base"], "config.base",
                                   ("tinyconfig", "allnoconfig", "defconfig")) or base_config
        if "fragments" in cfg:
            fragments = c.files(cfg["fragments"], "config.fragments", base_dir)

    variants: dict[str, Variant] = {}
    if "variants" in top:
        vnode = top["variants"]
        if not isinstance(vnode, yaml.MappingNode):
            c.err(vnode, "variants must be a mapping of name: {patches: [...]}")
        else:
            if not vnode.value:
                c.err(vnode, "variants: at least one variant is needed")
            for k, v in vnode.value:
                name = _scalar(k)
                if name is None:
                    c.err(k, "a variant's name must be a plain word")
                    continue
                if not NAME_RE.match(name):
                    c.err(k, f"variant name '{name}' must match {NAME_RE.pattern} "
                             "(it names directories and JUnit suites)")
                    continue
                if name in variants:
                    c.err(k, f"variants: duplicate variant '{name}'")
                    continue
                if isinstance(v, yaml.ScalarNode) and v.value in ("", "~", "null"):
                    variants[name] = Variant(name)
                    continue
                fields = c.mapping(v, f"variant '{name}'",
                                   {"patches": False, "fragments": False, "description": False})
                patches = c.files(fields["patches"], f"variants.{name}.patches",
                                  base_dir) if "patches" in fields else ()
                frags = c.files(fields["fragments"], f"variants.{name}.fragments",
                                base_dir) if "fragments" in fields else ()
                desc = c.value(fields["description"], f"variants.{name}.description",
                               (str,)) if "description" in fields else ""
                variants[name] = Variant(name, patches, frags, desc or "")

    base = next(iter(variants), "")
    if "base" in top:
        b = c.value(top["base"], "base", (str,))
        if b is not None and variants and b not in variants:
            c.err(top["base"], f"base '{b}' is not a variant (variants: {', '.join(variants)})")
        elif b:
            base = b

    guest = GuestSettings()
    if "guest" in top:
        g = c.mapping(top["guest"], "guest", {"memory_mb": False, "timeout": False,
                                              "accel": False, "cpu": False, "machine": False,
                                              "cpus": False})
        kw: dict[str, Any] = {}
        for key, (low, high) in GUEST_BOUNDS.items():
            if key in g:
                kw[key] = c.bounded(g[key], f"guest.{key}", low, high)
        if "accel" in g:
            kw["accel"] = c.choice(g["accel"], "guest.accel", ACCELS)
        if "cpu" in g:
            kw["cpu"] = _qemu_name(c, g["cpu"], "guest.cpu", "cpu", CPU_RE)
        if "machine" in g:
            kw["machine"] = _qemu_name(c, g["machine"], "guest.machine", "machine", MACHINE_RE)
        guest = GuestSettings(**{k: v for k, v in kw.items() if v is not None})

    jobs = c.bounded(top["jobs"], "jobs", 1, 256) if "jobs" in top else None
    repeat = c.bounded(top["repeat"], "repeat", 1, 100) if "repeat" in top else None
    tier = c.choice(top["tier"], "tier", TIERS) if "tier" in top else None
    confirm = c.bounded(top["confirm"], "confirm", 0, 20) if "confirm" in top else None
    fail_on: tuple[str, ...] = ()
    if "fail_on" in top:
        if not isinstance(top["fail_on"], yaml.SequenceNode):
            c.err(top["fail_on"], f"fail_on must be a list of verdicts ({', '.join(FAIL_ON)})")
        else:
            fail_on = tuple(v for v in (c.choice(n, "fail_on", FAIL_ON)
                                        for n in top["fail_on"].value) if v)
    cache = Path(os.environ.get("FARM_CACHE", "~/.cache/hwpoison-farm")).expanduser()
    if "cache" in top:
        cv = c.value(top["cache"], "cache", (str,))
        if cv:
            cache = (base_dir / os.path.expanduser(cv)).resolve()

    hosts = _hosts(c, top["hosts"], base_dir) if "hosts" in top else ()
    coverage = _coverage(c, top["coverage"]) if "coverage" in top else ()
    layers = _layers(c, top["layers"], base_dir) if "layers" in top else {}
    kcidb = _kcidb(c, top["kcidb"]) if "kcidb" in top else {}

    scen_path = base_dir / "guest-tests" / "scenarios.yaml"
    if "scenarios" in top:
        scen_path = c.file(top["scenarios"], "scenarios", base_dir) or scen_path
    guest_tests = _guest_tests(base_dir, scen_path)
    if "guest_tests" in top:
        guest_tests = c.file(top["guest_tests"], "guest_tests", base_dir, "dir")
        if guest_tests and not (guest_tests / "agent" / "init").is_file():
            c.err(top["guest_tests"], f"guest_tests: {guest_tests} has no agent/init")
    elif guest_tests is None:
        c.err(root, "no guest-tests directory (with agent/init) beside farm.yaml or the "
                    "scenario file: name one with guest_tests:")
    scenarios: tuple[Scenario, ...] = ()
    problems = list(c.problems)
    if check_scenarios:
        try:
            scenarios = load_scenarios(scen_path)
        except ConfigErrors as e:
            problems += e.problems
    if problems:
        raise ConfigErrors(problems)
    return FarmConfig(path=path, source=source, base_config=base_config, fragments=fragments,
                      variants=variants, base=base, guest=guest, scenarios_path=scen_path,
                      guest_tests=guest_tests,
                      scenarios=scenarios, jobs=jobs or (os.cpu_count() or 1),
                      repeat=repeat or 1, cache=cache, hosts=hosts,
                      confirm=2 if confirm is None else confirm, fail_on=fail_on,
                      tier=tier or "default", coverage=coverage, layers=layers, kcidb=kcidb)


def _kcidb(c: _Checker, node) -> dict[str, str]:
    """kcidb: the origin the run's kcidb.json names (KCIDB's pattern: lower-case letters,
    digits, _) and the URL its result directory is published at (log and file links)."""
    from .kcidb import ORIGIN_RE, URL_RE
    f = c.mapping(node, "kcidb", {"origin": False, "url": False})
    out = {}
    for key, pattern, like in (("origin", ORIGIN_RE, "my_lab"),
                               ("url", URL_RE, "https://ci.example.org/farm/run-42")):
        if key in f:
            val = c.value(f[key], f"kcidb.{key}", (str,))
            if val is not None and not pattern.match(val):
                c.err(f[key], f"kcidb.{key}: {val[:80]!r} must look like {like} "
                              f"({pattern.pattern})")
            elif val is not None:
                out[key] = val
    return out


def _layers(c: _Checker, node, base_dir: Path) -> dict[str, tuple[Path, ...]]:
    """layers: name -> the config fragments it adds to every variant of a run that asks."""
    if not isinstance(node, yaml.MappingNode):
        c.err(node, "layers must be a mapping of name: [fragment, ...]")
        return {}
    out: dict[str, tuple[Path, ...]] = {}
    for k, v in node.value:
        name = _scalar(k)
        if name is None or not NAME_RE.match(name):
            c.err(k, f"layer name {str(name)[:60]!r} must match {NAME_RE.pattern} (it names "
                     "builds and reports)")
            continue
        if name in out:
            c.err(k, f"layers: duplicate layer '{name}'")
            continue
        frags = c.files(v, f"layers.{name}", base_dir)
        if isinstance(v, yaml.SequenceNode) and not v.value:
            c.err(v, f"layers.{name}: a layer needs at least one fragment")
        out[name] = frags
    return out


def _coverage(c: _Checker, node) -> tuple[str, ...]:
    """coverage: a list of the tree's C files to profile in every case, or true for the
    default ones."""
    if isinstance(node, yaml.ScalarNode):
        on = c.value(node, "coverage", (bool, list))
        return COVERAGE_DEFAULT if on else ()
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        c.err(node, "coverage must be true, false or a list of C files of the kernel tree "
                    f"(default: {', '.join(COVERAGE_DEFAULT)})")
        return ()
    out = []
    for i, n in enumerate(node.value):
        rel = c.value(n, f"coverage[{i}]", (str,))
        if rel is None:
            continue
        if not coverage_file_ok(rel):
            c.err(n, f"coverage[{i}]: {rel[:80]!r} is not a C file of the kernel tree as a "
                     "relative path (e.g. mm/memory-failure.c)")
        elif rel in out:
            c.err(n, f"coverage[{i}]: {rel} is listed twice")
        else:
            out.append(rel)
    return tuple(out)


REMOTE_DIR_RE = re.compile(r"^[A-Za-z0-9._/-]+$")


def _qemu_name(c: _Checker, node, what: str, kind: str, pattern: re.Pattern) -> str | None:
    """A CPU model or machine type for QEMU: plain words, and one this QEMU knows
    (`qemu-system-x86_64 -cpu help`, `-machine help`), checked before anything is built."""
    val = c.value(node, what, (str,))
    if val is None:
        return None
    if not pattern.match(val):
        c.err(node, f"{what}: {val!r} is not a {kind} name (letters, digits, ._-)")
        return None
    known = known_names(kind)
    name = val.split(",")[0]
    if known is not None and name not in known:
        near = [k for k in sorted(known) if k.lower().startswith(name[:3].lower())][:6]
        c.err(node, f"{what}: QEMU knows no {kind} '{name}' (qemu-system-x86_64 -{kind} "
                    "help lists them" + (f"; e.g. {', '.join(near)}" if near else "") + ")")
        return None
    return val


def _hosts(c: _Checker, node, base_dir: Path) -> tuple[Host, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        c.err(node, "hosts must be a list of {ssh: [user@]host[:port], dir: ..., jobs: N}")
        return ()
    hosts: list[Host] = []
    for i, n in enumerate(node.value):
        what = f"hosts[{i}]"
        h = c.mapping(n, what, {"ssh": True, "dir": False, "jobs": False, "key": False,
                                "known_hosts": False, "accept_new": False})
        ssh = c.value(h["ssh"], f"{what}.ssh", (str,)) if "ssh" in h else None
        if ssh is not None and not SSH_TARGET.match(ssh):
            c.err(h["ssh"], f"{what}.ssh: not [user@]host[:port]: {ssh!r}")
            ssh = None
        kw: dict[str, Any] = {}
        if "dir" in h:
            d = c.value(h["dir"], f"{what}.dir", (str,))
            if d is not None and not REMOTE_DIR_RE.match(d):
                c.err(h["dir"], f"{what}.dir: use letters, digits and ._/- only (a relative "
                                f"path is under the home directory there): {d!r}")
            elif d is not None and _unsafe_remote_dir(d):
                c.err(h["dir"], f"{what}.dir: {d!r} would be the farm's own directory on the "
                                "host, which it empties: name a directory of its own, e.g. "
                                "hwpoison-farm")
            elif d:
                kw["dir"] = d
        if "jobs" in h:
            kw["jobs"] = c.positive(h["jobs"], f"{what}.jobs")
        if "key" in h:
            kw["key"] = c.file(h["key"], f"{what}.key", base_dir)
        if "known_hosts" in h:
            kh = c.value(h["known_hosts"], f"{what}.known_hosts", (str,))
            if kh:
                kw["known_hosts"] = (base_dir / os.path.expanduser(kh)).resolve()
        if "accept_new" in h:
            kw["accept_new"] = c.value(h["accept_new"], f"{what}.accept_new", (bool,))
        if ssh is None:
            continue
        host = Host(ssh, **{k: v for k, v in kw.items() if v is not None})
        if any((x.ssh, x.dir) == (host.ssh, host.dir) for x in hosts):
            c.err(n, f"{what}: {ssh} with dir {host.dir} is listed twice")
            continue
        hosts.append(host)
    return tuple(hosts)


def _unsafe_remote_dir(d: str) -> bool:
    """/, the home directory, or anything with .. in it: never a farm directory."""
    parts = [p for p in d.split("/") if p not in ("", ".")]
    return not parts or ".." in parts


def _guest_tests(base_dir: Path, scenarios: Path) -> Path | None:
    """The guest-tests directory: beside farm.yaml, else the scenario file's own directory,
    else the farm's own (a farm.yaml elsewhere still gets the shipped agent and workloads)."""
    for d in (base_dir / "guest-tests", scenarios.parent,
              Path(__file__).resolve().parent.parent / "guest-tests"):
        if (d / "agent" / "init").is_file():
            return d.resolve()
    return None


def load_scenarios(path: Path | str) -> tuple[Scenario, ...]:
    """Load and validate a scenario file: a list of page kind x injector x access x policy
    rows, each with its expected outcome and the reason for it."""
    path = Path(path)
    c = _Checker(path)
    root = c.load()
    if root is None:
        raise ConfigErrors(c.problems)
    top = c.mapping(root, "scenario file", {"scenarios": True})
    out: list[Scenario] = []
    seen: set[str] = set()
    node = top.get("scenarios")
    if node is not None and not isinstance(node, yaml.SequenceNode):
        c.err(node, "scenarios must be a list")
        node = None
    for item in node.value if node is not None else ():
        keys = {_scalar(k): v for k, v in item.value} if isinstance(
            item, yaml.MappingNode) else {}
        kself = "kselftest" in keys
        racing = "race" in keys and not kself
        named = keys.get("name")
        f = c.mapping(item, f"scenario '{named.value}'" if isinstance(
            named, yaml.ScalarNode) else "scenario", {
            "name": True, "why": True, "policy": False, "sysctl": False, "tier": False,
            "cpus": False,
            **({"kselftest": True} if kself else {
                "page": True, "injector": True, "race": True, "rounds": False,
                "expect": False} if racing else {
                "page": True, "injector": True, "access": True, "cleanup": False,
                "expect": True})})
        name = c.value(f["name"], "scenario name", (str,)) if "name" in f else None
        label = f"scenario '{name}'" if name else "scenario"
        if name is not None:
            if not NAME_RE.match(name):
                c.err(f["name"], f"scenario name '{name}' must match {NAME_RE.pattern}")
            elif name in seen:
                c.err(f["name"], f"duplicate scenario '{name}'")
            seen.add(name)
        if kself:
            page, inj, acc = "kselftest", "kselftest", "none"
            prog = c.value(f["kselftest"], f"{label}: kselftest", (str,))
            if prog is not None and prog != KSELFTEST_AUTO and not KSELFTEST_RE.match(prog):
                c.err(f["kselftest"], f"{label}: kselftest '{prog}' must name a program under "
                                      "tools/testing/selftests, e.g. mm/hugetlb-soft-offline")
                prog = None
        else:
            prog = ""
            page = c.choice(f["page"], f"{label}: page", PAGE_KINDS) if "page" in f else None
            inj = c.choice(f["injector"], f"{label}: injector",
                           INJECTORS) if "injector" in f else None
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
        sysctl: dict[str, str] = {}
        if "sysctl" in f:
            node_s = f["sysctl"]
            if not isinstance(node_s, yaml.MappingNode):
                c.err(node_s, f"{label}: sysctl must be a mapping of name: value")
            else:
                if len(node_s.value) > MAX_SYSCTLS:
                    c.err(node_s, f"{label}: at most {MAX_SYSCTLS} sysctls")
                for k, v in node_s.value[:MAX_SYSCTLS]:
                    key = _scalar(k)
                    if key is None or not SYSCTL_RE.match(key):
                        c.err(k, f"{label}: a sysctl name must be like vm.nr_hugepages")
                        continue
                    val = c.value(v, f"{label}: sysctl.{key}", (int, str))
                    if val is None:
                        continue
                    if not SYSCTL_VALUE_RE.match(str(val)):
                        c.err(v, f"{label}: sysctl.{key}: {str(val)[:80]!r} is not one value "
                                 "(letters, digits, ._+- only; it goes onto the kernel command "
                                 "line)")
                    else:
                        sysctl[key] = str(val)
        policy = {"early_kill": 0, "recovery": 1}
        if "policy" in f:
            pol = c.mapping(f["policy"], f"{label}: policy", dict.fromkeys(policy, False))
            for key, vnode in pol.items():
                val = c.value(vnode, f"{label}: policy.{key}", (int,))
                if val not in (0, 1, None):
                    c.err(vnode, f"{label}: policy.{key} must be 0 or 1")
                elif val is not None:
                    policy[key] = val
        cleanup = c.choice(f["cleanup"], f"{label}: cleanup", CLEANUPS) if "cleanup" in f \
            else "none"
        expect: dict[str, Any] = {}
        if "expect" in f:
            expect = _expect(c, f["expect"], label, acc, racing)
        if name and page and inj and acc and why and prog is not None and tier and \
                (race or not racing):
            out.append(Scenario(name, page, inj, acc, why, policy["early_kill"], expect,
                                policy["recovery"], cleanup or "none", prog, sysctl, tier,
                                cpus, race, rounds))
    if node is not None and not node.value:
        c.err(node, "scenarios: the list is empty")
    if c.problems:
        raise ConfigErrors(c.problems)
    return tuple(out)


def _access(c: _Checker, node, label: str, page: str | None) -> str | None:
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


def _race(c: _Checker, f: dict, label: str, page: str | None,
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


def _expect(c: _Checker, node, label: str, access: str | None,
            racing: bool = False) -> dict[str, Any]:
    """`expect`: observables by name; a step's own are <step>.<observable> (pread.errno), a
    race's race.<observable>."""
    if not isinstance(node, yaml.MappingNode):
        c.err(node, f"{label}: expect must be a mapping")
        return {}
    steps = access.split(",") if access else []
    own = own_steps(steps)
    expect: dict[str, Any] = {}
    for knode, vnode in node.value:
        key = _scalar(knode)
        if key is None:
            c.err(knode, f"{label}: expect: a key must be a plain word")
            continue
        if key in expect:
            c.err(knode, f"{label}: expect: duplicate key '{key}'")
            continue
        if racing:
            step, _, obs = key.partition(".")
            if key not in ("guest", "kernel_errors") and (
                    step != "race" or obs not in RACE_OBSERVABLES):
                c.err(knode, f"{label}: expect: a race scenario observes guest, kernel_errors "
                             f"and race.<{'|'.join(RACE_OBSERVABLES)}>, not '{key}'")
                continue
            types, kind = (OBSERVABLES[key] if key in OBSERVABLES else (int,)), key
        elif "." in key:
            step, _, obs = key.partition(".")
            if access is not None and step not in own:
                c.err(knode, f"{label}: expect.{key}: '{step}' is not a step of this scenario's "
                             "access with observables of its own" + (
                                 f" ({', '.join(own)})" if own else "") + (
                                 "; a first read/write step reports access_signal and data"
                                 if steps and step == steps[0] else ""))
                continue
            if obs not in STEP_OBSERVABLES:
                c.err(knode, f"{label}: expect.{key}: a step's observables are "
                             f"{', '.join(STEP_OBSERVABLES)}")
                continue
            types, kind = STEP_OBSERVABLES[obs], obs
        elif key in OBSERVABLES:
            types, kind = OBSERVABLES[key], key
        else:
            c.err(knode, f"{label}: expect: unknown observable '{key}' (known: "
                         f"{', '.join(OBSERVABLES)}, and <step>.<{'|'.join(STEP_OBSERVABLES)}> "
                         "for a step of the access)")
            continue
        val = c.value(vnode, f"{label}: expect.{key}", types)
        allowed = {"guest": GUEST_STATES, "data": DATA_STATES, "sibling_data": DATA_STATES,
                   **dict.fromkeys(("inject_signal", "access_signal", "early_signal",
                                    "sibling_early_signal", "sibling_access_signal", "signal"),
                                   SIGNAL_CODES)}.get(kind)
        if allowed and val is not None and val not in allowed:
            c.err(vnode, f"{label}: expect.{key} is '{val}', expected one of: "
                         f"{', '.join(allowed)}")
        expect[key] = val
    return expect
