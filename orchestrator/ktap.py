"""KTAP/TAP parsing: a kselftest or KUnit program's output lines become tests with statuses.

Pure like `orchestrator.parse`: it takes any iterable of lines and starts nothing, so a saved
log re-parses to the same result. It never raises on what a program prints: lines that are not
KTAP become diagnostics, and what could not be read (no plan, output cut off) is listed in
`problems`.
Format: Documentation/dev-tools/ktap.rst and tools/testing/selftests/kselftest.h.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# printk time, optionally followed by the caller id of CONFIG_PRINTK_CALLER.
TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\](?:\[\s*[CT]\d+\])?\s?")
VERSION = re.compile(r"^(?:KTAP version \d+|TAP version \d+)$")
PLAN = re.compile(r"^1\.\.(\d{1,9})\s*(?:#\s*(.*))?$")
RESULT = re.compile(r"^(ok|not ok)\s+(\d{1,9})\b(.*)$")
SUBTEST = re.compile(r"^#\s*Subtest:\s*(\S.*)$")
BAIL_OUT = re.compile(r"^Bail out!\s*(.*)$")
# ksft_print_cnts(): the program's own summary, printed last, whatever happened before.
TRAILER = re.compile(r"^# (?:Totals: |Planned tests != run tests )")
DIRECTIVE = re.compile(r"^(SKIP|TODO|XFAIL|XPASS|TIMEOUT|ERROR)\b:?\s*(.*)$", re.IGNORECASE)
HASH = re.compile(r"(?:^|\s)#")  # the description may contain '#' only inside a word

KSFT_SKIP = 4
MAX_PLAN = 100_000  # a larger plan is a garbled line, not tests to mark as errors
ENDED = "no result line: the output ended before it"
OVERTAKEN = "no result line: the enclosing test's result came first"


@dataclass
class KtapTest:
    number: int
    name: str
    status: str  # "pass" | "fail" | "skip" | "error"  (error = no result line)
    reason: str = ""  # SKIP text, "TODO ..."/"XFAIL ..." on a pass, or why it is an error
    subtests: list[KtapTest] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)  # lines printed before its result


@dataclass
class KtapResult:
    version: str | None  # "KTAP version 1", "TAP version 13", ... or None if never seen
    plan: int | None  # from "1..N", None if missing
    tests: list[KtapTest]
    problems: list[str]  # "missing plan", "planned 12 tests, got 7", ...
    reason: str = ""  # why the whole program skipped: "1..0 # SKIP <reason>"
    # Lines no test owns: after the last result, kselftest's "# Totals: ...", or all of a
    # program's output when it printed no KTAP.
    diagnostics: list[str] = field(default_factory=list)


@dataclass
class _Block:
    """One level of results being read: the top level, or a parent test's subtests."""

    indent: int | None  # None until a "# Subtest:" block sees its first KTAP line
    name: str = ""  # from "# Subtest: name"
    plan: int | None = None
    skip_reason: str = ""
    tests: list[KtapTest] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # diagnostics awaiting a result line

    @property
    def started(self) -> bool:
        return self.plan is not None or bool(self.tests)


def clean(line: str) -> str:
    """The line without its newline and printk timestamp, indentation kept (it nests tests)."""
    return TIMESTAMP.sub("", line.rstrip("\r\n")).rstrip().expandtabs()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _tests(n: int) -> str:
    return f"{n} test" if n == 1 else f"{n} tests"


def _result_line(m: re.Match) -> KtapTest:
    ok = m.group(1) == "ok"
    number = int(m.group(2))
    rest = re.sub(r"^\s*-(\s+|$)", "", m.group(3).strip())
    h = HASH.search(rest)
    desc, extra = (rest[: h.start()], rest[h.end():]) if h else (rest, "")
    desc, extra = desc.strip(), extra.strip()
    d = DIRECTIVE.match(extra)
    keyword, text = (d.group(1).upper(), d.group(2).strip()) if d else ("", extra)
    if keyword == "SKIP":
        status, reason = "skip", text
    elif keyword in ("TODO", "XFAIL"):
        # Expected failures: counted as passes, the keyword kept so they stay visible.
        status, reason = "pass", extra
    elif keyword == "XPASS":
        # kselftest's ksft_finished() fails a program with an unexpected pass.
        status, reason = "fail", extra
    else:
        status, reason = ("pass" if ok else "fail"), extra
    # kselftest's ksft_test_result_skip() prints "ok 3 # SKIP <what>": no description.
    name = desc or text or f"test {number}"
    return KtapTest(number=number, name=name, status=status, reason=reason)


