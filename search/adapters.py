"""Translate a neutral space (spaces/base.py) into each engine's own calls."""
import math

from spaces.base import Categorical, Fixed, Float, Int, Suggest


def declare(space, suggest: Suggest) -> None:
    """Register every parameter, active or not (conditional ones under their condition)."""
    for p in space.params:
        getattr(suggest, type(p).__name__.lower())(p)


class OptunaSuggest:
    def __init__(self, trial):
        self.trial = trial

    def int(self, p: Int):
        return self.trial.suggest_int(p.name, p.low, p.high, step=p.step, log=p.log)

    def float(self, p: Float):
        return self.trial.suggest_float(p.name, p.low, p.high, log=p.log)

    def categorical(self, p: Categorical):
        return self.trial.suggest_categorical(p.name, list(p.choices))

    def fixed(self, p: Fixed):
        return p.value  # not a hyperparameter to Optuna: it never varies


class KerasTunerSuggest:
    def __init__(self, hp):
        self.hp = hp

    def _scoped(self, p, make):
        if p.when is None:
            return make()
        with self.hp.conditional_scope(p.when[0], list(p.when[1])):
            return make()

    def int(self, p: Int):
        return self._scoped(p, lambda: self.hp.Int(p.name, p.low, p.high, step=p.step,
                                                   sampling="log" if p.log else "linear"))

    def float(self, p: Float):
        return self._scoped(p, lambda: self.hp.Float(p.name, p.low, p.high, sampling="log" if p.log else "linear"))

    def categorical(self, p: Categorical):
        if set(p.choices) <= {True, False} and all(isinstance(c, bool) for c in p.choices):
            # hp.Choice would turn booleans into 0/1 and the engines would log different types.
            return self._scoped(p, lambda: self.hp.Boolean(p.name, default=p.choices[0]))
        return self._scoped(p, lambda: self.hp.Choice(p.name, list(p.choices)))

    def fixed(self, p: Fixed):
        return p.value


class RandomSuggest:
    """Uniform draws from a seeded generator: the configs of a learning-curve table (bench.curves)."""
    def __init__(self, rng):
        self.rng = rng

    def int(self, p: Int):
        if p.log:
            return int(round(math.exp(self.rng.uniform(math.log(p.low), math.log(p.high)))))
        return int(p.low + p.step * self.rng.integers(0, (p.high - p.low) // p.step + 1))

    def float(self, p: Float):
        if p.log:
            return float(math.exp(self.rng.uniform(math.log(p.low), math.log(p.high))))
        return float(self.rng.uniform(p.low, p.high))

    def categorical(self, p: Categorical):
        return p.choices[int(self.rng.integers(0, len(p.choices)))]

    def fixed(self, p: Fixed):
        return p.value
