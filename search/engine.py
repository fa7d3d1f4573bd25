"""What every engine is, and how one engine runs one study.

To add an engine: write search/<name>_engine.py with a subclass of `Engine` and add one line to
search/engines.py. An engine only decides which configs to try; `TrialRunner` trains, measures,
tracks and displays each one.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from search.study_clock import LocalClock
from train.errors import how_stopped


@dataclass
class Budget:
    trials: int
    timeout: float | None  # seconds for the whole search, all engines together
    seed: int
    study: str
    # the process's clock until an engine puts in its study's own (search/study_clock.py)
    clock: object = field(default_factory=LocalClock)
    # the most seconds a trial here took from its start to the end of its first epoch (0 until one has): with less
    # left, a new trial may not finish one epoch (the quick start's second trial spent 25 s past the deadline for
    # a 1-epoch model); the slowest, since the next config may be as big
    first_epoch_s: float = 0.0

    def used(self) -> float:
        return self.clock.used()

    def seconds_left(self) -> float | None:
        return None if self.timeout is None else max(self.timeout - self.used(), 0.0)

    def expired(self) -> bool:
        """No time for another trial: none left, or less than a trial needs to finish its first epoch."""
        left = self.seconds_left()
        return left is not None and left <= self.first_epoch_s

    def first_epoch_took(self, seconds: float) -> None:
        self.first_epoch_s = max(self.first_epoch_s, seconds)


class Engine:
    """A way to pick configs: a name, a description for the parent run, and `run`."""
    name = "engine"

    @classmethod
    def from_args(cls, args) -> "Engine":
        raise NotImplementedError

    def describe(self) -> dict:
        return {}

    def run(self, space, runner, budget: Budget) -> None:
        raise NotImplementedError


def run_engine(engine: Engine, space, tracker, data, settings, budget: Budget, params: dict,
               key) -> KeyboardInterrupt | None:
    """One engine over one study: parent run, dead-trial cleanup, the search. The interrupt (Ctrl-C, or SIGTERM as
    train.errors.Terminated) that stopped it, if one did."""
    from search.progress import Progress
    from search.runner import TrialRunner
    key.check(tracker, budget.study)
    parent = tracker.open_search(budget.study, engine.name,
                                 {**params, "engine": engine.name, **engine.describe()}, key.tags())
    for run in tracker.fail_dead_trials(parent):
        print(f"[{engine.name}] MLflow run {run.info.run_name} was cut off by a killed process: marked failed")
    progress = Progress(budget.trials, settings.epochs)
    progress.seconds_left = budget.seconds_left if budget.timeout else None
    progress.used = budget.used
    runner = TrialRunner(data, settings, tracker, progress, budget.study, parent, key)
    runner.seconds_left = progress.seconds_left
    runner.on_first_epoch = budget.first_epoch_took
    try:
        if budget.expired():
            print(f"[{engine.name}] --timeout reached before this engine started", flush=True)
        else:
            engine.run(space, runner, budget)
    except KeyboardInterrupt as exc:
        tracker.close_search(parent, "KILLED", study_time(budget))
        print(f"\n{how_stopped(exc)[0]}: finished trials are saved; run the same command to resume", file=sys.stderr)
        return exc
    tracker.close_search(parent, "FINISHED", study_time(budget))
    return None


def study_time(budget: Budget) -> float | None:
    """The study's own wall time, when its engine keeps a clock in the study (not a process's own)."""
    if isinstance(budget.clock, LocalClock):
        return None
    try:
        return budget.used()
    except Exception:  # a store gone away must not lose the search's status
        return None
