"""Kernel reports on a guest's console, classified: what a debug kernel (and a production
one) prints when it catches something, each as a kind, the function it names and the
report's first line. Pure: lines in, reports out (recorded real reports back the tests,
tests/data/recorded/reports/)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

# The first line of each kind of report, most specific first; `fn` names the function the
# line itself names, when it does.
STARTS: tuple[tuple[str, re.Pattern], ...] = (
    ("kasan", re.compile(r"BUG: KASAN: (?P<what>[\w-]+) in (?P<fn>[\w.]+)")),
    ("lockdep", re.compile(r"WARNING: (?P<what>possible circular locking dependency detected|"
                           r"possible recursive locking detected|inconsistent lock state|"
                           r"lock held when returning to user space!|suspicious RCU usage\.?|"
                           r"bad unlock balance detected!|held lock freed!|"
                           r"Invalid wait context|"
                           r"possible irq lock inversion dependency detected)")),
    ("atomic-sleep", re.compile(r"BUG: (?P<what>sleeping function called from invalid context|"
                                r"scheduling while atomic)")),
    ("bad-page", re.compile(r"BUG: Bad page (?P<what>state|map|cache) in process")),
    ("refcount", re.compile(r"refcount_t: (?P<what>[^.]+)")),
    ("list-corruption", re.compile(r"(?P<what>list_(?:add|del) corruption)")),
    ("soft-lockup", re.compile(r"watchdog: BUG: (?P<what>soft lockup) - CPU#\d+ stuck")),
    ("rcu-stall", re.compile(r"rcu: INFO: \S+ (?P<what>self-detected stall|detected stalls?)")),
    ("hung-task", re.compile(r"INFO: task (?P<task>\S+) blocked for more than \d+ seconds")),
    ("vm-bug", re.compile(r"page dumped because: (?P<what>VM_BUG_ON_\w+)")),
    ("bug", re.compile(r"kernel BUG at (?P<where>\S+)!")),
    ("warning", re.compile(r"WARNING: CPU: \d+ PID: \d+ at (?P<where>\S+) (?P<fn>[\w.]+)\+0x")),
    ("oops", re.compile(r"(?P<what>BUG: unable to handle page fault|general protection fault|"
                        r"BUG: kernel NULL pointer dereference|Oops: )")),
    ("panic", re.compile(r"Kernel panic - not syncing: ?(?P<what>.*)")),
)
RIP = re.compile(r"RIP: \d+:(?P<fn>[\w.]+)\+0x")
HELD_AT = re.compile(r"#\d+: \S+ \(.*\)\S*, at: (?P<fn>[\w.]+)\+0x")  # lockdep's held locks
FRAME = re.compile(r"^\s*(?P<unsure>\? )?(?P<fn>[\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+")
END = re.compile(r"---\[ end (?:trace|Kernel panic)")
# Frames of the reporting machinery itself: the first frame after them is the one to name.
HELPERS = re.compile(
    r"^(dump_stack\w*|show_stack|__warn|warn_slowpath\w*|report_bug|handle_bug|"
    r"exc_invalid_op|asm_exc_\w+|print_report|kasan_report|__asan_\w+|kasan_\w+|"
    r"__kasan_\w+|check_\w+_access|print_\w+|lockdep_\w+|__lock_acquire|lock_acquire|"
    r"lock_release|__might_resched|__might_sleep|might_sleep|__schedule_bug|schedule_debug|"
    r"__schedule|schedule|bad_page|free_page_is_bad\w*|_*refcount_\w+|_*folio_put\w*|"
    r"put_page\w*|"
    r"__list_(add|del)_valid\w*|__list_\w+_report|debug_check_no_locks_held|"
    r"dump_page|__dump_page|watchdog_timer_fn|__hrtimer_run_queues|hrtimer_interrupt|"
    r"rcu_dump_\w+|rcu_sched_clock_irq|print_cpu_stall\w*|check_cpu_stall\w*|"
    r"sched_show_task|show_state_filter|check_hung\w*|watchdog|hung_task\w*|"
    r"kthread|ret_from_fork\w*|__sysvec_\w+|sysvec_\w+|update_process_times|tick_\w+)$")
LINE_LIMIT = 300  # a report's first line, as kept
# Kinds the kernel prints again while the condition lasts: one report, counted.
REPEATING = ("soft-lockup", "rcu-stall", "hung-task")


@dataclass
class Report:
    kind: str
    function: str  # "" when the report names none
    line: str  # the report's first line
    detail: str = ""  # what kind of KASAN access, which lockdep check, ...
    count: int = 1  # the same report again (a soft lockup repeats every few seconds)

    def text(self) -> str:
        """The kernel_errors entry: 'kind in function: first line'."""
        where = f" in {self.function}" if self.function else ""
        return f"{self.kind}{where}: {self.line}"

    def to_json(self) -> dict:
        return asdict(self)


def _start(line: str) -> tuple[str, re.Match] | None:
    for kind, pattern in STARTS:
        m = pattern.search(line)
        if m:
            return kind, m
    return None


def _first_frame(kind: str, body: list[str]) -> str:
    """The function a report is about: for a sleep in atomic context, where the innermost
    lock held was taken; else its RIP, unless that is the reporting itself; else where
    lockdep says a lock was taken; else the first reliable frame of its call trace that is
    not part of the reporting."""
    if kind == "atomic-sleep":  # who holds the innermost lock it slept under
        held = [m.group("fn") for m in map(HELD_AT.search, body) if m]
        if held:
            return held[-1]
    for pattern in (RIP, HELD_AT) if kind == "lockdep" else (RIP,):
        for line in body:
            m = pattern.search(line)
            if m and not HELPERS.match(m.group("fn")):
                return m.group("fn")
    frames: list[tuple[bool, str]] = []  # (reliable, function) of the first call trace
    tracing = False
    for line in body:
        if "Call Trace:" in line:
            if frames:
                break
            tracing = True
            continue
        m = FRAME.match(line) if tracing else None
        if m and not HELPERS.match(m.group("fn")):
            frames.append((not m.group("unsure"), m.group("fn")))
    # A kernel built with the guessing unwinder (tinyconfig's) marks every frame "?": then
    # the first of them is the best there is.
    return next((fn for sure, fn in frames if sure), frames[0][1] if frames else "")


def classify(lines: Iterable[str]) -> list[Report]:
    """Every report on a console, in order. A report runs from its first line to the next
    report's or its end-of-trace marker; a WARNING that only carries another report (a
    refcount or list-corruption warning, a lockdep splat) is that report, not a second."""
    reports: list[tuple[Report, list[str]]] = []
    current: list[str] | None = None
    for line in lines:
        hit = _start(line)
        if hit:
            kind, m = hit
            if reports and current is not None and kind == "warning" and \
                    reports[-1][0].kind in ("refcount", "list-corruption", "vm-bug") and \
                    len(current) < 5:
                current.append(line)  # the WARNING that carries the report before it
                continue
            if reports and current is not None and (
                    kind == "bug" and reports[-1][0].kind == "vm-bug" or
                    kind == "oops" and reports[-1][0].kind in ("bug", "vm-bug") or
                    kind == "oops" and m.group("what") == "Oops: " and
                    reports[-1][0].kind == "oops"):
                # VM_BUG_ON's "kernel BUG at", BUG()'s invalid opcode, a page fault's Oops
                current.append(line)
                continue
            groups = m.groupdict()
            detail = groups.get("what") or groups.get("where") or groups.get("task") or ""
            r = Report(kind, groups.get("fn") or "", line.strip()[:LINE_LIMIT],
                       detail.strip()[:120])
            current = [line]
            reports.append((r, current))
            continue
        if current is not None:
            if END.search(line):
                current = None
            else:
                current.append(line)
    out: list[Report] = []
    for r, body in reports:
        if not r.function:
            r.function = _first_frame(r.kind, body)
        again = next((o for o in out if (o.kind, o.function, o.detail) ==
                      (r.kind, r.function, r.detail)), None)
        if again and r.kind in REPEATING:
            again.count += 1
        else:
            out.append(r)
    return out
