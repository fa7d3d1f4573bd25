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
    """Asynchronous successive halving over rung budgets: at each rung a trial goes on only if its value there
    is among the best 1/ETA of the values reported at that rung so far (itself included). Until ETA trials
    have reached a rung there is no best third, so a trial stops there; `promotions` sends it on later if it
    ranks in the best third once rivals arrive. Letting the first arrivals go on instead cost the tiny search
    a random config's 75-epoch run (rung-8 val 4.40 px, a quarter of its first half hour). A rung trains
    from scratch with its own schedule, so a late promotion loses nothing but the wait.
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
        if step <= trial.user_attrs.get("promoted_at", 0):
            return False  # a promotion carries this rung's value: it was ranked when it was promoted
        value = trial.intermediate_values[step]
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        values = [*(t.user_attrs[f"rung_{step}"] for t in trials if _counts(t, step)), value]
        return not _goes_on(value, values, _bar(trials, step), self.eta)


def _goes_on(value: float, values: list, bar: float, eta: int, last: bool = False) -> bool:
    """Whether a config's value at a rung earns the next budget: in the best 1/eta of the rung's `values` (its
    own among them) and no worse than a preset's `bar` there. With too few values for a best third, beating a
    bar is rank enough; `last` (no rival will come) lets the best go on."""
    if not math.isfinite(value) or value > bar:
        return False
    keep = max(len(values) // eta, 1 if last else 0)
    if keep == 0:
        return math.isfinite(bar)
    return value <= sorted(values)[keep - 1]


def promotions(study, rungs, eta: int = ETA, last: bool = False) -> list[tuple[object, int]]:
    """ASHA's promotions: (trial, rung) for each stopped config that now ranks in the best 1/ETA of the rung
    where it stopped, and has not been sent on yet. Also picks up a trial the time budget cut before its next
    rung, if it still ranks, so a resumed search finishes it. `last`: no new config will come (the --trials
    budget is spent), so the best at each rung goes on even with fewer than ETA rivals; else a 2-trial search
    would end with no full-budget model. `queue_promotions` enqueues each as a new trial (`promoted_from`,
    `promoted_at`) that keeps the rung values it has and trains from the next rung on."""
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    # a promotion refused at once (the time budget ran out as it was picked up) never trained: it may go again
    sent = {t.user_attrs["promoted_from"] for t in trials
            if "promoted_from" in t.user_attrs and "over_budget" not in t.user_attrs}
    out = []
    for t in trials:
        attrs = t.user_attrs
        if (t.state != TrialState.PRUNED or t.number in sent or "rejected" in attrs or "duplicate_of" in attrs
                or "too_slow" in attrs or attrs.get("warm_start")):
            continue
        done = [r for r in rungs if f"rung_{r}" in attrs]
        if not done:
            continue
        rung = max(done)
        values = [o.user_attrs[f"rung_{rung}"] for o in trials if _counts(o, rung)]
        if _goes_on(attrs[f"rung_{rung}"], values, _bar(trials, rung), eta, last):
            out.append((t, rung))
    return sorted(out, key=lambda p: (-p[1], p[0].user_attrs[f"rung_{p[1]}"]))  # highest rung first, as ASHA


def queue_promotions(study, last: bool = False, only_best: bool = False) -> list[tuple[object, int]]:
    """Queue each of `promotions` under the study's RungPruner as a new trial; Optuna runs a waiting trial
    before it samples a new one. The search engine and the replay both promote through this. `only_best`: just
    the best config at the highest rung (the end of a time budget with no full-budget model yet)."""
    found = promotions(study, study.pruner.rungs, study.pruner.eta, last)[:1 if only_best else None]
    for trial, rung in found:
        study.enqueue_trial(trial.params, user_attrs={"promoted_from": trial.number, "promoted_at": rung},
                            skip_if_exists=False)
    return found


def promotion_pending(trials, states=("WAITING", "RUNNING")) -> bool:
    """A promotion queued or under way: the study has work left though --trials configs have been drawn."""
    return any(t.state.name in states and "promoted_from" in t.user_attrs for t in trials)


def queue_endgame(study, seconds_left: float, endgame_s: float) -> list[tuple[object, int]]:
    """In a time budget's last `endgame_s` seconds (the longest a full run may take, by --max-trial-share), a
    study with no full-budget model and none on its way sends the best config at its highest rung on, rivals or
    not: else a 2-hour search of slow configs can end with nothing to export. The engine and the replay both
    call this when `queue_promotions` found nothing."""
    from optuna.trial import TrialState
    if seconds_left > endgame_s:
        return []
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.COMPLETE for t in trials) or promotion_pending(trials):
        return []
    return queue_promotions(study, last=True, only_best=True)


def _bar(trials, step) -> float:
    return min((b for t in trials if math.isfinite(b := t.user_attrs.get(f"bar_{step}", math.inf))), default=math.inf)


def _counts(t, step) -> bool:
    """One measurement per config at this rung: not a duplicate's copy, not a promotion's copy of its origin's
    value, not a failed attempt whose retry carries its value on, not another pruner's per-epoch report (a
    resumed hyperband study), never NaN."""
    from optuna.trial import TrialState
    value = t.user_attrs.get(f"rung_{step}")
    return (value is not None and math.isfinite(value) and t.state != TrialState.FAIL
            and "duplicate_of" not in t.user_attrs and step > t.user_attrs.get("promoted_at", 0))


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