class _Parser:
    def __init__(self) -> None:
        self.stack: list[_Block] = []
        self.problems: list[str] = []
        self.bail_out: str | None = None
        self.trailer: list[str] = []

    # -- the four kinds of line --------------------------------------------------------------

    def version(self, ind: int, text: str) -> None:
        cur = self.stack[-1]
        if cur.indent is None:
            cur.indent = ind  # "# Subtest: x" then "KTAP version 1": one header
        elif ind > cur.indent:
            self.stack.append(_Block(indent=ind))
        else:
            cur.pending.append(text)  # a repeated header, e.g. from a forked child

    def subtest(self, ind: int, name: str) -> None:
        cur = self.stack[-1]
        if len(self.stack) > 1 and not cur.started and not cur.name and (
                cur.indent is None or cur.indent == ind):
            cur.name = name  # "KTAP version 1" then "# Subtest: x", as KUnit prints
        else:
            self.stack.append(_Block(indent=None, name=name))

    def plan(self, ind: int, m: re.Match) -> None:
        block = next(b for b in reversed(self.stack)
                     if b.indent is None or b.indent <= ind or b is self.stack[0])
        if block.indent is None:
            block.indent = ind
        if block.plan is not None or int(m.group(1)) > MAX_PLAN:
            what = "second plan" if block.plan is not None else "implausible plan"
            self.problems.append(f"{what} 1..{m.group(1)} ignored")
            return
        block.plan = int(m.group(1))
        d = DIRECTIVE.match((m.group(2) or "").strip())
        if d and d.group(1).upper() == "SKIP":
            block.skip_reason = d.group(2).strip()

    def result(self, ind: int, test: KtapTest) -> None:
        owned = self._close_for(ind, test.name)
        block = self.stack[-1]
        if owned is not None:
            test.subtests = self._finish(owned, test, ended=False)
            test.diagnostics = block.pending + owned.pending
        else:
            test.diagnostics = block.pending
        block.pending = []
        expected = len(block.tests) + 1
        if test.number != expected:
            where = self._where(block)
            self.problems.append(f"{where}expected test {expected}, got {test.number}")
        block.tests.append(test)

    def other(self, text: str) -> None:
        m = BAIL_OUT.match(text)
        if m:
            self.bail_out = m.group(1).strip()
            self.problems.append(f"bail out: {self.bail_out}")
        if TRAILER.match(text) and len(self.stack) == 1:
            self.trailer.append(text)
        else:
            self.stack[-1].pending.append(text)

    # -- nesting -----------------------------------------------------------------------------

    def _close_for(self, ind: int, name: str) -> _Block | None:
        """Close the subtest blocks a result line at this indent ends; return the one it owns.

        Indentation decides when the subtests are indented, as ktap.rst asks; an unindented
        "# Subtest:" block ends when its plan is complete or the result carries its name."""
        while len(self.stack) > 1:
            b, parent = self.stack[-1], self.stack[-2]
            if b.indent is None:
                if name == b.name and ind <= (parent.indent or 0):
                    return self.stack.pop()
                b.indent = ind
                return None
            if ind < b.indent:
                self.stack.pop()
                if parent.indent is not None and ind < parent.indent:
                    # The parent's own result line is missing too: close it as an error.
                    self._orphan(b, OVERTAKEN)
                    continue
                return b
            if ind == b.indent == parent.indent and (
                    (b.plan is not None and len(b.tests) >= b.plan) or (b.name and name == b.name)):
                return self.stack.pop()
            return None
        return None

    def _orphan(self, b: _Block, reason: str) -> None:
        """A subtest block whose parent's result line never came: the parent is an error."""
        parent = self.stack[-1]
        number = len(parent.tests) + 1
        test = KtapTest(number=number, name=b.name or f"test {number}", status="error",
                        reason=reason)
        test.subtests = self._finish(b, test, ended=reason == ENDED)
        test.diagnostics = parent.pending + b.pending
        parent.pending = []
        path = "/".join([*self._names(), test.name])
        self.problems.append(f"output ended inside test {number} ({path})"
                             if reason == ENDED else f"no result line for test {number} ({path})")
        parent.tests.append(test)

    def _finish(self, b: _Block, owner: KtapTest | None, *, ended: bool) -> list[KtapTest]:
        """The block's tests, with an error test for each planned one that never reported."""
        where = f"{'/'.join([*self._names(), owner.name])}: " if owner else ""
        ran = len(b.tests)
        if b.plan is None:
            if owner is None or b.tests:
                self.problems.append(f"{where}missing plan")
        elif ran != b.plan:
            self.problems.append(f"{where}planned {_tests(b.plan)}, got {ran}")
        seen = {t.number for t in b.tests}
        missing = [n for n in range(1, (b.plan or 0) + 1) if n not in seen]
        if self.bail_out is not None:
            reason = f"no result line: bailed out: {self.bail_out}"
        else:
            reason = ENDED if ended else OVERTAKEN
        absent = [KtapTest(number=n, name=f"test {n}", status="error", reason=reason)
                  for n in missing]
        if absent and b.pending:
            # What the program printed last is the best clue to why the next test never ended.
            absent[0].diagnostics, b.pending = b.pending, []
        return sorted(b.tests + absent, key=lambda t: t.number) if absent else list(b.tests)

    def _names(self) -> list[str]:
        """Names of the open parents above the innermost block (for messages only)."""
        return [b.name or f"test {len(p.tests) + 1}"
                for p, b in zip(self.stack, self.stack[1:], strict=False)]

    def _where(self, block: _Block) -> str:
        return "" if block is self.stack[0] else f"{'/'.join(self._names())}: "

    def end(self) -> tuple[list[KtapTest], list[str], str]:
        while len(self.stack) > 1:
            b = self.stack.pop()
            self._orphan(b, ENDED)
        top = self.stack[0]
        tests = self._finish(top, None, ended=True)
        return tests, top.pending + self.trailer, top.skip_reason


