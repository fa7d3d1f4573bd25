"""Keras Tuner engine: its oracles pick, our one trial function trains.

Keras Tuner sums several objectives into one score and has no Pareto front, so it optimises
RMSE only; use the Optuna engine with --objectives for trade-offs.
"""
from __future__ import annotations

from pathlib import Path

from search.adapters import KerasTunerSuggest, declare
from search.engine import Engine
from spaces.base import sample
from tracking import stores
from train.errors import UserError

TUNERS = ("random", "bayesian", "hyperband")


def _tuner_class():
    import keras_tuner as kt

    class OneLoopTuner(kt.Tuner):
        """Overrides run_trial so no Keras Tuner fit loop runs: the platform's trial function does."""

        def __init__(self, oracle, space, runner, budget, **kwargs):
            super().__init__(oracle=oracle, **kwargs)
            self.space, self.runner, self.budget = space, runner, budget

        def run_trial(self, trial, *args, **kwargs):
            if self.budget.expired():
                raise kt.errors.FatalError("--timeout reached")  # fatal: Keras Tuner stops instead of retrying
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


class KerasTunerEngine(Engine):
    name = "keras-tuner"

    @classmethod
    def from_args(cls, args) -> "KerasTunerEngine":
        return cls(args.tuner)

    def __init__(self, tuner="random", directory=None):
        if tuner not in TUNERS:
            raise UserError(f"unknown tuner {tuner!r} (choose from {', '.join(TUNERS)})")
        self.tuner_name = tuner
        self.directory = Path(directory) if directory else stores.keras_tuner_dir()

    def describe(self) -> dict:
        return {"tuner": self.tuner_name, "project_dir": str(self.directory)}

    def make_oracle(self, budget, epochs: int, space=None):
        import keras_tuner as kt
        objective = kt.Objective("val_rmse", direction="min")
        # Declared up front: an oracle that meets parameters only as a trial asks for them gives its
        # first trial every parameter at its default (the lowest value), a wasted trial.
        hp = kt.HyperParameters()
        if space is not None:
            declare(space, KerasTunerSuggest(hp))
        common = dict(objective=objective, seed=budget.seed, max_retries_per_trial=0, hyperparameters=hp,
                      # configs refused before training (--max-params, --max-mmacs) are failed trials to Keras Tuner: room for them
                      max_consecutive_failed_trials=budget.trials + 50)
        if self.tuner_name == "random":
            return kt.oracles.RandomSearchOracle(max_trials=budget.trials, **common)
        if self.tuner_name == "bayesian":
            return kt.oracles.BayesianOptimizationOracle(max_trials=budget.trials, **common)
        return kt.oracles.HyperbandOracle(max_epochs=epochs, factor=3, hyperband_iterations=1, **common)

    def run(self, space, runner, budget) -> None:
        import logging
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        oracle = self.make_oracle(budget, runner.settings.epochs, space)
        tuner = _tuner_class()(oracle, space, runner, budget, directory=str(self.directory),
                               project_name=f"{budget.study}-{self.tuner_name}", overwrite=False)
        done = sum(1 for t in oracle.trials.values() if t.status in ("COMPLETED", "FAILED", "INVALID"))
        if self.tuner_name != "hyperband":
            runner.progress.total = max(budget.trials - done, 0)
            if done >= budget.trials:
                print(f"[keras-tuner] project {tuner.project_dir} already has {done} finished trials", flush=True)
                return
        import keras_tuner as kt
        try:
            tuner.search(verbose=0)
        except kt.errors.FatalError:
            if not budget.expired():
                raise
            print("[keras-tuner] --timeout reached: no new trial started", flush=True)
