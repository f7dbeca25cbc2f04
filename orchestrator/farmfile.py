"""farm.yaml: what a farm is (the kernel source, its variants, the guest, the pool of hosts)
and its loading, every value checked before anything is built (with the scenario file it
names), every problem reported at once as file:line: message."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigErrors
from .farmguest import GuestSettings, guest_settings
from .farmhosts import Host, hosts
from .registry import COVERAGE_DEFAULT, FAIL_ON, TIERS, coverage_file_ok
from .scenarios import NAME_RE, Scenario, load_scenarios
from .yamlcheck import Checker, scalar

BASE_CONFIGS = ("tinyconfig", "allnoconfig", "defconfig")
GIT_REF_RE = re.compile(r"^[A-Za-z0-9_.@{}^~/][A-Za-z0-9_.@{}^~/+-]{0,199}$")
_REF = r"[A-Za-z0-9_@{}^~/][A-Za-z0-9_.@{}^~/+-]{0,199}"
COMMITS_RE = re.compile(rf"^(?!.*\.\.\.){_REF}\.\.{_REF}$")  # A..B, never A...B
TOP_KEYS = {"source": True, **dict.fromkeys(
    ("config", "base", "guest", "scenarios", "guest_tests", "jobs", "repeat", "confirm",
     "fail_on", "cache", "hosts", "tier", "coverage", "layers", "kcidb"), False),
    "variants": True}
FARM_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_SOURCE = re.compile(r"linux-source-(\d+\.\d+)\.tar")  # Debian's linux-source-X.Y


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
    source: Source | None = None  # its own kernel source (default: farm.yaml's source:)
    base: str = ""  # the variant it is compared with, built from the same source
    ref: str = ""  # a git source's branch: its commits since the source's ref are the series
    commits: str = ""  # a git source's range of commits, A..B: the series


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
    coverage: tuple[str, ...] = ()  # files profiled with gcov in every case (docs: coverage)
    # Named layers of config fragments a run may add to every variant (--layer NAME).
    layers: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    kcidb: dict[str, str] = field(default_factory=dict)  # origin, url of kcidb.json

    def source_of(self, variant: str) -> Source:
        """The kernel source a variant builds: its own, else farm.yaml's."""
        return self.variants[variant].source or self.source

    def base_for(self, variant: str, run: list[str] | tuple[str, ...] = ()) -> str:
        """The variant a variant is compared with, built from the same source: its `base:`,
        else farm.yaml's base when that builds the same source, else the first variant of its
        source (itself, when it is that first one: a base of its own kernel). Within a run
        (its variants in `run`), a base the run does not have gives way to the run's first
        variant of that source."""
        run = tuple(run) or tuple(self.variants)
        v = self.variants[variant]
        source = self.source_of(variant)
        same = [n for n in self.variants if n in run and self.source_of(n) == source]
        for want in (v.base, self.base):
            if want and want in run and self.source_of(want) == source:
                return want
        return same[0] if same else variant


def load_farm(path: Path | str, *, check_scenarios: bool = True) -> FarmConfig:
    """Load and validate farm.yaml and the scenario file it names; raise ConfigErrors
    listing every problem."""
    path = Path(path).resolve()
    c = Checker(path)
    root = c.load()
    if root is None:
        raise ConfigErrors(c.problems)
    where = path.parent
    top = c.mapping(root, "farm.yaml", TOP_KEYS)
    source = _source(c, top["source"], where) if "source" in top else None
    base_config, fragments = _config(c, top["config"], where) if "config" in top else (
        "tinyconfig", ())
    variants = _variants(c, top["variants"], where) if "variants" in top else {}
    base = _base(c, top["base"], variants) if "base" in top else next(iter(variants), "")
    if "variants" in top:
        _variant_bases(c, top["variants"], variants, source)
    guest = guest_settings(c, top["guest"]) if "guest" in top else GuestSettings()
    settings = _settings(c, top, where)
    pool = hosts(c, top["hosts"], where) if "hosts" in top else ()
    coverage = _coverage(c, top["coverage"]) if "coverage" in top else ()
    layers = _layers(c, top["layers"], where) if "layers" in top else {}
    kcidb = _kcidb(c, top["kcidb"]) if "kcidb" in top else {}
    scenarios_path, guest_tests = _guest_files(c, top, root, where)
    problems = list(c.problems)
    scenarios: tuple[Scenario, ...] = ()
    if check_scenarios:
        try:
            scenarios = load_scenarios(scenarios_path)
        except ConfigErrors as e:
            problems += e.problems
    if problems:
        raise ConfigErrors(problems)
    return FarmConfig(path=path, source=source, base_config=base_config, fragments=fragments,
                      variants=variants, base=base, guest=guest, scenarios_path=scenarios_path,
                      guest_tests=guest_tests, scenarios=scenarios, hosts=pool,
                      coverage=coverage, layers=layers, kcidb=kcidb, **settings)


