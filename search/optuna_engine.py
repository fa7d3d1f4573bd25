"""Optuna engine: samplers, pruners and a storage that survives killed processes."""
from __future__ import annotations

import math
import os
import warnings

from search.adapters import OptunaSuggest
from search.engine import Engine
from search.progress import clock
from search.pruners import (RUNG_PRUNERS, RungPruner, make_pruner, parse_rungs, promotion_pending,
                            queue_endgame, queue_promotions)
from search.samplers import SAMPLERS, make_sampler
from search.study_clock import StudyClock
from spaces.base import sample, warm_starts
from tracking import stores
from tracking.liveness import HOST, dead_here
from train.errors import UserError
from train.trial import Pruned, Rejected, TooSlow

OBJECTIVE_METRICS = {"rmse": "rmse", "latency": "latency_ms", "params": "params", "size": "size_mb",
                     "inference": "inference_s_per_100"}


def make_storage(url: str):
    """RDB URLs get a heartbeat so trials of a dead worker are failed and retried; a path ending
    in .log/.journal is a journal file (no server, no heartbeat: the pid check below covers it)."""
    import optuna
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.endswith((".log", ".journal")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    from search.rdb import open_rdb, redact  # heartbeat (FKP_HEARTBEAT_S, FKP_GRACE_S), pre-ping, reconnect wait
    try:
        return open_rdb(url)
    except Exception as exc:  # never print the password, nor a page of driver traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot open Optuna storage {redact(url)!r}: {first}") from None


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
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except Exception:  # another worker on this host failed it first, and queues its retry
                continue
        # a preset still skips the rungs; a promotion still starts past the rung it was promoted from
        kept = {k: attrs[k] for k in ("warm_start", "promoted_from", "promoted_at") if k in attrs}
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, **kept}, skip_if_exists=False)
        recovered.append(t.number)
    return recovered


def finished(study) -> int:
    """Configs that count against the --trials budget: complete, pruned, or failed by their own error.
    A config refused by a constraint (over the parameter budget) costs no training and does not count; nor
    does a promotion, which goes on with a config already counted."""
    from optuna.trial import TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if "promoted_from" not in t.user_attrs
               and (t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED and "rejected" not in t.user_attrs)
                    or (t.state == TrialState.FAIL and "error" in t.user_attrs)))


def promote(study, budget, endgame_s: float | None = None) -> list[int]:
    """Queue ASHA's promotions (search/pruners.py) ahead of new configs: Optuna runs a waiting trial first.
    `endgame_s`: the time budget's last seconds, when pruners.queue_endgame may send the best config on."""
    if not isinstance(study.pruner, RungPruner) or budget.expired():
        return []
    found = queue_promotions(study, last=finished(study) >= budget.trials)  # last: no new config will come
    if not found and endgame_s and budget.timeout:
        left = budget.seconds_left()
        found = queue_endgame(study, left, endgame_s)
        for trial, rung in found:
            print(f"[optuna] {clock(left)} left and no full-budget model yet: trial "
                  f"#{trial.number}, the best at rung {rung}, goes on", flush=True)
        return [trial.number for trial, _ in found]
    for trial, rung in found:
        print(f"[optuna] trial #{trial.number} now ranks in the best third at rung {rung} "
              f"(val_rmse {trial.user_attrs[f'rung_{rung}']:.3f}): promoted, it trains the next budget", flush=True)
    return [trial.number for trial, _ in found]


def running_configs(trials) -> list:
    """Trials running a new config: a running promotion takes no room in --trials."""
    return [t for t in trials if t.state.name == "RUNNING" and "promoted_from" not in t.user_attrs]


def running_before(study, number: int) -> int:
    return sum(t.number < number for t in running_configs(study.get_trials(deepcopy=False)))


def fail_stale(study) -> None:
    """Fail and re-queue the trials of workers whose heartbeat stopped past the grace period (RDB storages)."""
    import optuna
    if hasattr(study._storage, "get_heartbeat_interval") and study._storage.get_heartbeat_interval():
        optuna.storages.fail_stale_trials(study)


