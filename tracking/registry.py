"""Put a study's best model in MLflow's model registry, under an alias a deployment can follow.

The best trial is chosen by validation RMSE, as every engine chooses; its test RMSE is recorded on
the version, never used to choose. Registering the same best trial again adds no version: the
alias is simply (re)pointed at it.
"""
from __future__ import annotations

import math

from train.errors import UserError

ALIAS = "best"


def best_run(tracker, study: str):
    """The finished trial of `study` (any engine) with the lowest validation RMSE that logged a model."""
    runs = [r for r in tracker.trials(study=study)
            if r.info.status == "FINISHED" and math.isfinite(r.data.metrics.get("rmse", math.nan))
            and r.outputs is not None and r.outputs.model_outputs
            and not r.data.tags.get("fkp_rung")]  # a rung run is a short forecast, never the model to ship
    if not runs:
        raise UserError(f"study {study!r} has no finished trial with a logged MLflow model in {tracker.uri}")
    return min(runs, key=lambda r: r.data.metrics["rmse"])


def register_best(tracker, study: str, name: str, alias: str = ALIAS, quiet: bool = False):
    """Register the best model of `study` as a version of registered model `name` and point `alias`
    at it. Returns the ModelVersion."""
    from mlflow.exceptions import MlflowException
    run = best_run(tracker, study)
    model_id = max(run.outputs.model_outputs, key=lambda o: o.step).model_id
    client = tracker.client
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Facial-keypoint CNN: the best trial of a search "
                                                         "(lowest validation RMSE), registered by search.run")
    existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run.info.run_id]
    if existing:
        version = existing[0]
    else:
        m, tags = run.data.metrics, run.data.tags
        from tracking.mlflow_model import fluent_uri
        with fluent_uri(tracker.uri):  # the registry resolves `models:/<id>` through the process-wide URI
            version = client.create_model_version(
                name, source=f"models:/{model_id}", run_id=run.info.run_id, model_id=model_id,
                tags={"study": study, "engine": tags.get("fkp_engine", ""), "trial": tags.get("fkp_trial", ""),
                      "rmse": f"{m['rmse']:.4f}",
                      **({"test_rmse": f"{m['test_rmse']:.4f}"} if "test_rmse" in m else {})})
    client.set_registered_model_alias(name, alias, version.version)
    if not quiet:
        test = run.data.metrics.get("test_rmse")
        print(f"registered model {name!r} version {version.version} (alias {alias!r}): "
              f"{run.data.tags.get('fkp_engine')} trial {run.data.tags.get('fkp_trial')}, validation RMSE "
              f"{run.data.metrics['rmse']:.3f} px" + (f", test RMSE {test:.3f} px" if test is not None else "")
              + f"; load it with mlflow.keras.load_model('models:/{name}@{alias}')", flush=True)
    return version