def _source(c: Checker, node, where: Path, what: str = "source") -> Source | None:
    """source: exactly one of tarball, dir, git (with its ref)."""
    s = c.mapping(node, what, {"tarball": False, "dir": False, "git": False, "ref": False})
    kinds = [k for k in ("tarball", "dir", "git") if k in s]
    if len(kinds) != 1:
        c.err(node, f"{what} needs exactly one of: tarball, dir, git")
        return None
    kind = kinds[0]
    p = c.file(s[kind], f"{what}.{kind}", where, "file" if kind == "tarball" else "dir")
    ref = c.value(s["ref"], f"{what}.ref", (str,)) if "ref" in s else None
    if ref is not None and not GIT_REF_RE.match(ref):
        c.err(s["ref"], f"{what}.ref: {ref[:80]!r} is not a git ref (a branch, tag or commit; "
                        "it may not start with '-')")
        ref = None
    if "ref" in s and kind != "git":
        c.err(s["ref"], f"{what}.ref only goes with {what}.git")
    if not p:
        m = DEBIAN_SOURCE.search(str(scalar(s[kind]) or ""))
        if kind == "tarball":
            c.problems[-1] += (f" (Debian: apt-get install linux-source-{m.group(1)})" if m
                               else " (Debian 12 has linux-source-6.12 and linux-source-6.1)")
        return None
    if kind == "git" and not (p / ".git").exists():
        c.err(s[kind], f"{what}.git: not a git repository: {p}")
    return Source(kind, p, ref or ("HEAD" if kind == "git" else None))


def _config(c: Checker, node, where: Path) -> tuple[str, tuple[Path, ...]]:
    """config: the make target the config starts from, and the fragments merged into it."""
    cfg = c.mapping(node, "config", {"base": False, "fragments": False})
    base = "tinyconfig"
    if "base" in cfg:
        base = c.choice(cfg["base"], "config.base", BASE_CONFIGS) or base
    frags = c.files(cfg["fragments"], "config.fragments", where) if "fragments" in cfg else ()
    return base, frags


def _variants(c: Checker, node, where: Path) -> dict[str, Variant]:
    """variants: name -> {patches, fragments, description}, or nothing (the bare source)."""
    variants: dict[str, Variant] = {}
    for _, name, v in c.named(node, "variants", "variant", "name: {patches: [...]}", NAME_RE,
                              "it names directories and JUnit suites"):
        if isinstance(v, yaml.ScalarNode) and v.value in ("", "~", "null"):
            variants[name] = Variant(name)
            continue
        f = c.mapping(v, f"variant '{name}'", {"patches": False, "fragments": False,
                                               "description": False, "source": False,
                                               "base": False, "ref": False, "commits": False})
        patches = c.files(f["patches"], f"variants.{name}.patches", where) \
            if "patches" in f else ()
        frags = c.files(f["fragments"], f"variants.{name}.fragments", where) \
            if "fragments" in f else ()
        desc = c.value(f["description"], f"variants.{name}.description", (str,)) \
            if "description" in f else ""
        source = _source(c, f["source"], where, f"variants.{name}.source") \
            if "source" in f else None
        base = c.value(f["base"], f"variants.{name}.base", (str,)) if "base" in f else ""
        ref, commits = _commits(c, f, name)
        variants[name] = Variant(name, patches, frags, desc or "", source, base or "", ref,
                                 commits)
    if isinstance(node, yaml.MappingNode) and not node.value:
        c.err(node, "variants: at least one variant is needed")
    return variants


def _commits(c: Checker, f: dict, name: str) -> tuple[str, str]:
    """A variant's `ref:` (a branch of a git source) or `commits:` (A..B), instead of
    patches: checked as git words here, as commits of the repository before the build."""
    out = {}
    for key, pattern, like in (("ref", GIT_REF_RE, "my-fix"),
                               ("commits", COMMITS_RE, "v6.12..my-fix")):
        if key in f:
            val = c.value(f[key], f"variants.{name}.{key}", (str,))
            if val is not None and not pattern.match(val):
                c.err(f[key], f"variants.{name}.{key}: {val[:80]!r} is not "
                              + ("a git ref" if key == "ref" else "a range of commits A..B")
                              + f" (like {like}; it may not start with '-')")
            elif val:
                out[key] = val
    given = [k for k in ("patches", "ref", "commits") if k in f]
    if len(given) > 1:
        c.err(f[given[1]], f"variants.{name}: a series is patches, a ref or commits: one of "
                           f"them, not {' and '.join(given)}")
    return out.get("ref", ""), out.get("commits", "")


