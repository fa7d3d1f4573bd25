"""A PriorBand-style sampler: near a preset, near the incumbent, or at random, a third each.

Hand-made presets are a prior on where good configs lie; the incumbent (the best trial so far, at the
highest budget it reached) is evidence. Mixing both with uniform draws keeps the search from
collapsing onto either. With no presets (--no-presets) it mutates the incumbent or draws at random.
"""
from __future__ import annotations

import math

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState

KEEP_CHOICE = 0.75  # a mutated categorical keeps the anchor's choice this often
SPREAD = 0.15       # a mutated number moves by this share of its (log) range, one standard deviation


def incumbent(study) -> dict | None:
    """The params of the best trial at the highest budget any trial reached, completed or pruned."""
    best, best_key = None, None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.state == TrialState.COMPLETE and t.values:
            key = (0, math.inf, t.values[0])  # completed trials come first
        elif t.intermediate_values:
            step = max(t.intermediate_values)
            key = (1, -step, t.intermediate_values[step])
        else:
            continue
        if best_key is None or key < best_key:
            best, best_key = t.params, key
    return best


class PriorSampler(BaseSampler):
    def __init__(self, presets=(), seed: int | None = None):
        self.presets = [dict(p) for p in presets]
        self.rng = np.random.default_rng(seed)
        self.random = RandomSampler(seed=seed)
        self.anchors: dict[int, dict | None] = {}

    def reseed_rng(self) -> None:
        self.rng = np.random.default_rng()
        self.random.reseed_rng()

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def before_trial(self, study, trial) -> None:
        sources = [None]  # uniform
        if self.presets:
            sources.append(self.presets[int(self.rng.integers(len(self.presets)))])
        best = incumbent(study)
        if best:
            sources.append(best)
        self.anchors[trial.number] = sources[int(self.rng.integers(len(sources)))]

    def after_trial(self, study, trial, state, values) -> None:
        self.anchors.pop(trial.number, None)

    def sample_independent(self, study, trial, name, distribution):
        anchor = self.anchors.get(trial.number)
        known = isinstance(distribution, (CategoricalDistribution, FloatDistribution, IntDistribution))
        if anchor is None or name not in anchor or not known:
            return self.random.sample_independent(study, trial, name, distribution)
        return self._mutate(anchor[name], distribution)

    def _mutate(self, value, dist):
        if isinstance(dist, CategoricalDistribution):
            if value in dist.choices and self.rng.random() < KEEP_CHOICE:
                return value
            return dist.choices[int(self.rng.integers(len(dist.choices)))]
        if isinstance(dist, (FloatDistribution, IntDistribution)):
            lo, hi, x = float(dist.low), float(dist.high), float(min(max(value, dist.low), dist.high))
            if dist.log:
                lo, hi, x = math.log(lo), math.log(hi), math.log(x)
            x = float(np.clip(x + self.rng.normal(0, SPREAD * (hi - lo)), lo, hi))
            x = math.exp(x) if dist.log else x
            if isinstance(dist, IntDistribution):
                step = dist.step or 1
                x = int(dist.low + round((x - dist.low) / step) * step)
                return int(min(max(x, dist.low), dist.high))
        return float(min(max(x, dist.low), dist.high))
