"""The options that select what a run covers and how, spelled once: each is a row of OPTIONS
with its flag, its field of RunOptions, how its text is read and how it is passed on. The
CLI adds them to `farm run` and `farm plan` from here, a run takes RunOptions, and a pool of
hosts gives each host's `farm run` the same options, written back as words from here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .farmfile import FarmConfig
from .farmguest import BOOTS
from .registry import COVERAGE_DEFAULT, FAIL_ON, TIERS, coverage_files


@dataclass(frozen=True)
class RunOptions:
    results: Path | None = None
    variants: tuple[str, ...] = ()
    scenarios: str | None = None
    page_kinds: tuple[str, ...] = ()
    injectors: tuple[str, ...] = ()
    jobs: int | None = None
    repeat: int | None = None
    shard: tuple[int, int] | None = None  # (K, N): the K-th of N parts of the matrix, from 1
    confirm: int | None = None  # more runs of base and variant for each verdict not `same`
    fail_on: tuple[str, ...] | None = None  # verdicts that fail the run beside regression
    tier: str | None = None  # default | race | full (default: farm.yaml's tier, else default)
    coverage: tuple[str, ...] | None = None  # files to profile (default: farm.yaml's)
    names: tuple[str, ...] | None = None  # only these scenarios (--affected's choice)
    layers: tuple[str, ...] | None = None  # config layers added to every variant (--layer)
    affected: str = ""  # --affected's account of its choice (run.json, the summary)
    seed: int | None = None  # the races' seed (--seed); None: a new one for this run
    no_sandbox: bool = False  # --no-sandbox: build trees outside the sandbox (docs/sandbox.md)
    boot: str | None = None  # --boot snapshot|cold (default: farm.yaml's guest.boot)


def number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from low (to high)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if n < low or high is not None and n > high:
            raise argparse.ArgumentTypeError(
                f"must be at least {low}: {n}" if high is None else f"must be {low} to {high}: {n}")
        return n
    return parse


def words(text: str | None) -> tuple[str, ...]:
    """Comma-separated words."""
    return tuple(w for w in (text or "").split(",") if w)


def shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, e.g. 2/4: {text!r}")
    return int(k), int(n)


def fail_on(text: str) -> tuple[str, ...]:
    got = words(text)
    bad = [w for w in got if w not in FAIL_ON]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown verdict(s) {', '.join(bad)} (known: "
                                         f"{', '.join(FAIL_ON)})")
    return got


def _joined(v: Any) -> str:
    return ",".join(v)


@dataclass(frozen=True)
class Option:
    """One option: its flags, the RunOptions field it sets, its help, how its text is read
    (an argparse type), and how a host's command line gets it back (None: it does not)."""
    flags: tuple[str, ...]
    field: str
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    to_host: Callable[[Any], str] | None = None
    commands: tuple[str, ...] = ("run", "plan")


