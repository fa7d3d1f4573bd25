"""What a sampler is shown: one trial per config.

ASHA's promotions (search/pruners.py) leave a config as two trials: the origin, pruned at the rung where it
waited, and the promotion that went on from there. A duplicate (the same values proposed again) is a second
copy too. TPE would count each copy as an observation, so the best configs would sit in its "bad" group as
pruned origins beside their own good result. `OneTrialPerConfig` wraps any sampler and hides the copies
that a later trial supersedes; pruners, callbacks and the dashboard still see every trial.
"""
from __future__ import annotations

import optuna


def superseded(trials) -> set[int]:
    """Numbers of the trials a sampler should not see: promoted origins whose promotion has ended, and
    duplicates of a config already tried."""
    from optuna.trial import TrialState
    hidden = {t.number for t in trials if "duplicate_of" in t.user_attrs}
    hidden |= {t.user_attrs["promoted_from"] for t in trials if "promoted_from" in t.user_attrs
               and t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "duplicate_of" not in t.user_attrs}
    return hidden


class _View:
    """The study, less the superseded trials. Delegates everything else, as Optuna's _BracketStudy does for
    Hyperband's brackets (optuna/pruners/_hyperband.py), but without a storage lookup per sample."""

    def __init__(self, study):
        self._study = study

    def __getattr__(self, name):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy=True, states=None, use_cache=False):
        import copy
        everything = self._study._get_trials(deepcopy=False, use_cache=use_cache)  # one read, filtered here
        hidden = superseded(everything)
        shown = [t for t in everything if t.number not in hidden and (states is None or t.state in states)]
        return copy.deepcopy(shown) if deepcopy else shown

    def get_trials(self, deepcopy=True, states=None):
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self):
        return self.get_trials()


class OneTrialPerConfig(optuna.samplers.BaseSampler):
    def __init__(self, inner):
        self.inner = inner

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(_View(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(_View(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(_View(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.inner.reseed_rng()
