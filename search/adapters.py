"""Translate a neutral space (spaces/base.py) into each engine's own calls."""
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