def settle(study, budget, poll: float = 5.0) -> bool:
    """Other workers' RUNNING trials would fill the --trials budget: wait until they end (True: the study is
    done) or one goes past its heartbeat's grace period, is failed and queued again (False: run it here).
    A worker that died on another machine is found only by its heartbeat; without this wait the last
    live worker would stop and leave the study one trial short."""
    import time

    from optuna.trial import TrialState
    said = False
    while True:
        fail_stale(study)
        recover(study)  # a journal file has no heartbeat: a worker killed on this host is found by its pid
        trials = study.get_trials(deepcopy=False)
        running = len(running_configs(trials))
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        done = finished(study)
        # A promotion running elsewhere is waited for too: if its worker dies, its heartbeat goes stale and it
        # is queued here again; and when it ends it may promote the next one.
        if budget.expired() or (done >= budget.trials and not promotion_pending(trials)):
            return True
        if done + running < budget.trials or waiting:
            return False
        if not said:
            print(f"[optuna] {running} trial(s) of other workers would end the study: waiting for them, or for "
                  "their heartbeat to go stale (then their trial runs here)", flush=True)
            said = True
        time.sleep(poll)


class FailedElsewhere(Exception):
    """This worker's trial was failed and queued again by another worker while it ran."""


def optimize_past_stale_fails(study, objective, budget, **kwargs) -> None:
    """study.optimize, going on when a trial of this worker was failed by another's stale-trial sweep while it
    ran (its heartbeat missed the grace period, e.g. through a database restart on a loaded machine). Optuna's
    optimize then cannot tell the trial its result and raises "Cannot tell a FAIL trial" out of the loop, which
    would end a live worker. The sweep has queued the trial again, so its result here is dropped."""
    from optuna.trial import TrialState
    last = []

    def tracked(trial):
        last[:] = [trial.number]
        value = objective(trial)  # an objective that raised reaches the ValueError below by itself
        # a value returned for a trial failed elsewhere ends in Optuna's "Should not reach" assertion instead:
        # raising here takes it down the same path
        if study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            raise FailedElsewhere(f"trial {trial.number} was failed by another worker while it ran here")
        return value

    while True:
        try:
            study.optimize(tracked, timeout=budget.seconds_left(), **kwargs)
            return
        except ValueError as exc:
            if not str(exc).startswith("Cannot tell a "):
                raise
            print(f"[optuna] trial {last[0] if last else '?'} was failed by another worker while it ran here (its "
                  "heartbeat went stale): its result is dropped, and its retry runs it again", flush=True)
            if budget.expired():
                return


class OverBudget(Exception):
    """A trial another worker's trials left no room for: failed at once, never trained or counted."""


def same_config(study, params: dict):
    """A finished or pruned trial with exactly these values: TPE can propose a config again."""
    from optuna.trial import TrialState
    twins = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
             if t.params == params and "rejected" not in t.user_attrs and "duplicate_of" not in t.user_attrs]
    # a promoted config is both a pruned origin and a later trial that went further: reuse the furthest
    return max(twins, key=lambda t: (t.state == TrialState.COMPLETE, t.last_step or 0), default=None)


def sibling(study, trial):
    """An earlier promotion of the same stopped trial: two workers ending trials at once can both queue it."""
    from optuna.trial import TrialState
    origin = trial.user_attrs["promoted_from"]
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        if (t.number != trial.number and t.user_attrs.get("promoted_from") == origin and "duplicate_of" not in t.user_attrs
                and (t.number < trial.number or t.state != TrialState.RUNNING)):  # of two running, the older goes on
            return t
    return None


def rungs_done(study, trial) -> dict:
    """Rung results of the attempt this trial goes on from, never trained twice: a process killed on this host
    (retry_of), a worker whose heartbeat went stale (Optuna's retry copies its user attributes), or a stopped
    trial that ASHA promoted (promoted_from)."""
    trials, attrs, seen = study.get_trials(deepcopy=False), dict(trial.user_attrs), set()
    chain = [attrs.get("retry_of"), attrs.get("promoted_from")]
    while chain:  # a retry of a promotion killed before it recorded the rungs it carries: go back to its origin
        origin = chain.pop()
        if origin is None or origin in seen:
            continue
        seen.add(origin)
        older = trials[origin].user_attrs
        attrs = {**older, **attrs}
        chain += [older.get("retry_of"), older.get("promoted_from")]
    return {int(k.split("_")[1]): v for k, v in attrs.items() if k.startswith("rung_")}