def parse_ktap(lines: Iterable[str]) -> KtapResult:
    """Tests and subtests from a program's output; never raises on what the program printed.

    Lines before the first version line are console noise and are dropped; if there is no
    version line (kselftest prints none when KSFT_TAP_LEVEL is set), the whole output is
    read. A planned test with no result line becomes an "error" test."""
    raw = list(lines)
    # A last line without the newline every other line has was cut off mid-write: it may
    # look like "ok 7" of what was going to be "ok 7 # SKIP ...", so it is not believed.
    torn = len(raw) > 1 and not raw[-1].endswith("\n") and raw[-2].endswith("\n")
    tail = clean(raw.pop()).strip() if torn else ""
    cleaned = [clean(line) for line in raw]
    start = next((i for i, line in enumerate(cleaned) if VERSION.match(line.strip())), None)
    p = _Parser()
    if start is None:
        version, body, p.stack = None, cleaned, [_Block(indent=0)]
    else:
        version = cleaned[start].strip()
        body, p.stack = cleaned[start + 1:], [_Block(indent=_indent(cleaned[start]))]
    seen_ktap = start is not None
    for line in body:
        text = line.strip()
        if not text:
            continue
        ind = _indent(line)
        if VERSION.match(text):
            p.version(ind, text)
        elif m := SUBTEST.match(text):
            p.subtest(ind, m.group(1).strip())
        elif m := PLAN.match(text):
            seen_ktap = True
            p.plan(ind, m)
        elif m := RESULT.match(text):
            seen_ktap = True
            p.result(ind, _result_line(m))
        else:
            p.other(text)
    if tail:
        p.problems.append(f"last line cut off: {tail!r}")
        p.other(tail)
    plan = p.stack[0].plan
    tests, diagnostics, reason = p.end()
    problems = p.problems
    if not seen_ktap:
        problems = ["no KTAP output"]
    elif version is None:
        problems.insert(0, "missing version line")
    return KtapResult(version=version, plan=plan, tests=tests, problems=problems,
                      reason=reason, diagnostics=diagnostics)


def flatten(result: KtapResult, prefix: str = "", *,
            numbers: bool = False) -> list[tuple[str, KtapTest]]:
    """Every test and subtest as (path, test); path joins names with '/', e.g. 'suite/case',
    or with numbers=True test numbers with '.', e.g. '2.1'.

    Parents come before their subtests, in output order. Names are not unique in kselftest
    output (mkdirty prints five tests with one name), so name paths may repeat; number paths
    do not, and stay the same when a test's name changes with its outcome."""
    out: list[tuple[str, KtapTest]] = []
    sep = "." if numbers else "/"

    def walk(tests: list[KtapTest], base: str) -> None:
        for t in tests:
            label = str(t.number) if numbers else t.name
            path = f"{base}{sep}{label}" if base else label
            out.append((path, t))
            walk(t.subtests, path)

    walk(result.tests, prefix.rstrip(sep))
    return out


def program_result(result: KtapResult, exit_code: int | None) -> str:
    """One status for a whole program the way kselftest's runner judges it: exit 0 -> pass,
    4 (KSFT_SKIP) -> skip, None (killed/crashed/no exit) -> error, else fail; but a KTAP 'not ok'
    at top level makes it fail even with exit 0.

    A negative code (Python's "killed by signal N") counts as None. kselftest's runner.sh looks
    at the exit code alone; the 'not ok' rule catches programs that print a failure and still
    return 0 (those that end with `return 0` instead of ksft_finished())."""
    if exit_code is None or exit_code < 0:
        return "error"
    if any(t.status == "fail" for t in result.tests):
        return "fail"
    if exit_code == 0:
        return "pass"
    if exit_code == KSFT_SKIP:
        return "skip"
    return "fail"
