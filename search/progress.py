"""One status line per event on long searches: trial i/N, epoch, best so far, time left."""
import sys
import time


def clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def kind_of(config: dict) -> str:
    """Trials of one kind take about as long: the grid's row, else the model family."""
    return str(config.get("cell_model", config.get("model", "")))


class Progress:
    def __init__(self, total: int, epochs: int, stream=None):
        self.total, self.epochs, self.stream = total, epochs, stream
        self.done = 0
        self.best = float("inf")
        self.start = time.perf_counter()
        self.trial_start = self.start
        self.label = ""
        self.kind, self.running = None, False
        self.plan: list | None = None  # kinds of the trials still to run, when known in advance
        self.took: dict = {}  # kind -> seconds of its finished trials
        self.seconds_left = None  # the search's --timeout clock, when it has one
        self.used = None  # the study's wall time so far, over every worker and resume
        # A fixed list (manual) or Keras Tuner's max_trials counts a refused config as one of its trials;
        # Optuna's --trials does not (its engine sets False).
        self.counts_refused = True

    def plan_kinds(self, kinds: list) -> None:
        """A fixed list of trials (a grid): estimate time left per kind, since a NASNet cell is not a small CNN's."""
        self.plan = list(kinds)
        self.total = len(self.plan)

    def _left(self) -> str:
        clock_left = self.seconds_left() if self.seconds_left else None
        estimate = self._estimate()
        if clock_left is not None and (estimate is None or clock_left < estimate):
            return f"{clock(clock_left)} (--timeout)"
        return "?" if estimate is None else clock(estimate)

    def _estimate(self) -> float | None:
        timed = [s for seconds in self.took.values() for s in seconds]
        if not timed:
            return None
        per_trial = sum(timed) / len(timed)
        if self.plan is None:
            return per_trial * max(self.total - self.done, 0)
        mean = {k: sum(v) / len(v) for k, v in self.took.items()}
        ahead = self.plan[self.done:]  # a running trial first
        left = sum(mean.get(k, per_trial) for k in ahead)
        if ahead and self.running:
            left -= min(time.perf_counter() - self.trial_start, mean.get(ahead[0], per_trial))
        return left

    def _say(self, text: str) -> None:
        best = f"{self.best:.3f}" if self.best < float("inf") else "-"
        elapsed = clock(time.perf_counter() - self.start)
        if self.used is not None:
            elapsed += f" (study {clock(self.used())})"
        print(f"[{self.label}] {text} | best {best} px | elapsed {elapsed}"
              f" | ~{self._left()} left", file=self.stream or sys.stdout, flush=True)

    def trial_started(self, engine: str, number: int, config: dict, rung: str | None = None) -> None:
        self.label = f"{engine} {self.done + 1}/{self.total}"
        if not self.running:  # a trial that climbs rungs runs one step after another
            self.trial_start = time.perf_counter()
        self.kind, self.running = kind_of(config), True
        model = config.get("model", "")
        self._say(f"trial #{number} {model} starts" + (f" at rung {rung} epochs" if rung else ""))

    def refused(self, engine: str, number: int, why: str) -> None:
        """A config refused before training: it took no time, so it says nothing of the time left."""
        self.label = f"{engine} {self.done + 1}/{self.total}"
        self.running = False
        self.done += self.counts_refused
        self._say(f"trial #{number} refused before training: {why}")

    def rung_ended(self, rung: str, rmse: float) -> None:
        self._say(f"rung {rung} epochs: val_rmse {rmse:.3f}")

    def note(self, text: str) -> None:
        """Something the running trial decided that a watcher should know (a re-planned schedule)."""
        self._say(text)

    def epoch(self, epoch: int, epochs: int, val_rmse: float) -> None:
        self._say(f"epoch {epoch + 1}/{epochs} val_rmse {val_rmse:.3f}")

    def trial_ended(self, status: str, rmse: float | None = None) -> None:
        self.done += 1
        self.running = False
        self.took.setdefault(self.kind, []).append(time.perf_counter() - self.trial_start)
        if rmse is not None and rmse < self.best:
            self.best = rmse
        took = clock(time.perf_counter() - self.trial_start)
        self._say(f"{status}{f' rmse {rmse:.3f}' if rmse is not None else ''} in {took}")
