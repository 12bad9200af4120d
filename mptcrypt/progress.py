"""Progress of long work (`mptcrypt attack`, `mptcrypt handover`): a rich progress bar on a terminal, one line
per step otherwise (logs, CI, pipes), both with an ETA.

Work is measured in any unit (attack cells, seconds of a handover timeline); the ETA assumes the rest goes at
the rate so far: elapsed * (total - done) / done. Progress goes to stderr, so --json output on stdout stays clean.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def clock_text(seconds: float | None) -> str:
    """83.4 -> '1:23'; 3725 -> '1:02:05'; None -> '?'."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """`update(done, label)` as work advances, `close()` at the end (or use it as a context manager)."""

    def __init__(self, total: float, title: str, stream: TextIO | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.title = title
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self._bar = self._task = None
        if tty is None:
            tty = self.stream.isatty()
        if tty:
            try:
                from rich.console import Console
                from rich import progress as rp
            except ImportError:
                pass
            else:
                self._bar = rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(),
                                        rp.TaskProgressColumn(), rp.TimeElapsedColumn(), rp.TextColumn("ETA"),
                                        rp.TimeRemainingColumn(), console=Console(file=self.stream))
                self._bar.start()
                self._task = self._bar.add_task(title, total=total)

    def eta(self, done: float) -> float | None:
        """Seconds left at the rate so far; None before any work is done."""
        if done <= 0:
            return None
        return max(0.0, (self.clock() - self.started) * (self.total - done) / done)

    def line(self, done: float, label: str) -> str:
        """The non-terminal line for one step."""
        elapsed = self.clock() - self.started
        pct = 100.0 * done / self.total if self.total else 100.0
        return (f"{self.title}: [{done:g}/{self.total:g}] {pct:3.0f}% {label}  "
                f"elapsed {clock_text(elapsed)}  ETA {clock_text(self.eta(done))}")

    def update(self, done: float, label: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=f"{self.title}: {label}")
        else:
            print(self.line(done, label), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
