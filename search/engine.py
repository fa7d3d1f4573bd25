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

    def used(self) -> float:
        return self.clock.used()

    def seconds_left(self) -> float | None:
        return None if self.timeout is None else max(self.timeout - self.used(), 0.0)

    def expired(self) -> bool:
        left = self.seconds_left()
        return left is not None and left <= 0


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
