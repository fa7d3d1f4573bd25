"""The sampler registry: how Optuna picks the next config. One line per sampler.

To add one: write its factory (in its own file if it is new code, as search/prior_sampler.py) and add
a line to SAMPLERS. A factory takes (space, seed, presets) and returns an Optuna sampler; `presets`
is empty under --no-presets, so nothing hand-made guides the search then.
"""
from __future__ import annotations

from spaces.base import Categorical, Fixed, Float, Int
from train.errors import UserError


def grid_of(space) -> dict:
    """A small grid for GridSampler: every choice, and the ends and middle of each range."""
    grid = {}
    for p in space.params:
        if isinstance(p, Categorical):
            grid[p.name] = list(p.choices)
        elif isinstance(p, Int):
            mid = p.low + ((p.high - p.low) // 2 // p.step) * p.step
            grid[p.name] = sorted({p.low, mid, p.high})
        elif isinstance(p, Float):
            mid = (p.low * p.high) ** 0.5 if p.log else (p.low + p.high) / 2
            grid[p.name] = [p.low, mid, p.high]
        elif not isinstance(p, Fixed):
            raise TypeError(p)
    return grid


def _tpe(space, seed, presets):
    import warnings

    import optuna
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # `group` is "experimental"
    # group=True: the space is conditional (filters_k only when blocks >= k); without it Optuna 5's
    # multivariate TPE falls back to independent sampling for every parameter outside the common part.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=8)


def _tpe_plain(space, seed, presets):
    import optuna
    return optuna.samplers.TPESampler(seed=seed)  # Optuna's defaults: the old default of search.run


def _random(space, seed, presets):
    import optuna
    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(space, seed, presets):
    import optuna
    # CMA-ES handles numbers only; categorical parameters fall back to random sampling.
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _nsga2(space, seed, presets):
    import optuna
    return optuna.samplers.NSGAIISampler(seed=seed)


def _grid(space, seed, presets):
    import optuna
    return optuna.samplers.GridSampler(grid_of(space), seed=seed)


def _prior(space, seed, presets):
    from search.prior_sampler import PriorSampler
    return PriorSampler(presets, seed=seed)


SAMPLERS = {"tpe": _tpe, "tpe-plain": _tpe_plain, "random": _random, "prior": _prior, "cmaes": _cmaes,
            "nsga2": _nsga2, "grid": _grid}


def make_sampler(name: str, space, seed: int, presets=()):
    """The named sampler, shown one trial per config (search/sampler_view.py); the sampler itself is `.inner`."""
    from search.sampler_view import OneTrialPerConfig
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
    return OneTrialPerConfig(SAMPLERS[name](space, seed, list(presets)))
