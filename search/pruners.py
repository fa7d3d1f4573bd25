"""The pruner registry: how a search spends its epochs. One line per pruner.

Two kinds of multi-fidelity live here:
- *rungs* (`asha`, the default): a config is trained at a few epoch budgets, each time from scratch with
  its learning-rate schedule sized to that budget, and goes on to the next budget only if it is in the
  best third of the configs measured at that budget so far (asynchronous successive halving). A short
  run then ends its schedule as a long one does, so its rank is a forecast (bench/curves measures how
  good: bench/results.md, "Rungs").
- *epochs* (`hyperband`, `halving`, `median`): one run with one schedule over the full budget; the
  pruner reads its per-epoch validation RMSE and may stop it midway.

To add a pruner: write a factory (epochs, rungs) -> Optuna pruner and add a line to PRUNERS; put its
name in RUNG_PRUNERS if it expects one report per rung rather than one per epoch.
"""
from __future__ import annotations

import math

import optuna

from train.errors import UserError

ETA = 3  # each rung keeps the best third


def default_rungs(epochs: int) -> list[int]:
    """Budgets below the full one, a factor ETA apart, the lowest a ninth of it: 30 -> [3, 10]."""
    rungs = sorted({round(epochs / ETA ** k) for k in (2, 1)} - {0})
    return [r for r in rungs if 1 <= r < epochs]


def parse_rungs(text: str | None, epochs: int) -> list[int]:
    if text is None:
        return default_rungs(epochs)
    try:
        rungs = sorted({int(r) for r in text.split(",") if r.strip()})
    except ValueError:
        raise UserError(f"--rungs {text!r}: expected comma-separated epoch counts, e.g. 3,10") from None
    if not rungs or rungs[0] < 1:
        raise UserError(f"--rungs {text!r}: every rung must be at least 1 epoch")
    if rungs[-1] >= epochs:
        raise UserError(f"--rungs {text!r}: rung {rungs[-1]} is not below --epochs {epochs} (the full budget)")
    return rungs


class RungPruner(optuna.pruners.BasePruner):
    """Successive halving over rung budgets: at each rung a trial goes on only if its value there is among
    the best 1/ETA of the values reported at that rung so far (itself included). Until ETA trials have
    reached a rung, only a trial as good as the best goes on (Optuna cannot pause a trial to wait).
    A single bracket: the sampler sees every trial, unlike Hyperband's (optuna/pruners/__init__.py).

    Warm starts skip the rungs, so alone they would leave the first arrivals at each rung unopposed: in the
    2-hour default search two random configs (rung-8 val 5.84 and 4.32 px) went on to the full budget, 25
    minutes of 120, beside a preset at 1.42. So a warm start's validation RMSE at a rung's epoch of its own
    full run (`bar_R`, mid-schedule, hence no better than that preset would score with a schedule sized to
    R) is a bar: a trial worse at rung R than the best warm start was at epoch R does not go on."""

    def __init__(self, rungs, eta: int = ETA):
        self.rungs, self.eta = list(rungs), eta

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        value = trial.intermediate_values[step]
        if not math.isfinite(value):
            return True
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        bars = [b for t in trials if math.isfinite(b := t.user_attrs.get(f"bar_{step}", math.inf))]
        if bars and value > min(bars):
            return True
        others = [t.user_attrs[f"rung_{step}"] for t in trials if _counts(t, step)]
        values = sorted([*others, value])
        keep = max(len(values) // self.eta, 1)
        return value > values[keep - 1]


def _counts(t, step) -> bool:
    """One measurement per config at this rung: not a duplicate's copy, not a failed attempt whose retry carries
    its value on, not another pruner's per-epoch report (a resumed hyperband study), never NaN."""
    from optuna.trial import TrialState
    value = t.user_attrs.get(f"rung_{step}")
    return (value is not None and math.isfinite(value) and t.state != TrialState.FAIL
            and "duplicate_of" not in t.user_attrs)


def _asha(epochs, rungs):
    return RungPruner(rungs)


def _hyperband(epochs, rungs):
    # The first rung at a tenth of the budget: at epoch 1 every schedule is still warming up.
    return optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 10), max_resource=max(epochs, 1),
                                          reduction_factor=ETA)


def _halving(epochs, rungs):
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)


def _median(epochs, rungs):
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def _none(epochs, rungs):
    return optuna.pruners.NopPruner()


PRUNERS = {"asha": _asha, "hyperband": _hyperband, "halving": _halving, "median": _median, "none": _none}
RUNG_PRUNERS = {"asha"}


def make_pruner(name: str, epochs: int, rungs=None):
    if name not in PRUNERS:
        raise UserError(f"unknown pruner {name!r} (choose from {', '.join(PRUNERS)})")
    return PRUNERS[name](epochs, default_rungs(epochs) if rungs is None else rungs)
