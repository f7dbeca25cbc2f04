"""The scenario language's words. Page kinds, injectors, access steps and race actions are
declared once, in the workload's tables (guest-tests/workloads/hwpoison-case.c), and read here
from its source (`hwpoison-case --list` prints the same; tests/test_registry.py holds the two
and the scenario docs together). Beside them: the observables a scenario may expect, and the
statuses and verdicts judging and the reports share."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError

WORKLOAD = Path(__file__).resolve().parent.parent / "guest-tests" / "workloads" / \
    "hwpoison-case.c"
# Each table of the registry, by the names of its rows' C array and its flags' array.
TABLES = {"kinds": ("kinds", "kind_flags"), "injectors": ("injectors", "injector_flags"),
          "steps": ("steps", "step_flags"), "races": ("actions", "action_flags")}
_ROW = re.compile(r'\{"(?P<name>[a-z0-9-]+)", \w+, (?P<flags>[A-Z_ |0]+)\}')
_FLAG = re.compile(r'\{(?P<macro>[A-Z]_[A-Z_]+), "(?P<name>[a-z_]+)"\}')


def _array(text: str, name: str) -> str:
    """The initializer of the C array `name[] = {...};`."""
    block = text[re.search(rf"\b{name}\[\] = \{{", text).end():]
    return block[:block.index("\n};")]


def read_registry(path: Path = WORKLOAD) -> dict[str, dict[str, frozenset[str]]]:
    """The workload's tables: {"kinds": {name: {flag, ...}}, "injectors": ..., "steps": ...,
    "races": ...}, each in the order of its rows; a flag by the name its table gives it."""
    text = path.read_text()
    out = {}
    for table, (rows, flags) in TABLES.items():
        names = {m["macro"]: m["name"] for m in _FLAG.finditer(_array(text, flags))}
        out[table] = {m["name"]: frozenset(names[f.strip()] for f in m["flags"].split("|")
                                           if f.strip() in names)
                      for m in _ROW.finditer(_array(text, rows))}
    return out


REGISTRY = read_registry()
KINDS, INJECTOR_ROWS = REGISTRY["kinds"], REGISTRY["injectors"]
STEP_ROWS, RACE_ROWS = REGISTRY["steps"], REGISTRY["races"]


def kinds_with(flag: str) -> tuple[str, ...]:
    return tuple(k for k, f in KINDS.items() if flag in f)


# ---- page kinds -----------------------------------------------------------------------------
PAGE_KINDS = tuple(KINDS)
UNMAPPED_KINDS = kinds_with("unmapped")  # only a PFN: nothing to touch afterwards
UNTOUCHED_KINDS = kinds_with("untouched")  # mapped, but not the workload's own: never touched
DISK_KINDS, SWAP_KINDS, FILE_KINDS = kinds_with("disk"), kinds_with("swap"), kinds_with("file")
RACE_KINDS = kinds_with("race")  # race mode sets them up again every round

# ---- injectors -------------------------------------------------------------------------------
INJECTORS = tuple(INJECTOR_ROWS)
GUEST_INJECTORS = tuple(i for i, f in INJECTOR_ROWS.items() if "host" not in f)
# Synchronous injectors only: a race's round must know when its poisoning is over.
RACE_INJECTORS = tuple(i for i, f in INJECTOR_ROWS.items() if "synchronous" in f)


def machine_check(injector: str) -> tuple[str, str | None] | None:
    """A host injector's machine check, from its row: its kind (srao, srar) and the privilege
    level the vCPU must be at when it lands ("3": the workload's own access in user mode, "0":
    in the kernel, None: wherever it is); None for a name that is not a host injector."""
    flags = INJECTOR_ROWS.get(injector, frozenset())
    if "host" not in flags:
        return None
    if "srar" in flags:
        return "srar", "0" if "in_kernel" in flags else "3"
    return "srao", None


# ---- access steps ----------------------------------------------------------------------------
# The ways a program meets the poisoned page again. A scenario's `access` is one of them or a
# list of them; a first step of read, write or none is the classic access (observables
# access_signal and data), every other step has observables of its own, <step>.<observable>.
ACCESS_STEPS = tuple(STEP_ROWS)
CLASSIC_ACCESSES = (*(s for s, f in STEP_ROWS.items() if "classic" in f), "none")
ACCESSES = ("none", *ACCESS_STEPS)
MAX_STEPS = 16
# What each step reports, and the YAML types each may take (data is a DATA_STATES word).
STEP_OBSERVABLES: dict[str, tuple[type, ...]] = {
    "signal": (str, type(None)), "si_addr_lsb": (int, type(None)), "data": (str,),
    "errno": (int, type(None)), "bytes": (int, type(None))}


def own_steps(steps: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The steps that report observables of their own: all but a classic first one."""
    return tuple(steps[1:] if steps and steps[0] in CLASSIC_ACCESSES else steps)


