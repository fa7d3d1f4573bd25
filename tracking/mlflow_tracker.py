"""One tracking module for every engine: a parent run per search, a child run per trial.

Hyperparameters are logged under the same names whichever engine proposed them, so runs of
manual configs, Optuna and Keras Tuner sit side by side in the MLflow UI. Logging is batched
(one `log_batch` for params, one for metrics and curves, one artifact upload) and the model is
logged as its `.keras` file: no pip-requirement inference per model.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tracking import stores
from tracking.liveness import HOST, dead_here

STATUS = {"finished": "FINISHED", "failed": "FAILED", "pruned": "KILLED", "killed": "KILLED"}
METRICS = ("rmse", "params", "size_mb", "inference_s_per_100", "latency_ms", "train_s", "measure_s",
           "train_images_per_s", "train_images", "mean_face_rmse")


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


class Tracker:
    def __init__(self, experiment: str, uri: str | None = None):
        import logging

        from mlflow.tracking import MlflowClient
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = stores.mlflow_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = experiment
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            # By default MLflow would put artifacts under the current directory, not beside the store.
            location = f"{stores.artifact_root()}/{experiment}" if self.uri.startswith("sqlite:") else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.overhead_s = 0.0

    # ---- searches -------------------------------------------------------------------------
    def open_search(self, study: str, engine: str, params: dict) -> str:
        """The parent run of (study, engine): created once, reused when the search resumes."""
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.fkp_role = 'search' and tags.fkp_study = '{study}' and tags.fkp_engine = '{engine}'",
            max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "resumed_at", time.strftime("%Y-%m-%d %H:%M:%S"))
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=f"{study}/{engine}", tags={
            "fkp_role": "search", "fkp_study": study, "fkp_engine": engine, "fkp_space": self.experiment})
        from mlflow.entities import Param
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in
                                                      {**params, "code_version": code_version()}.items()])
        return run.info.run_id

    def close_search(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def trials(self, parent_id: str | None = None, study: str | None = None):
        filters = ["tags.fkp_role = 'trial'"]
        if parent_id:
            filters.append(f"tags.`mlflow.parentRunId` = '{parent_id}'")
        if study:
            filters.append(f"tags.fkp_study = '{study}'")
        return self.client.search_runs([self.experiment_id], " and ".join(filters), max_results=5000)

    def fail_dead_trials(self, parent_id: str) -> list:
        """Trial runs left RUNNING by a process that no longer exists on this host: mark them failed."""
        dead = []
        for run in self.trials(parent_id):
            tags = run.data.tags
            if run.info.status == "RUNNING" and dead_here(tags.get("host"), tags.get("pid")):
                self.client.set_tag(run.info.run_id, "fkp_status", "failed")
                self.client.set_tag(run.info.run_id, "error", "process was killed during the trial")
                self.client.set_terminated(run.info.run_id, "FAILED")
                dead.append(run)
        return dead

    # ---- trials ---------------------------------------------------------------------------
    def start_trial(self, parent_id: str, study: str, engine: str, number: int, config: dict,
                    refs: dict | None = None) -> str:
        t0 = time.perf_counter()
        from mlflow.entities import Param
        tags = {"mlflow.parentRunId": parent_id, "fkp_role": "trial", "fkp_engine": engine, "fkp_study": study,
                "fkp_space": self.experiment, "fkp_trial": str(number), "fkp_status": "running",
                "fkp_model": str(config.get("model", "")), "host": HOST, "pid": str(os.getpid()),
                **{k: str(v) for k, v in (refs or {}).items()}}
        run = self.client.create_run(self.experiment_id, run_name=f"{engine}-{number}", tags=tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(config.items())])
        self.overhead_s += time.perf_counter() - t0
        return run.info.run_id

    def end_trial(self, run_id: str, status: str, result=None, error: str | None = None) -> float:
        """Log metrics, curves and artifacts, then close the run. Returns seconds spent logging."""
        t0 = time.perf_counter()
        from mlflow.entities import Metric, RunTag
        now = int(time.time() * 1000)
        metrics, tags = [], [RunTag("fkp_status", status)]
        if error:
            tags.append(RunTag("error", error[:5000]))
        if result is not None:
            metrics += [Metric(k, float(result.metrics[k]), now, 0) for k in METRICS if k in result.metrics]
            metrics.append(Metric("epochs", float(result.metrics["epochs"]), now, 0))
            for key, curve in (("loss", "loss"), ("val_rmse", "val_rmse"), ("train_rmse", "rmse")):
                metrics += [Metric(key, v, now, step) for step, v in enumerate(result.history.get(curve, []))]
            self._log_artifacts(run_id, result)
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        spent = time.perf_counter() - t0
        self.overhead_s += spent
        self.client.log_batch(run_id, metrics=[Metric("tracking_s", spent, now, 0)])
        self.client.set_terminated(run_id, STATUS[status])
        return spent

    def _log_artifacts(self, run_id, result) -> None:
        from tracking import plots
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "config.json").write_text(json.dumps(result.config, indent=2, sort_keys=True))
            (tmp / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
            (tmp / "model.keras").write_bytes(Path(result.model_path).read_bytes())
            plots.learning_curve(result.history, tmp / "learning_curve.png")
            plots.predictions(result.val_images, result.val_true, result.val_pred, tmp / "predictions.png")
            self.client.log_artifacts(run_id, str(tmp))