def _variant_bases(c: Checker, node, variants: dict[str, Variant], source: Source | None) -> None:
    """A variant's `base:` names another variant built from the same source; its `ref:` or
    `commits:` are a git source's."""
    if not isinstance(node, yaml.MappingNode):
        return
    where = {scalar(k): v for k, v in node.value}
    for name, v in variants.items():
        at = where.get(name, node)
        kind = (v.source or source).kind if (v.source or source) else "git"
        if (v.ref or v.commits) and kind != "git":
            c.err(at, f"variants.{name}: ref and commits are commits of a git source "
                      f"(source: {{git: ~/src/linux, ref: v6.12}}), not of a {kind}")
        if not v.base:
            continue
        if v.base not in variants:
            c.err(at, f"variants.{name}.base: '{v.base}' is not a variant (variants: "
                      f"{', '.join(variants)})")
        elif v.base == name:
            c.err(at, f"variants.{name}.base: a variant is not compared with itself")
        elif (variants[v.base].source or source) != (v.source or source):
            c.err(at, f"variants.{name}.base: '{v.base}' builds another kernel source; a "
                      "variant is compared with a variant of its own source")


def _base(c: Checker, node, variants: dict[str, Variant]) -> str:
    base = next(iter(variants), "")
    b = c.value(node, "base", (str,))
    if b is not None and variants and b not in variants:
        c.err(node, f"base '{b}' is not a variant (variants: {', '.join(variants)})")
    elif b:
        base = b
    return base


def _settings(c: Checker, top: dict, where: Path) -> dict[str, Any]:
    """How runs go by default: jobs, repeat, tier, confirm, fail_on, and the cache."""
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
            cache = (where / os.path.expanduser(cv)).resolve()
    return {"jobs": jobs or (os.cpu_count() or 1), "repeat": repeat or 1,
            "tier": tier or "default", "confirm": 2 if confirm is None else confirm,
            "fail_on": fail_on, "cache": cache}


def _guest_files(c: Checker, top: dict, root, where: Path) -> tuple[Path, Path | None]:
    """The scenario file, and the guest-tests directory (the agent and the workloads)."""
    scenarios = where / "guest-tests" / "scenarios.yaml"
    if "scenarios" in top:
        scenarios = c.file(top["scenarios"], "scenarios", where) or scenarios
    if "guest_tests" in top:
        guest_tests = c.file(top["guest_tests"], "guest_tests", where, "dir")
        if guest_tests and not (guest_tests / "agent" / "init").is_file():
            c.err(top["guest_tests"], f"guest_tests: {guest_tests} has no agent/init")
        return scenarios, guest_tests
    # beside farm.yaml, else the scenario file's own directory, else the farm's own (a
    # farm.yaml elsewhere still gets the shipped agent and workloads)
    for d in (where / "guest-tests", scenarios.parent, FARM_ROOT / "guest-tests"):
        if (d / "agent" / "init").is_file():
            return scenarios, d.resolve()
    c.err(root, "no guest-tests directory (with agent/init) beside farm.yaml or the "
                "scenario file: name one with guest_tests:")
    return scenarios, None


# kcidb: KCIDB's origin pattern (bounded), and where a lab publishes its result directories.
ORIGIN_RE = re.compile(r"^[a-z0-9_]{1,64}$")
URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~%/+-]*)?$")


def _kcidb(c: Checker, node) -> dict[str, str]:
    """kcidb: the origin the run's kcidb.json names (KCIDB's pattern: lower-case letters,
    digits, _) and the URL its result directory is published at (log and file links)."""
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


def _layers(c: Checker, node, where: Path) -> dict[str, tuple[Path, ...]]:
    """layers: name -> the config fragments it adds to every variant of a run that asks."""
    out: dict[str, tuple[Path, ...]] = {}
    for _, name, v in c.named(node, "layers", "layer", "name: [fragment, ...]", NAME_RE,
                              "it names builds and reports"):
        frags = c.files(v, f"layers.{name}", where)
        if isinstance(v, yaml.SequenceNode) and not v.value:
            c.err(v, f"layers.{name}: a layer needs at least one fragment")
        out[name] = frags
    return out


def _coverage(c: Checker, node) -> tuple[str, ...]:
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
