"""One status line per event on long searches: trial i/N, epoch, best so far, time left."""
import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total: int, epochs: int, stream=None):
        self.total, self.epochs, self.stream = total, epochs, stream
        self.done = 0
        self.best = float("inf")
        self.start = time.perf_counter()
        self.trial_start = self.start
        self.label = ""

    def _left(self) -> str:
        if not self.done:
            return "?"
        per_trial = (time.perf_counter() - self.start) / self.done
        return _clock(per_trial * max(self.total - self.done, 0))

    def _say(self, text: str) -> None:
        best = f"{self.best:.3f}" if self.best < float("inf") else "-"
        print(f"[{self.label}] {text} | best {best} px | elapsed {_clock(time.perf_counter() - self.start)}"
              f" | ~{self._left()} left", file=self.stream or sys.stdout, flush=True)

    def trial_started(self, engine: str, number: int, config: dict) -> None:
        self.label = f"{engine} {self.done + 1}/{self.total}"
        self.trial_start = time.perf_counter()
        model = config.get("model", "")
        self._say(f"trial #{number} {model} starts")

    def epoch(self, epoch: int, epochs: int, val_rmse: float) -> None:
        self._say(f"epoch {epoch + 1}/{epochs} val_rmse {val_rmse:.3f}")

    def trial_ended(self, status: str, rmse: float | None = None) -> None:
        self.done += 1
        if rmse is not None and rmse < self.best:
            self.best = rmse
        took = _clock(time.perf_counter() - self.trial_start)
        self._say(f"{status}{f' rmse {rmse:.3f}' if rmse is not None else ''} in {took}")