def steps_for(kind: str) -> tuple[str, ...]:
    """The access steps that apply to a page kind: none to a page the workload never
    touches, every one to a page with a file behind it, else those of its step's row."""
    flags = KINDS.get(kind, frozenset())
    if "untouched" in flags:
        return ()
    if "file" in flags:
        return ACCESS_STEPS
    return tuple(s for s, f in STEP_ROWS.items()
                 if "mapping" in f or "segment" in f and "segment" in flags)


# ---- race actions ----------------------------------------------------------------------------
# What a racer thread does to the page while the workload poisons it, round after round.


def _fits(action: str, kind: str) -> bool:
    a, k = RACE_ROWS[action], KINDS[kind]
    return ("file" not in a or "file" in k) and ("holes" not in a or "disk" not in k) and \
        ("not_hugetlb" not in a or "hugetlb" not in k)


RACES: dict[str, tuple[str, ...]] = {
    a: tuple(k for k in RACE_KINDS if _fits(a, k)) for a in RACE_ROWS}
# Actions that cut the page out of its file (a round may then read zeros), and those that
# unpoison it (the round's end undoes what the racer left).
CUTTING_RACES = tuple(a for a, f in RACE_ROWS.items() if "cuts" in f)
UNPOISONING_RACES = tuple(a for a, f in RACE_ROWS.items() if "unpoisons" in f)
# What a race observes over its rounds (race.<name>): 0 on a correct kernel but rounds;
# parse.race_observables says how each is counted.
RACE_OBSERVABLES = ("rounds", "wrong_data", "hc_overcount", "not_back")
MAX_ROUNDS = 200
DEFAULT_ROUNDS = 10
RACE_CPUS = 2  # a race scenario's vCPUs unless it says cpus:

# ---- what a scenario may expect ---------------------------------------------------------------
OBSERVABLES: dict[str, tuple[type, ...]] = {
    "guest": (str,),
    "recovery": (list,),
    "inject_signal": (str, type(None)),
    "access_signal": (str, type(None)),
    "si_addr_is_page": (bool, type(None)),  # null: no signal came
    "si_addr_lsb": (int, type(None)),
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
# The words each observable's value is one of, where it has such a list.
ALLOWED = {"guest": GUEST_STATES, "data": DATA_STATES, "sibling_data": DATA_STATES,
           **dict.fromkeys(("inject_signal", "access_signal", "early_signal",
                            "sibling_early_signal", "sibling_access_signal", "signal"),
                           SIGNAL_CODES)}

# ---- the rest of a scenario -----------------------------------------------------------------
CLEANUPS = ("none", "unpoison")
# default: every run; full: all of them; race: the race scenarios, which run only when a run
# asks for them (--tier race or full, or --scenarios naming them): they take longer.
TIERS = ("default", "full", "race")
# `kselftest: auto`: every program of the variant's tree whose name says it tests memory
# failure, run one after the other in one guest, each a KTAP test of the case.
KSELFTEST_AUTO = "auto"
KSELFTEST_AUTO_RE = re.compile(r"hwpoison|memory[-_]failure|soft[-_]offline", re.I)
# Why a variant has no binary of a program: its tree lacks it (it cannot run there: a skip),
# or it did not build (an error, with the build's first error lines).
KSELFTEST_NOT_HERE = "not in this kernel tree"
KSELFTEST_NOT_BUILT = "did not build"


def kselftest_file(prog: str) -> str:
    """The file name a kselftest program gets in the build and in the guest's
    /guest-tests/kselftest/: mm/hugetlb-soft-offline -> mm-hugetlb-soft-offline."""
    return prog.replace("/", "-")


# ---- coverage ---------------------------------------------------------------------------------
# The files a coverage run profiles unless farm.yaml or --coverage names others.
COVERAGE_DEFAULT = ("mm/memory-failure.c", "mm/madvise.c")
# A C file of the kernel tree, as a relative path: it reaches a Makefile variable, the
# guest's kernel command line and the agent's JSON, so nothing else is allowed.
COVERAGE_FILE_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}/){0,8}"
                              r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\.c$")


def coverage_file_ok(rel: str) -> bool:
    return bool(COVERAGE_FILE_RE.match(rel)) and ".." not in rel.split("/")


def coverage_files(text: str) -> tuple[str, ...]:
    """A comma-separated list of tree files to profile, checked; UserError if one is bad."""
    files = tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
    bad = [f for f in files if not coverage_file_ok(f)]
    if bad or not files:
        raise UserError(f"--coverage: {', '.join(map(repr, bad)) or 'no file'}: expected C "
                        "files of the kernel tree as relative paths, e.g. mm/memory-failure.c")
    return files


# ---- outcomes ---------------------------------------------------------------------------------
STATUSES = ("pass", "fail", "error", "skip")
VERDICTS = ("same", "regression", "fixed", "changed", "error", "flaky")
CONFIRMED = ("regression", "fixed", "changed")  # re-run before they are final
FAIL_ON = ("changed", "flaky")  # verdicts a user may have fail the run, beside regression
