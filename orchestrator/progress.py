"""What the user sees while the farm works: lines that stay and one status line (on stderr),
redrawn on a terminal and printed every few seconds elsewhere (CI logs); and what a command
answers with on stdout (say). No control character of what they show acts on the terminal."""

from __future__ import annotations

import os
import sys
import time

from .inert import inert


def fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    def __init__(self, stream=None, interval: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.interval = interval
        self.start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def elapsed(self) -> str:
        return fmt_seconds(time.monotonic() - self.start)

    def _write(self, text: str) -> None:
        """A reader that went away (`farm run 2>&1 | head`) never stops the run."""
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe, a terminal that hung up
            self.stream = None

    def status(self, text: str, force: bool = False) -> None:
        """A transient status: redrawn in place on a terminal, throttled in a log."""
        now, text = time.monotonic(), inert(text)
        if self.tty:
            self._write(f"\r\033[K[{self.elapsed()}] {text}")
            self._drawn = True
        elif force or now - self._last >= self.interval:
            self._write(f"[{self.elapsed()}] {text}\n")
            self._last = now

    def say(self, text: str) -> None:
        """A line that stays."""
        text = inert(text)
        if self._drawn:
            self._write("\r\033[K")
            self._drawn = False
        self._write(f"[{self.elapsed()}] {text}\n")


def say(text: str) -> None:
    """Print to stdout (a summary, a plan); a reader that has gone (`farm run | head`)
    changes nothing else: the run still writes its files and keeps its exit code."""
    try:
        print(inert(text), end="", flush=True)
    except OSError:  # a closed pipe, a terminal that hung up
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
