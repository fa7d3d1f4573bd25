"""Keras Tuner engine: its oracles pick, our one trial function trains.

Keras Tuner sums several objectives into one score and has no Pareto front, so it optimises
RMSE only; use the Optuna engine with --objectives for trade-offs.
"""
from __future__ import annotations

from pathlib import Path

from search.adapters import KerasTunerSuggest
from spaces.base import sample
from tracking import stores
from train.errors import UserError

TUNERS = ("random", "bayesian", "hyperband")


def _tuner_class():
    import keras_tuner as kt

    class OneLoopTuner(kt.Tuner):
        """Overrides run_trial so no Keras Tuner fit loop runs: the platform's trial function does."""

        def __init__(self, oracle, space, runner, study, **kwargs):
            super().__init__(oracle=oracle, **kwargs)
            self.space, self.runner, self.study = space, runner, study

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            config = sample(self.space, KerasTunerSuggest(hp))
            trial_dir = Path(self.get_trial_dir(trial.trial_id))
            trial_dir.mkdir(parents=True, exist_ok=True)

            def link(run_id):  # the Keras Tuner trial names its MLflow run, and vice versa
                (trial_dir / "mlflow_run_id.txt").write_text(run_id)

            result = self.runner("keras-tuner", int(trial.trial_id), config, on_start=link,
                                 refs={"kt_project": self.project_dir, "kt_trial_id": trial.trial_id},
                                 epochs=hp.values.get("tuner/epochs"))
            return {"val_rmse": result.metrics["rmse"]}

        def save_model(self, trial_id, model, step=0):
            pass  # models are logged to MLflow by the trial runner

    return OneLoopTuner


class KerasTunerEngine:
    name = "keras-tuner"

    def __init__(self, tuner="random", directory=None):
        if tuner not in TUNERS:
            raise UserError(f"unknown tuner {tuner!r} (choose from {', '.join(TUNERS)})")
        self.tuner_name = tuner
        self.directory = Path(directory) if directory else stores.keras_tuner_dir()

    def describe(self) -> dict:
        return {"tuner": self.tuner_name, "project_dir": str(self.directory)}

    def make_oracle(self, budget, epochs: int):
        import keras_tuner as kt
        objective = kt.Objective("val_rmse", direction="min")
        common = dict(objective=objective, seed=budget.seed, max_retries_per_trial=0,
                      max_consecutive_failed_trials=max(budget.trials, 3))
        if self.tuner_name == "random":
            return kt.oracles.RandomSearchOracle(max_trials=budget.trials, **common)
        if self.tuner_name == "bayesian":
            return kt.oracles.BayesianOptimizationOracle(max_trials=budget.trials, **common)
        return kt.oracles.HyperbandOracle(max_epochs=epochs, factor=3, hyperband_iterations=1, **common)

    def run(self, space, runner, budget) -> None:
        import logging
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        oracle = self.make_oracle(budget, runner.settings.epochs)
        tuner = _tuner_class()(oracle, space, runner, budget.study, directory=str(self.directory),
                               project_name=f"{budget.study}-{self.tuner_name}", overwrite=False)
        done = sum(1 for t in oracle.trials.values() if t.status in ("COMPLETED", "FAILED", "INVALID"))
        if self.tuner_name != "hyperband":
            runner.progress.total = max(budget.trials - done, 0)
            if done >= budget.trials:
                print(f"[keras-tuner] project {tuner.project_dir} already has {done} finished trials", flush=True)
                return
        tuner.search(verbose=0)
