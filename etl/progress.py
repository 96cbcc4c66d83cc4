"""Progress while sending: a rich progress bar on a terminal, plain log lines otherwise.

The sender calls ``advance(outcome)`` once per finished capture; nothing here touches the
network or the ledger, and nothing it prints carries a secret (only counts and rates).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Protocol

from etl.model import CaptureOutcome


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, outcome: CaptureOutcome) -> None: ...
    def stop(self) -> None: ...


class LogProgress:
    """One line every ``every`` seconds: done/total, rate, failures, ETA."""

    def __init__(self, stream: IO[str] | None = None, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.every, self.clock = every, clock
        self.counts: Counter[str] = Counter()
        self.total = 0

    def start(self, total: int) -> None:
        self.total, self.t0 = total, self.clock()
        self.last = self.t0

    def advance(self, outcome: CaptureOutcome) -> None:
        self.counts[outcome.status] += 1
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        done = sum(self.counts.values())
        rate = done / (now - self.t0) if now > self.t0 else 0.0
        eta = (self.total - done) / rate if rate else 0.0
        bad = sum(n for s, n in self.counts.items() if s != "captured")
        return (f"progress: {done}/{self.total} captures, {rate:.1f}/s, {bad} not captured, "
                f"ETA {eta:.0f} s")

    def stop(self) -> None:
        if self.total:
            self.stream.write(self.line(self.clock()) + "\n")


class BarProgress:
    """A rich progress bar (stderr) with rate, ETA and the count of failures."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("capturing"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]:.0f}/s"), TextColumn("{task.fields[bad]} failed"),
            TimeRemainingColumn(), transient=False)
        self.bad = 0

    def start(self, total: int) -> None:
        self.t0 = time.monotonic()
        self.done = 0
        self.task = self.bar.add_task("send", total=total, rate=0.0, bad=0)
        self.bar.start()

    def advance(self, outcome: CaptureOutcome) -> None:
        self.done += 1
        if outcome.status != "captured":
            self.bad += 1
        elapsed = time.monotonic() - self.t0
        self.bar.update(self.task, advance=1, bad=self.bad,
                        rate=self.done / elapsed if elapsed > 0 else 0.0)

    def stop(self) -> None:
        self.bar.stop()


def default_progress() -> Progress:
    return BarProgress() if sys.stderr.isatty() else LogProgress()
