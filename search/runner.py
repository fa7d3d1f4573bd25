"""The objective every engine calls: one proposed config -> tracked, displayed, measured trial."""
from __future__ import annotations

import dataclasses
import tempfile
import time

from train.errors import Terminated
from train.models import resolve
from train.trial import (Pruned, Rejected, StopTraining, TooSlow, TrialSettings, own_settings, refuse_unfit,
                         run_trial)


class TrialRunner:
    def __init__(self, data, settings: TrialSettings, tracker, progress, study: str, parent_id: str, key=None):
        self.data, self.settings, self.tracker, self.progress, self.study = data, settings, tracker, progress, study
        self.parent_id = parent_id  # the MLflow run of this (study, engine) search
        self.key = key  # the study's identity (search/identity.py): tagged on every trial run
        self.seconds_left = None  # the search's --timeout clock: a trial running at the end stops and is measured
        # Seconds per epoch over which a config cannot afford its full budget (--max-trial-share): judged at the end
        # of a run's third epoch on the faster of its second and third (the first also builds the graph, and one
        # epoch alone is noisy), in the first run of the config long enough to tell (the engine says which).
        self.max_epoch_s: float | None = None
        self.on_first_epoch = None  # hears the seconds from a trial's start to the end of its first epoch

    @property
    def budget_key(self) -> dict:
        """What, besides the hyperparameters, decides a trial's result."""
        settings = {k: v for k, v in dataclasses.asdict(self.settings).items() if k != "verbose"}
        return {"data_sha": getattr(self.data, "sha", None), **settings}

    def __call__(self, engine: str, number: int, config: dict, report=None, refs=None, on_start=None,
                 epochs: int | None = None, judge_speed: bool = True):
        """Run one trial. `report(epoch, val_rmse)` may raise `Pruned`; `on_start(run_id)` links ids;
        `judge_speed`: may stop as TooSlow (max_epoch_s)."""
        settings = dataclasses.replace(self.settings, epochs=epochs) if epochs else self.settings
        try:
            logged = resolve(config)  # every hyperparameter, presets' included, under one name
        except Exception:
            logged = config  # the trial itself will fail and record why
        capped = own_settings(settings, logged)  # a config's own epoch cap, for progress and the timeout's check
        # data, split and budget, not hyperparameters
        tags = {**(self.key.tags() if self.key else {}), "max_epochs": settings.epochs, "patience": settings.patience,
                # "rung": a short forecast of a trial (fkp_rung says which); MLflow filters cannot test a tag's absence
                "fkp_budget": "rung" if (refs or {}).get("fkp_rung") else "full", **(refs or {})}
        run_id = self.tracker.start_trial(self.parent_id, self.study, engine, number, logged, tags)

        spent = []
        planned = [capped.epochs]  # shortened when the schedule is re-planned to end before the timeout

        def on_epoch(epoch, logs):
            if epoch == 0 and self.on_first_epoch:
                self.on_first_epoch(time.perf_counter() - started)
            val = logs.get("val_rmse", float("nan"))
            spent.append(logs.get("epoch_s", float("nan")))
            self.tracker.log_epoch(run_id, epoch, logs)
            self.progress.epoch(epoch, planned[0], val)
            if report:
                report(epoch, val)
            if judge_speed and self.max_epoch_s and epoch == 2 and epoch + 1 < capped.epochs and \
                    (took := min(spent[1:3])) > self.max_epoch_s:
                self.tracker.client.set_tag(run_id, "too_slow_s_per_epoch", f"{took:.1f}")
                full = took * self.settings.epochs / 60
                raise TooSlow(f"too slow for the time budget: {took:.0f} s/epoch, about {full:.0f} min for the full "
                              f"{self.settings.epochs} epochs (the limit is {self.max_epoch_s:.0f} s/epoch, "
                              "--max-trial-share)")
            # the next epoch would end past the deadline: stop now rather than overrun it by an epoch (on one core
            # the quick start's last trial trained 20 s past its 7 minutes)
            if self.seconds_left is not None and epoch + 1 < planned[0] and \
                    self.seconds_left() < max(logs.get("epoch_s", 0.0), 1e-9):
                self.tracker.client.set_tag(run_id, "stopped_by_timeout", str(epoch + 1))
                if (refs or {}).get("fkp_rung"):  # a rung cut short would be ranked as if it had ended its schedule
                    raise Pruned(f"the time budget ran out in epoch {epoch + 1} of rung {refs['fkp_rung']}")
                raise StopTraining()

        def on_replan(epochs):
            if planned[0] == capped.epochs:  # said once; later moves show in each epoch's "i/N"
                self.progress.note(f"the time left fits {epochs} of {capped.epochs} epochs: the learning-rate "
                                   f"schedule now ends at epoch {epochs}")
            planned[0] = epochs
            self.tracker.client.set_tag(run_id, "schedule_fit_to_time", str(epochs))

        try:  # from here on, whatever happens closes the MLflow run with a status
            self.tracker.log_dataset(run_id, self.data)
            if on_start:
                on_start(run_id)
            try:
                refuse_unfit(config, settings)
            except Rejected:
                raise
            except Exception:  # not a refusal: the trial fails on it below, announced like any other
                pass
            self.progress.trial_started(engine, number, config, (refs or {}).get("fkp_rung"))
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="fkp-trial-") as out:
                # a rung (ours, or Keras Tuner's shorter Hyperband runs) is a forecast at its own budget: shortened,
                # it would be ranked as if it had run that budget
                short = (refs or {}).get("fkp_rung") or (epochs and epochs < self.settings.epochs)
                fit = self.seconds_left if self.seconds_left is not None and not short else None
                result = run_trial(config, self.data, settings, on_epoch=on_epoch, out_dir=out, seconds_left=fit,
                                   on_replan=on_replan)
                self.tracker.end_trial(run_id, "finished", result)
        except Rejected as exc:
            self.tracker.end_trial(run_id, "rejected", error=str(exc))
            self.progress.refused(engine, number, str(exc))
            raise
        except Pruned as exc:
            self.tracker.end_trial(run_id, "pruned", error=str(exc) or "pruned")
            self.progress.trial_ended(f"stopped, {exc}" if isinstance(exc, TooSlow) else "pruned")
            raise
        except KeyboardInterrupt as exc:
            self.tracker.end_trial(run_id, "killed", error="terminated (SIGTERM)" if isinstance(exc, Terminated)
                                   else "interrupted by the user")
            raise
        except Exception as exc:
            self.tracker.end_trial(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
            self.progress.trial_ended(f"FAILED ({type(exc).__name__}: {str(exc)[:120]})")
            raise
        rung = (refs or {}).get("fkp_rung")
        if rung:  # one step of a trial that climbs rungs: the trial itself has not ended
            self.progress.rung_ended(rung, result.metrics["rmse"])
        else:
            self.progress.trial_ended("done", result.metrics["rmse"])
        return result
