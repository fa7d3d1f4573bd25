"""The MLflow UI's runs table as a person wants it first: every trial ranked by validation RMSE, with
its engine, test RMSE, size, speed and key hyperparameters as columns.

MLflow's UI shows no metric or parameter column by default and keeps child runs collapsed under
their search run. Its "shared view" is an experiment tag `mlflow.sharedViewState.<key>` holding the
table's state as JSON; the URL `…/#/experiments/<id>/runs?viewStateShareKey=<key>` opens it.
Sorting by a metric lists the trials flat, so no run has to be expanded by hand. A second view holds charts
that compare the trials (test RMSE against parameters and against inference time, parallel coordinates).
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


# A second view, opened in chart mode (`&compareRunsMode=CHART`): full-budget trials compared on what an edge
# user trades off.
CHARTS_KEY = "fkp-charts"
CHARTS_FILTER = "tags.fkp_budget = 'full'"  # rung runs are forecasts at a fraction of the budget
SECTION = "fkp-compare"
CHARTS = (
    {"type": "SCATTER", "xaxis": {"key": "params", "type": "METRIC"}, "yaxis": {"key": "test_rmse", "type": "METRIC"},
     "displayName": "test RMSE (px) against parameters"},
    {"type": "SCATTER", "xaxis": {"key": "inference_s_per_100", "type": "METRIC"},
     "yaxis": {"key": "test_rmse", "type": "METRIC"}, "displayName": "test RMSE (px) against inference s/100"},
    {"type": "PARALLEL", "selectedParams": ["blocks", "learning_rate", "head", "conv"],
     "selectedMetrics": ["rmse"], "showAllRuns": False, "displayName": "hyperparameters and validation RMSE"},
)


def state(charts: bool = False) -> str:
    """The runs table (ranked, with metric columns), or with `charts` the trials compared in charts: full-budget
    trials only, every run shown (MLflow charts show the first 10 by default)."""
    table = {"selectedColumns": list(COLUMNS), "columnOrder": list(COLUMNS), "orderByKey": "metrics.`rmse`",
             "orderByAsc": True}
    if not charts:
        return json.dumps(table, sort_keys=True)
    cards = [{"uuid": f"fkp-chart-{i}", "runsCountToCompare": 100, "metricSectionId": SECTION, "deleted": False,
              "isGenerated": False, **chart} for i, chart in enumerate(CHARTS)]
    return json.dumps({**table, "searchFilter": CHARTS_FILTER, "compareRunCharts": cards,
                       "compareRunSections": [{"uuid": SECTION, "name": "Trials compared", "display": True,
                                               "isReordered": True, "deleted": False, "isGenerated": False}],
                       "isAccordionReordered": True, "runsHiddenMode": "SHOW_ALL", "runListHidden": True},
                      sort_keys=True)


def ensure(client, experiment_id: str, tags: dict) -> None:
    """Write the views on the experiment unless they are already there as they should be."""
    from mlflow.exceptions import MlflowException
    for tag, value in ((TAG, state()), (f"mlflow.sharedViewState.{CHARTS_KEY}", state(charts=True))):
        if tags.get(tag) == value:
            continue
        try:
            client.set_experiment_tag(experiment_id, tag, value)
        except MlflowException:  # workers starting at once on a new server: another one wrote this same view
            if client.get_experiment(experiment_id).tags.get(tag) != value:
                raise


def runs_url(experiment_id: str, base: str = "http://127.0.0.1:5000", charts: bool = False) -> str:
    if charts:
        return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={CHARTS_KEY}&compareRunsMode=CHART"
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={KEY}"


def run_url(experiment_id: str, run_id: str, base: str = "http://127.0.0.1:5000") -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
