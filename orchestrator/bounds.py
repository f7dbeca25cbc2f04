"""How much a guest may write, and reading it back bounded. The largest honest guest of the
test suite writes a console of tens of KiB and an agent log of a few KiB (docs/sandbox.md has
the measured figures); the caps are far above that, and far below what a flooding guest
writes in a minute. A guest over a cap is ended and its case is an `error` ("console
flood: 9.1 MB in 8 s"); what it wrote is kept up to the cap, then a marker says it was cut."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

MB = 1 << 20
CONSOLE_CAP = 8 * MB  # a guest's serial console
AGENT_CAP = 8 * MB  # a guest's agent channel
LINE_CAP = 1 * MB  # one line of either (a gcov event of the agent is one long line)
LIST_CAP = 10_000  # entries of one kind the parser keeps from a console


class Flood(Exception):
    """A guest wrote more than a cap: the message says what and how fast."""


class Budget:
    """What one guest has written so far, checked as it runs."""

    def __init__(self, console: Path, start: float):
        self.console, self.start, self.agent = console, start, 0

    def check(self, agent_bytes: int = 0) -> None:
        self.agent += agent_bytes
        try:
            size = os.stat(self.console).st_size
        except FileNotFoundError:
            size = 0
        for what, n, cap in (("console", size, CONSOLE_CAP), ("agent", self.agent, AGENT_CAP)):
            if n > cap:
                raise Flood(f"{what} flood: {n / 1e6:.1f} MB in "
                            f"{time.monotonic() - self.start:.0f} s (the cap is "
                            f"{cap // MB} MiB): the guest was ended")


def cut_file(path: Path, cap: int, what: str) -> None:
    """A log past its cap cut back to it, with a line that says so."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return
    if size > cap:
        with open(path, "r+b") as f:
            f.truncate(cap)
            f.seek(cap)
            f.write(f"\n[farm: {what} cut at {cap // MB} MiB of {size / 1e6:.1f} MB]\n"
                    .encode())


def cut_line(line: str) -> str:
    if len(line) <= LINE_CAP:
        return line
    return line[:LINE_CAP] + f" [farm: line cut at {LINE_CAP // MB} MiB]\n"


def bounded_lines(lines: Iterable[str], cap: int) -> Iterator[str]:
    """A log's lines, each cut at LINE_CAP, up to cap characters in all: a log written before
    the caps (or by hand) is read in bounded memory."""
    total = 0
    for line in lines:
        line = cut_line(line)
        total += len(line)
        if total > cap:
            yield f"[farm: the rest of the log, past {cap // MB} MiB, is not read]\n"
            return
        yield line


def keep(items: list, item) -> None:
    """Append while the list holds fewer than LIST_CAP entries."""
    if len(items) < LIST_CAP:
        items.append(item)