class OptunaEngine(Engine):
    name = "optuna"

    def __init__(self, sampler="tpe", pruner="asha", storage=None, objectives=("rmse",), warm_start=True,
                 rungs: str | None = None):
        self.pruner_name, self.warm_start, self.rungs_text = pruner, warm_start, rungs
        self.trial_share = 0.0  # --max-trial-share (from_args); 0: any config may take any time
        if rungs is not None and pruner not in RUNG_PRUNERS:
            raise UserError(f"--rungs {rungs} needs a pruner that trains rungs ({', '.join(sorted(RUNG_PRUNERS))}), "
                            f"not --pruner {pruner}")
        self.storage_url = stores.optuna_url(storage)
        unknown = [o for o in objectives if o not in OBJECTIVE_METRICS]
        if unknown:
            raise UserError(f"unknown objective {unknown[0]!r} (choose from {', '.join(OBJECTIVE_METRICS)})")
        self.objectives = tuple(objectives)
        # Optuna cannot prune or use TPE's single-objective model on several objectives: NSGA-II runs.
        self.sampler_name = "nsga2" if len(self.objectives) > 1 and sampler == "tpe" else sampler
        make_pruner(pruner, 2)  # validate flags before any data is loaded or trained
        if self.sampler_name not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r} (choose from {', '.join(SAMPLERS)})")

    @classmethod
    def from_args(cls, args) -> "OptunaEngine":
        engine = cls(args.sampler, args.pruner, args.storage, args.objectives.split(","), not args.no_presets,
                     args.rungs)
        engine.rungs_for(args.epochs)  # a rung over the budget is refused before any data is read
        share = args.max_trial_share
        if not 0 <= share <= 1:
            raise UserError(f"--max-trial-share {share:g}: expected a share of the time budget from 0 (off) to 1")
        engine.trial_share = share
        return engine

    def rungs_for(self, epochs: int) -> list[int]:
        """Budgets a config is trained at before the full one (rung pruners only)."""
        if self.pruner_name not in RUNG_PRUNERS or len(self.objectives) > 1:
            return []
        return parse_rungs(self.rungs_text, epochs)

    def describe(self) -> dict:
        from search.rdb import redact  # the run's params are readable by anyone who can see the UI
        return {"sampler": self.sampler_name, "pruner": self.pruner_name, "storage": redact(self.storage_url),
                "max_trial_share": self.trial_share,
                "objectives": ",".join(self.objectives), **({"rungs": self.rungs_text} if self.rungs_text else {})}

    def open_study(self, study_name: str, space, seed: int, epochs: int = 5, key=None):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        presets = warm_starts(space) if self.warm_start else []
        sampler = make_sampler(self.sampler_name, space, seed, presets)
        storage = make_storage(self.storage_url)
        options = dict(study_name=study_name, storage=storage, sampler=sampler,
                       pruner=make_pruner(self.pruner_name, epochs, self.rungs_for(epochs)),
                       directions=["minimize"] * len(self.objectives))
        try:
            study, created = optuna.create_study(**options, load_if_exists=False), True
        except optuna.exceptions.DuplicatedStudyError:
            study, created = optuna.create_study(**options, load_if_exists=True), False
        except ValueError as exc:  # e.g. the stored study has other directions
            raise UserError(f"Optuna study {study_name!r}: {exc}") from None
        if len(study.directions) != len(self.objectives):  # else every trial would train, then fail to be told
            raise UserError(f"Optuna study {study_name!r} has {len(study.directions)} objective(s), this run asks "
                            f"for {len(self.objectives)} ({','.join(self.objectives)}): choose another --study-name")
        if key is not None:
            for attr, value in key.check_attrs(study_name, study.user_attrs, space.name).items():
                if study.user_attrs.get(attr) != value:
                    study.set_user_attr(attr, value)
        if study.metric_names is None:
            study.set_metric_names(list(self.objectives))  # the dashboard shows "rmse", not "Objective 0"
        existing = len(study.get_trials(deepcopy=False))
        if not created:
            # A resumed process re-seeded like the first one would replay its random draws and
            # propose finished configs again; so would a second worker joining at the same moment.
            shared = not self.storage_url.startswith("sqlite")  # a server's workers join at once; a file resumes
            study.sampler = make_sampler(self.sampler_name, space, seed + existing + (os.getpid() if shared else 0),
                                         presets)
        elif self.warm_start:  # only the process that made the study: workers starting together would each enqueue
            for preset in warm_starts(space):  # a search never ends worse than its best preset
                study.enqueue_trial(preset, user_attrs={"warm_start": True}, skip_if_exists=True)
        return study

    def run(self, space, runner, budget) -> None:
        import optuna
        from optuna.trial import TrialState
        epochs = runner.settings.epochs
        study = self.open_study(budget.study, space, budget.seed, epochs, runner.key)
        # the time budget is the study's: every worker and every resume draw on one clock
        budget.clock = StudyClock(study, start=getattr(budget.clock, "started", None))
        rungs = self.rungs_for(epochs)
        endgame = budget.timeout * self.trial_share if self.trial_share and budget.timeout else None
        if endgame:
            runner.max_epoch_s = endgame / epochs
        fail_stale(study)  # a dead worker's promotion is queued again before the check below
        for number in recover(study):
            print(f"[optuna] trial #{number} was cut off by a killed process: queued to run again", flush=True)
        promote(study, budget, endgame)  # a config the last process stopped, or the time budget cut, that now ranks
        remaining = budget.trials - finished(study)
        if remaining <= 0 and not promotion_pending(study.get_trials(deepcopy=False), ("WAITING",)):
            print(f"[optuna] study {budget.study!r} already has {finished(study)} finished trials", flush=True)
            return
        single = len(self.objectives) == 1
        runner.progress.total = max(remaining, 1)
        runner.progress.counts_refused = False  # a refused config costs no training and does not count
        if single:  # a resumed study's best so far, not "-" until this process finishes a trial
            runner.progress.best = min((t.values[0] for t in study.get_trials(deepcopy=False, states=(
                TrialState.COMPLETE,)) if t.values), default=runner.progress.best)
        if settle(study, budget):  # others hold the rest of the budget: wait for them, or take a dead one's place
            print(f"[optuna] study {budget.study!r}: its --trials or time budget is used up", flush=True)
            return

        def objective(trial):
            trial.set_user_attr("host", HOST)
            trial.set_user_attr("pid", os.getpid())
            promoted = trial.user_attrs.get("promoted_from")
            # Workers share one --trials budget: a trial beyond it (another worker got there first) stops here.
            # A promotion goes on with a config the budget already counts.
            if budget.expired() or (promoted is None and
                                    finished(study) + running_before(study, trial.number) >= budget.trials):
                trial.set_user_attr("over_budget", True)
                # No stop here: stop_at_budget, run once this trial has ended, waits for the others in settle().
                # Waiting here would count this very trial as another worker's and wait for it forever.
                raise OverBudget("the study's --trials or time budget was used up (by other workers, or before)")
            config = sample(space, OptunaSuggest(trial))
            if promoted is not None and (twin := sibling(study, trial)) is not None:
                trial.set_user_attr("duplicate_of", twin.number)
                raise optuna.TrialPruned(f"trial #{promoted} was promoted twice: trial #{twin.number} trains it")
            twin = same_config(study, trial.params) if promoted is None else None
            if twin is not None:  # the same values already trained: reuse, do not train or list twice
                trial.set_user_attr("duplicate_of", twin.number)
                if twin.state == TrialState.PRUNED:
                    for step, value in twin.intermediate_values.items():
                        trial.report(value, step)
                    raise optuna.TrialPruned(f"same config as pruned trial #{twin.number}")
                return tuple(twin.values)

            def report(epoch, val_rmse):
                if not single:
                    return  # Optuna cannot prune multi-objective studies
                trial.report(val_rmse, epoch)
                if trial.should_prune():
                    raise Pruned(f"pruned at epoch {epoch + 1} (val_rmse {val_rmse:.3f})")

            def bars(epoch, val_rmse):
                """A warm start's value at a rung's epoch: the bar a sampled config must clear there (RungPruner)."""
                if epoch + 1 in rungs and math.isfinite(val_rmse):
                    trial.set_user_attr(f"bar_{epoch + 1}", float(val_rmse))

            refs = {"optuna_study": budget.study, "optuna_trial_number": trial.number, "optuna_trial_id": trial._trial_id}
            on_start = lambda run_id: trial.set_user_attr("mlflow_run_id", run_id)  # noqa: E731
            try:
                # a warm start is a hand-made recipe known to be good: it goes straight to the full budget
                if rungs and not trial.user_attrs.get("warm_start"):
                    result = climb(trial, config, refs, on_start)
                else:  # under rungs, per-epoch reports would be read as rung values: a warm start sets bars instead
                    result = runner("optuna", trial.number, config, report=bars if rungs else report, refs=refs,
                                    on_start=on_start, judge_speed=not trial.user_attrs.get("warm_start"))
            except Rejected as exc:
                trial.set_user_attr("rejected", str(exc))
                raise optuna.TrialPruned(str(exc)) from None
            except TooSlow as exc:  # never promoted: it would be as slow at the next rung
                trial.set_user_attr("too_slow", str(exc))
                raise optuna.TrialPruned(str(exc)) from None
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
            from tracking.dashboard import publish_trial
            publish_trial(trial.study, trial, result, trial.user_attrs["mlflow_run_id"], runner.tracker.uri)
            return tuple(result.metrics[OBJECTIVE_METRICS[o]] for o in self.objectives)

        def climb(trial, config, refs, on_start):
            """Train at each rung with a schedule sized to it; go on only while the pruner promotes."""
            earlier = rungs_done(study, trial)
            # Speed is judged once per config, in its first run long enough to tell (over 3 epochs): a config that
            # passed, or a promotion or retry of one, is not cut later by one slow epoch after rungs it paid for.
            judge = not earlier and "promoted_from" not in trial.user_attrs
            for rung in rungs:
                if rung not in earlier and budget.expired():  # a rung begun now would be cut short and misread
                    raise Pruned(f"the study's time budget ran out before rung {rung}/{epochs}")
                if rung in earlier:
                    value = earlier[rung]
                else:
                    value = runner("optuna", trial.number, config, refs={**refs, "fkp_rung": f"{rung}/{epochs}"},
                                   on_start=on_start, epochs=rung, judge_speed=judge).metrics["rmse"]
                    judge = judge and rung <= 3
                trial.set_user_attr(f"rung_{rung}", value)
                trial.report(value, rung)
                if trial.should_prune():
                    runner.progress.trial_ended(f"stopped at rung {rung}/{epochs}")
                    raise Pruned(f"stopped at rung {rung}/{epochs} epochs (val_rmse {value:.3f}): not in the best "
                                 "third there yet; promoted later if it ranks there once more configs arrive")
            if budget.expired():
                raise Pruned(f"the study's time budget ran out before the full {epochs} epochs")
            return runner("optuna", trial.number, config, refs=refs, on_start=on_start, judge_speed=judge)

        def stop_at_budget(study, _trial):
            promote(study, budget, endgame)
            trials = study.get_trials(deepcopy=False)
            if budget.expired():
                study.stop()
            elif finished(study) + len(running_configs(trials)) >= budget.trials:
                if settle(study, budget):
                    study.stop()
            elif sum("rejected" in t.user_attrs for t in trials) >= max(50, 10 * budget.trials):
                print("[optuna] stopping: nearly every config the sampler proposes is refused before training "
                      "(over --max-params or --max-mmacs, or an impossible head)", flush=True)
                study.stop()

        # The callback stops at the budget; the cap only ends a loop whose trials keep failing uncounted.
        optimize_past_stale_fails(study, objective, budget, n_trials=max(remaining, 0) * 3 + 50, catch=(Exception,),
                                  gc_after_trial=True, callbacks=[stop_at_budget])

    def pareto(self, study_name: str):
        import optuna
        return optuna.load_study(study_name=study_name, storage=make_storage(self.storage_url)).best_trials
