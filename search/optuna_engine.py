"""Optuna engine: samplers, pruners and a storage that survives killed processes."""
from __future__ import annotations

import os
import warnings

from search.adapters import OptunaSuggest
from spaces.base import Categorical, Fixed, Float, Int, sample
from tracking import stores
from tracking.liveness import HOST, dead_here
from train.errors import UserError
from train.trial import Pruned

SAMPLERS = ("tpe", "random", "cmaes", "nsga2", "grid")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVE_METRICS = {"rmse": "rmse", "latency": "latency_ms", "params": "params", "size": "size_mb",
                     "inference": "inference_s_per_100"}


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


def make_sampler(name: str, space, seed: int):
    import optuna
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES handles numbers only; categorical parameters fall back to random sampling.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_of(space), seed=seed)
    raise UserError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")


def make_pruner(name: str):
    import optuna
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r} (choose from {', '.join(PRUNERS)})")


def make_storage(url: str):
    """RDB URLs get a heartbeat so trials of a dead worker are failed and retried; a path ending
    in .log/.journal is a journal file (no server, no heartbeat: the pid check below covers it)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.endswith((".log", ".journal")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    try:
        return RDBStorage(url, heartbeat_interval=30, grace_period=120,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except Exception as exc:
        raise UserError(f"cannot open Optuna storage {url!r}: {exc}") from None


def recover(study) -> list[int]:
    """Fail the trials a killed process left behind on this host, and queue them to run again."""
    from optuna.trial import TrialState
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    recovered = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        dead = t.state == TrialState.RUNNING and dead_here(attrs.get("host"), attrs.get("pid"))
        interrupted = t.state == TrialState.FAIL and attrs.get("interrupted")
        if not (dead or interrupted) or t.number in retried:
            continue
        if dead:
            study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        recovered.append(t.number)
    return recovered


def finished(study) -> int:
    """Trials that count against the budget: complete, pruned, or failed by their own error."""
    from optuna.trial import TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and "error" in t.user_attrs))


class OptunaEngine:
    name = "optuna"

    def __init__(self, sampler="tpe", pruner="median", storage=None, objectives=("rmse",)):
        self.sampler_name, self.pruner_name = sampler, pruner
        self.storage_url = stores.optuna_url(storage)
        unknown = [o for o in objectives if o not in OBJECTIVE_METRICS]
        if unknown:
            raise UserError(f"unknown objective {unknown[0]!r} (choose from {', '.join(OBJECTIVE_METRICS)})")
        self.objectives = tuple(objectives)
        make_pruner(pruner)  # validate flags before any data is loaded or trained

    def describe(self) -> dict:
        return {"sampler": self.sampler_name, "pruner": self.pruner_name, "storage": self.storage_url,
                "objectives": ",".join(self.objectives)}

    def open_study(self, study_name: str, space, seed: int):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        multi = len(self.objectives) > 1
        name = "nsga2" if multi and self.sampler_name == "tpe" else self.sampler_name
        sampler = make_sampler(name, space, seed)
        try:
            study = optuna.create_study(study_name=study_name, storage=make_storage(self.storage_url),
                                        sampler=sampler, pruner=make_pruner(self.pruner_name),
                                        directions=["minimize"] * len(self.objectives), load_if_exists=True)
        except ValueError as exc:  # e.g. the stored study has other directions
            raise UserError(f"Optuna study {study_name!r}: {exc}") from None
        existing = len(study.get_trials(deepcopy=False))
        if existing:
            # A resumed process re-seeded like the first one would replay its random draws and
            # propose finished configs again: continue the seed sequence instead.
            study.sampler = make_sampler(name, space, seed + existing)
        return study

    def run(self, space, runner, budget) -> None:
        import optuna
        study = self.open_study(budget.study, space, budget.seed)
        for number in recover(study):
            print(f"[optuna] trial #{number} was cut off by a killed process: queued to run again", flush=True)
        remaining = budget.trials - finished(study)
        if remaining <= 0:
            print(f"[optuna] study {budget.study!r} already has {finished(study)} finished trials", flush=True)
            return
        single = len(self.objectives) == 1
        runner.progress.total = remaining

        def objective(trial):
            trial.set_user_attr("host", HOST)
            trial.set_user_attr("pid", os.getpid())
            config = sample(space, OptunaSuggest(trial))

            def report(epoch, val_rmse):
                if not single:
                    return  # Optuna cannot prune multi-objective studies
                trial.report(val_rmse, epoch)
                if trial.should_prune():
                    raise Pruned(f"pruned at epoch {epoch + 1} (val_rmse {val_rmse:.3f})")

            try:
                result = runner("optuna", trial.number, config, report=report,
                                refs={"optuna_study": budget.study, "optuna_trial_number": trial.number,
                                      "optuna_trial_id": trial._trial_id},
                                on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id))
            except Pruned as exc:
                raise optuna.TrialPruned(str(exc)) from None
            except KeyboardInterrupt:
                trial.set_user_attr("interrupted", True)
                raise
            except Exception as exc:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
                raise
            for key, value in result.metrics.items():
                trial.set_user_attr(key, value)
            return tuple(result.metrics[OBJECTIVE_METRICS[o]] for o in self.objectives)

        study.optimize(objective, n_trials=remaining, timeout=budget.timeout, catch=(Exception,),
                       gc_after_trial=True)

    def pareto(self, study_name: str):
        import optuna
        return optuna.load_study(study_name=study_name, storage=make_storage(self.storage_url)).best_trials
