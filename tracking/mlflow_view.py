"""The MLflow UI's runs table as a person wants it first: every trial ranked by validation RMSE, with
its engine, test RMSE, size, speed and key hyperparameters as columns.

MLflow's UI shows no metric or parameter column by default and keeps child runs collapsed under
their search run. Its "shared view" is an experiment tag `mlflow.sharedViewState.<key>` holding the
table's state as JSON; the URL `…/#/experiments/<id>/runs?viewStateShareKey=<key>` opens it.
Sorting by a metric lists the trials flat, so no run has to be expanded by hand.
"""
from __future__ import annotations

import json

KEY = "fkp-runs"
TAG = f"mlflow.sharedViewState.{KEY}"
COLUMNS = (
    "tags.`fkp_engine`", "metrics.`rmse`", "metrics.`test_rmse`", "metrics.`params`", "metrics.`size_mb`",
    "metrics.`inference_s_per_100`", "metrics.`epochs`", "params.`model`", "params.`learning_rate`",
    "params.`batch_size`", "params.`imputation`", "params.`augment`", "params.`blocks`", "params.`alpha`",
    "params.`fine_tune`", "tags.`fkp_study`", "tags.`fkp_status`",
    # search runs: their summary
    "metrics.`best_rmse`", "metrics.`best_test_rmse`", "metrics.`trials_finished`", "metrics.`wall_time_s`",
)


def state() -> str:
    return json.dumps({"selectedColumns": list(COLUMNS), "columnOrder": list(COLUMNS),
                       "orderByKey": "metrics.`rmse`", "orderByAsc": True}, sort_keys=True)


def ensure(client, experiment_id: str, tags: dict) -> None:
    """Write the view on the experiment unless it is already there as it should be."""
    if tags.get(TAG) != state():
        from mlflow.exceptions import MlflowException
        try:
            client.set_experiment_tag(experiment_id, TAG, state())
        except MlflowException:  # workers starting at once on a new server: another one wrote this same view
            if client.get_experiment(experiment_id).tags.get(TAG) != state():
                raise


def runs_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={KEY}"


def run_url(experiment_id: str, run_id: str, base: str = "http://127.0.0.1:5000") -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
