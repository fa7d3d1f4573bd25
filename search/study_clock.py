"""A search's time budget belongs to its study: wall time while at least one of its workers runs.

Each worker process keeps one interval [start, last tick] in the study's own store; the time used is
the length of the union of every worker's intervals, over every session. So a search killed and resumed
goes on with the time it had left, and N workers spend N times the compute in the same wall time. A
killed worker's interval ends at its last tick. The clock ticks when the budget is read (each epoch, each
trial, the progress line), at most once per TICK_S, so a kill loses at most an epoch's time or TICK_S.
"""
from __future__ import annotations

import os
import socket
import time

TICK_S = 5.0
PREFIX = "clock:"


def union_seconds(intervals) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


class LocalClock:
    """The process's own wall time: for engines whose store holds no clock (manual, Keras Tuner)."""

    def __init__(self):
        self.started = time.time()

    def used(self) -> float:
        return time.time() - self.started

    def tick(self) -> None:
        pass


class StudyClock:
    """Intervals kept as the Optuna study's user attributes (every Optuna storage has them)."""

    def __init__(self, study, start: float | None = None, now=time.time):
        """`start`: when this process began spending the budget (before its data loaded), if not now."""
        self.study, self.now = study, now
        self.start = now() if start is None else start
        self.key = f"{PREFIX}{socket.gethostname()}:{os.getpid()}:{self.start:.3f}"
        self.last_tick = None
        self.tick(force=True)

    def intervals(self) -> list:
        attrs = self.study.user_attrs  # one read; another worker's ticks arrive with it
        return [tuple(v) for k, v in attrs.items() if k.startswith(PREFIX) and k != self.key] + [(self.start, self.now())]

    def tick(self, force: bool = False) -> None:
        now = self.now()
        if force or self.last_tick is None or now - self.last_tick >= TICK_S:
            self.study.set_user_attr(self.key, [self.start, now])
            self.last_tick = now

    def used(self) -> float:
        self.tick()
        return union_seconds(self.intervals())