OPTIONS: tuple[Option, ...] = (
    Option(("--variants",), "variants", "comma-separated variants (default: all)", words,
           "A,B", to_host=_joined),
    Option(("--scenarios",), "scenarios", "comma-separated name patterns, e.g. 'anon-*'",
           metavar="PATTERNS", to_host=str),
    Option(("--page-kind",), "page_kinds", "comma-separated page kinds, e.g. anon,hugetlb-anon",
           words, "KINDS", to_host=_joined),
    Option(("--injector",), "injectors", "comma-separated injectors, e.g. host-srao,host-srar",
           words, "INJECTORS", to_host=_joined),
    Option(("--repeat",), "repeat", "runs of each case (default: 1)", number(1), "N",
           to_host=str),
    Option(("--tier",), "tier", "default: the scenarios every run covers; race: the race "
           "scenarios (also run when --scenarios names them); full: all of them (default: "
           "farm.yaml's tier, else default)", choices=TIERS, to_host=str),
    Option(("--layer",), "layers", "add farm.yaml's config layers (comma-separated, e.g. "
           "debug) to every variant: a build key of their own (docs: layers)",
           lambda t: words(t) or None, "NAMES", to_host=_joined),
    Option(("--seed",), "seed", "the race scenarios' seed: rerun a run's races the same way, "
           "as far as the kernel allows (default: a new one each run, in run.json and the "
           "summary)", number(0, 2**32 - 1), "N"),
    Option(("--shard",), "shard", "only the K-th of N parts of the scenarios (e.g. one per CI "
           "job); `farm merge` joins the parts", shard, "K/N"),
    Option(("--coverage",), "coverage", "build the profiled files with gcov and report which "
           "lines and functions each scenario reaches (FILES: comma-separated tree paths; "
           "default: farm.yaml's coverage, else mm/memory-failure.c,mm/madvise.c)",
           metavar="FILES", to_host=_joined),
    Option(("-j", "--jobs"), "jobs", "guests at once (default: CPUs)", number(1), "N",
           commands=("run",)),
    Option(("--confirm",), "confirm", "runs of base and variant again N more times for every "
           "verdict other than same before it is final (default: 2; 0: off)", number(0, 20),
           "N", to_host=str, commands=("run",)),
    Option(("--fail-on",), "fail_on", "also exit 1 on these verdicts: changed, flaky "
           "(comma-separated; a regression always fails)", fail_on, "VERDICTS",
           to_host=_joined, commands=("run",)),
    Option(("--boot",), "boot", "how each case's guest starts: snapshot (restored from a "
           "guest of its shape booted once and saved) or cold (booted); default: farm.yaml's "
           "guest.boot, else snapshot (docs/snapshots.md)", choices=BOOTS,
           to_host=str, commands=("run",)),
    Option(("--results",), "results", "result directory (default: results/<run-id>)", Path,
           "DIR", commands=("run",)),
)
BY_FIELD = {o.field: o for o in OPTIONS}


def add_options(p: argparse.ArgumentParser, command: str) -> None:
    """The options of `farm run` or `farm plan`, and --affected beside them."""
    for o in OPTIONS:
        if command not in o.commands:
            continue
        kw: dict[str, Any] = {"dest": o.field, "help": o.help}
        if o.field == "coverage":  # --coverage alone: farm.yaml's files, else the default
            kw.update(nargs="?", const="")
        if o.type is not None:
            kw["type"] = o.type
        if o.metavar:
            kw["metavar"] = o.metavar
        if o.choices:
            kw["choices"] = o.choices
        p.add_argument(*o.flags, **kw)
    if command == "run":
        p.add_argument("--no-sandbox", action="store_true", dest="no_sandbox",
                       help="build patch series and git trees without the sandbox where the "
                            "host cannot make one: their code then runs as the farm's user, "
                            "with the host in its reach (docs/sandbox.md)")
    p.add_argument("--affected", action="store_true", dest="choose_affected",
                   help="only the scenarios whose coverage on the base reaches what the "
                        "variants' patches change (docs: coverage); says why each")


def options_of(args: argparse.Namespace, cfg: FarmConfig) -> RunOptions:
    """The RunOptions the command line asked for (what it did not name is left to
    farm.yaml and the defaults)."""
    given = {o.field: getattr(args, o.field) for o in OPTIONS
             if getattr(args, o.field, None) is not None}
    if getattr(args, "no_sandbox", False):
        given["no_sandbox"] = True
    if "coverage" in given:
        text = given["coverage"]
        given["coverage"] = coverage_files(text) if text else (cfg.coverage or COVERAGE_DEFAULT)
    return RunOptions(**given)


def host_args(opts: RunOptions, seed: int) -> list[str]:
    """A host's `farm run` options: those that select the matrix as they were given, the
    scenarios --affected chose here instead of the patterns, and the run's seed, so that
    every host cuts the same matrix into the same shards and runs its races as the others."""
    out = []
    for o in OPTIONS:
        value = getattr(opts, o.field)
        if o.field == "scenarios" and opts.names is not None:
            value = ",".join(opts.names)
        if o.to_host is not None and value not in (None, (), ""):
            out += [o.flags[-1], o.to_host(value)]
    return [*out, "--seed", str(seed)]
