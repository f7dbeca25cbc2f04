"""How the farm stops: SIGTERM and SIGHUP are taken as Ctrl-C is (its children stopped,
what was gathered reported), a second signal waits while the reports are written, and every
child the farm starts dies with it, however it dies."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a CI job cancelled, a terminal closed): handled as Ctrl-C is."""

    def __init__(self, how: str):
        super().__init__(how)
        self.how = how


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop(signum, _frame):
    raise Terminated(signal.Signals(signum).name)


def handle_stop_signals() -> None:
    """SIGTERM and SIGHUP end the farm the way Ctrl-C does: its children are stopped, what
    was gathered is reported. SIGINT gets Python's default handler back, even where the
    farm was started with it ignored (in the background of a script)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """While the farm writes its reports after an interruption, a second Ctrl-C or SIGTERM
    waits: the reports take a moment, and half-written reports help nobody."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    sigs = (signal.SIGINT, *STOP_SIGNALS)
    old = {s: signal.signal(s, lambda n, f: pending.append(n)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            os.kill(os.getpid(), pending[0])


PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent: int) -> None:
    """In a child between fork and exec: be killed when the parent dies, however it dies
    (SIGKILL included), and stop at once if it is already gone."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def child_setup(parent: int) -> Callable[[], None]:
    return lambda: die_with_parent(parent)
