"""farm.yaml and scenario files: loaded with their line numbers and validated in full, every
problem reported at once (file:line: message) before anything is built."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigErrors
from .runner import SSH_TARGET

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")
ACCELS = ("auto", "tcg", "kvm")
PAGE_KINDS = ("anon", "anon-clean", "mlocked", "pagecache-clean", "pagecache-dirty", "file-hole",
              "shmem", "sysv-shm", "swap-clean", "swap-dirty", "thp-head", "thp-tail",
              "hugetlb-anon", "hugetlb-file", "ksm", "anon-shared-fork", "writeback",
              "free-buddy", "kernel")
# Kinds with no mapping in the workload: only a PFN, so nothing to touch afterwards.
UNMAPPED_KINDS = ("free-buddy", "kernel")
INJECTORS = ("madvise", "madvise-soft", "corrupt-pfn", "hard-offline", "soft-offline",
             "mce-inject", "host-srao", "host-srar", "host-srar-kernel")
GUEST_INJECTORS = tuple(i for i in INJECTORS if not i.startswith("host-"))
CLEANUPS = ("none", "unpoison")
KSELFTEST_RE = re.compile(r"^[a-z0-9_-]+/[A-Za-z0-9_.-]+$")  # under tools/testing/selftests
SYSCTL_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
ACCESSES = ("read", "write", "none")
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
DATA_STATES = ("intact", "zeroed", "changed", "unreadable", "written", "unchecked")
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

    @property
    def needs_disk(self) -> bool:
        return self.page in ("pagecache-clean", "pagecache-dirty", "file-hole", "writeback")

    @property
    def needs_swap(self) -> bool:
        return self.page.startswith("swap-")

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


class _Checker:
    """Walks YAML nodes, collecting problems with file and line."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []

    def err(self, node: yaml.Node | None, msg: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        self.problems.append(f"{self.path}{line}: {msg}")

    def load(self) -> yaml.Node | None:
        try:
            text = self.path.read_text()
        except OSError as e:
            self.problems.append(f"{self.path}: cannot read: {e.strerror}")
            return None
        try:
            return yaml.compose(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            self.problems.append(f"{self.path}{where}: not valid YAML: {getattr(e, 'problem', e)}")
            return None

    def mapping(self, node, what: str, known: dict[str, bool]) -> dict[str, yaml.Node]:
        """known: key -> required. Unknown and missing keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping")
            return {}
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key in out:
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
        val = yaml.safe_load(yaml.serialize(node))
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
        val = self.value(node, what, (int,))
        if val is not None and val < 1:
            self.err(node, f"{what} must be at least 1, not {val}")
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
        "cache": False, "hosts": False})

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
                name = k.value
                if not NAME_RE.match(str(name)):
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
                                              "accel": False, "cpu": False, "machine": False})
        kw: dict[str, Any] = {}
        for key in ("memory_mb", "timeout"):
            if key in g:
                kw[key] = c.positive(g[key], f"guest.{key}")
        if "accel" in g:
            kw["accel"] = c.choice(g["accel"], "guest.accel", ACCELS)
        for key in ("cpu", "machine"):
            if key in g:
                kw[key] = c.value(g[key], f"guest.{key}", (str,))
        guest = GuestSettings(**{k: v for k, v in kw.items() if v is not None})

    jobs = c.positive(top["jobs"], "jobs") if "jobs" in top else None
    repeat = c.positive(top["repeat"], "repeat") if "repeat" in top else None
    cache = Path(os.environ.get("FARM_CACHE", "~/.cache/hwpoison-farm")).expanduser()
    if "cache" in top:
        cv = c.value(top["cache"], "cache", (str,))
        if cv:
            cache = (base_dir / os.path.expanduser(cv)).resolve()

    hosts = _hosts(c, top["hosts"], base_dir) if "hosts" in top else ()

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
                      repeat=repeat or 1, cache=cache, hosts=hosts)


REMOTE_DIR_RE = re.compile(r"^[A-Za-z0-9._/-]+$")


def _hosts(c: _Checker, node, base_dir: Path) -> tuple[Host, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        c.err(node, "hosts must be a list of {ssh: [user@]host[:port], dir: ..., jobs: N}")
        return ()
    hosts: list[Host] = []
    for i, n in enumerate(node.value):
        what = f"hosts[{i}]"
        h = c.mapping(n, what, {"ssh": True, "dir": False, "jobs": False, "key": False})
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
            elif d:
                kw["dir"] = d
        if "jobs" in h:
            kw["jobs"] = c.positive(h["jobs"], f"{what}.jobs")
        if "key" in h:
            kw["key"] = c.file(h["key"], f"{what}.key", base_dir)
        if ssh is None:
            continue
        host = Host(ssh, **{k: v for k, v in kw.items() if v is not None})
        if any((x.ssh, x.dir) == (host.ssh, host.dir) for x in hosts):
            c.err(n, f"{what}: {ssh} with dir {host.dir} is listed twice")
            continue
        hosts.append(host)
    return tuple(hosts)


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
        keys = dict((k.value, v) for k, v in item.value) if isinstance(
            item, yaml.MappingNode) else {}
        kself = "kselftest" in keys
        named = keys.get("name")
        f = c.mapping(item, f"scenario '{named.value}'" if isinstance(
            named, yaml.ScalarNode) else "scenario", {
            "name": True, "why": True, "policy": False, "sysctl": False,
            **({"kselftest": True} if kself else {
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
            if prog is not None and not KSELFTEST_RE.match(prog):
                c.err(f["kselftest"], f"{label}: kselftest '{prog}' must name a program under "
                                      "tools/testing/selftests, e.g. mm/hugetlb-soft-offline")
                prog = None
        else:
            prog = ""
            page = c.choice(f["page"], f"{label}: page", PAGE_KINDS) if "page" in f else None
            inj = c.choice(f["injector"], f"{label}: injector",
                           INJECTORS) if "injector" in f else None
            acc = c.choice(f["access"], f"{label}: access", ACCESSES) if "access" in f else None
        why = c.value(f["why"], f"{label}: why", (str,)) if "why" in f else None
        sysctl: dict[str, str] = {}
        if "sysctl" in f:
            node_s = f["sysctl"]
            if not isinstance(node_s, yaml.MappingNode):
                c.err(node_s, f"{label}: sysctl must be a mapping of name: value")
            else:
                for k, v in node_s.value:
                    if not SYSCTL_RE.match(str(k.value)):
                        c.err(k, f"{label}: sysctl name '{k.value}' is not like vm.nr_hugepages")
                    elif c.value(v, f"{label}: sysctl.{k.value}", (int, str)) is not None:
                        sysctl[k.value] = str(v.value)
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
        if page in UNMAPPED_KINDS and acc not in (None, "none"):
            c.err(f["access"], f"{label}: a {page} page has no mapping to touch: access "
                               "must be none")
        expect: dict[str, Any] = {}
        if "expect" in f:
            em = c.mapping(f["expect"], f"{label}: expect", {k: False for k in OBSERVABLES})
            for key, vnode in em.items():
                val = c.value(vnode, f"{label}: expect.{key}", OBSERVABLES[key])
                allowed = {"guest": GUEST_STATES, "data": DATA_STATES, "sibling_data": DATA_STATES,
                           **dict.fromkeys(("inject_signal", "access_signal", "early_signal",
                                            "sibling_early_signal", "sibling_access_signal"),
                                           SIGNAL_CODES)}.get(key)
                if allowed and val is not None and val not in allowed:
                    c.err(vnode, f"{label}: expect.{key} is '{val}', expected one of: "
                                 f"{', '.join(allowed)}")
                expect[key] = val
        if name and page and inj and acc and why and prog is not None:
            out.append(Scenario(name, page, inj, acc, why, policy["early_kill"], expect,
                                policy["recovery"], cleanup or "none", prog, sysctl))
    if node is not None and not node.value:
        c.err(node, "scenarios: the list is empty")
    if c.problems:
        raise ConfigErrors(c.problems)
    return tuple(out)
