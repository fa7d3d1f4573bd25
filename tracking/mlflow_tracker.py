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

from tracking import spool, stores
from tracking.liveness import HOST, dead_here

STATUS = {"finished": "FINISHED", "failed": "FAILED", "pruned": "KILLED", "killed": "KILLED", "rejected": "KILLED"}
METRICS = ("rmse", "test_rmse", "params", "mmacs", "size_mb", "inference_s_per_100", "latency_ms", "train_s", "measure_s",
           "train_images_per_s", "train_images", "test_images", "mean_face_rmse", "mean_face_test_rmse")
# Without this tag MLflow's UI opens an experiment on its GenAI overview (traces) instead of its runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _refused_credentials(call, uri: str):
    """A server that refuses this user: one line naming how to sign in, never the password."""
    from mlflow.exceptions import MlflowException
    try:
        return call()
    except MlflowException as exc:
        code = exc.get_http_status_code()
        if code not in (401, 403):
            raise
        from train.errors import UserError
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        raise UserError(f"MLflow tracking server {uri} refused " + (f"user {user!r}" if user else "anonymous access")
                        + f" (HTTP {code}): pass the cluster's --cluster FILE, or set MLFLOW_TRACKING_USERNAME "
                          "and MLFLOW_TRACKING_PASSWORD") from None


class Tracker:
    def __init__(self, experiment: str, uri: str | None = None):
        import logging

        from mlflow.tracking import MlflowClient
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = stores.mlflow_uri(uri)
        spool.prepare(self.uri)  # a tracking server that does not answer: one line, now
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = experiment
        exp = _refused_credentials(lambda: self.client.get_experiment_by_name(experiment), self.uri)
        if exp is None:
            # By default MLflow would put artifacts under the current directory, not beside the store.
            location = f"{stores.artifact_root()}/{experiment}" if self.uri.startswith("sqlite:") else None
            from mlflow.exceptions import MlflowException
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location,
                                                                   tags=EXPERIMENT_KIND)
            except MlflowException as exc:  # two workers starting at once on a new server: the other made it
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(experiment)
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id
            for key, value in EXPERIMENT_KIND.items():  # experiments made before the tag existed
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(self.experiment_id, key, value)
        from tracking import mlflow_view
        mlflow_view.ensure(self.client, self.experiment_id, exp.tags if exp is not None else {})  # metric columns
        # A server that goes away mid-search: writes are spooled and sent when it is back (tracking/spool.py).
        self.client = spool.wrap(self.client, self.uri)
        self.overhead_s = 0.0
        self._opened: dict[str, float] = {}  # parent run id -> when this process opened it
        self._datasets: dict = {}  # data sha -> MLflow dataset input, built once per search

    # ---- searches -------------------------------------------------------------------------
    def searches(self, study: str, engine: str | None = None) -> list:
        """Parent runs of `study` (of one engine if given), oldest first."""
        query = f"tags.fkp_role = 'search' and tags.fkp_study = '{study}'"
        if engine:
            query += f" and tags.fkp_engine = '{engine}'"
        return self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time ASC"],
                                       max_results=100)

    def open_search(self, study: str, engine: str, params: dict, tags: dict | None = None) -> str:
        """The parent run of (study, engine): created once, shared by every worker and every resume."""
        found = self.searches(study, engine)
        if not found:
            run = self.client.create_run(self.experiment_id, run_name=f"{study}/{engine}", tags={
                "fkp_role": "search", "fkp_study": study, "fkp_engine": engine, "fkp_space": self.experiment,
                **{k: str(v) for k, v in (tags or {}).items()}})
            from mlflow.entities import Param
            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in
                                                          {**params, "code_version": code_version()}.items()])
            found = self.searches(study, engine)
            # Workers that started together may each have made one: all keep the oldest.
            for extra in found[1:]:
                if extra.info.run_id == run.info.run_id:
                    self.client.delete_run(run.info.run_id)
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "resumed_at", time.strftime("%Y-%m-%d %H:%M:%S"))
        self._opened[run_id] = time.time()
        return run_id

    def close_search(self, run_id: str, status: str = "FINISHED", study_time: float | None = None) -> None:
        """study_time: the search's wall time while any worker ran (search/study_clock.py), when known."""
        try:
            self.summarize_search(run_id, study_time)
        except Exception as exc:  # a summary must never lose the search's own status
            print(f"warning: could not summarise search run {run_id}: {exc}", flush=True)
        self.client.set_terminated(run_id, status)

    def summarize_search(self, parent_id: str, study_time: float | None = None) -> dict:
        """Log on the search run what a person looks for first: the best trial and how the budget went.

        best_rmse is the lowest validation RMSE; best_test_rmse is the test RMSE of that same trial (the
        test split never chooses). worker_time_s adds up every session of every worker; wall_time_s is the
        study's own wall time when the engine keeps one (Optuna), else the same sum (one worker)."""
        from mlflow.entities import Metric, RunTag
        runs = self.trials(parent_id)
        counts = {s: 0 for s in ("finished", "pruned", "failed", "killed", "running")}
        for run in runs:
            if run.data.tags.get("fkp_rung"):  # one step of a trial that climbs rungs, not a trial
                continue
            status = run.data.tags.get("fkp_status", "running")
            counts[status] = counts.get(status, 0) + 1
        done = [r for r in runs if r.data.tags.get("fkp_status") == "finished" and "rmse" in r.data.metrics
                and r.data.metrics["rmse"] == r.data.metrics["rmse"] and not r.data.tags.get("fkp_rung")]
        parent = self.client.get_run(parent_id)
        if parent_id in self._opened:
            before = parent.data.metrics.get("worker_time_s", parent.data.metrics.get("wall_time_s", 0.0))
            wall = before + time.time() - self._opened.pop(parent_id)
        else:  # summarised from another process: the span of its trials
            ends = [r.info.end_time or r.info.start_time for r in runs]
            wall = (max(ends) - parent.info.start_time) / 1000 if ends else 0.0
        summary = {f"trials_{k}": float(v) for k, v in counts.items() if k != "running"}
        summary["worker_time_s"] = wall
        summary["wall_time_s"] = wall if study_time is None else study_time
        tags = []
        if done:
            best = min(done, key=lambda r: r.data.metrics["rmse"])
            summary["best_rmse"] = best.data.metrics["rmse"]
            if "test_rmse" in best.data.metrics:
                summary["best_test_rmse"] = best.data.metrics["test_rmse"]
            tags = [RunTag("best_run_id", best.info.run_id), RunTag("best_trial", best.data.tags.get("fkp_trial", ""))]
        now = int(time.time() * 1000)
        self.client.log_batch(parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()], tags=tags)
        return {**summary, **{t.key: t.value for t in tags}}

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

    CURVES = (("loss", "loss"), ("val_rmse", "val_rmse"), ("train_rmse", "rmse"))

    def log_epoch(self, run_id: str, epoch: int, logs: dict) -> None:
        """Each epoch's curves as it ends, so pruned and killed trials keep theirs."""
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        self.client.log_batch(run_id, metrics=[Metric(key, float(logs[name]), now, epoch)
                                               for key, name in self.CURVES if name in logs])
        self.overhead_s += time.perf_counter() - t0

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
            self._log_artifacts(run_id, result)
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        extra = [] if result is None else self._log_model(run_id, result, now)  # after the metrics: the model shows them
        spent = time.perf_counter() - t0
        self.overhead_s += spent
        self.client.log_batch(run_id, metrics=[Metric("tracking_s", spent, now, 0), *extra])
        self.client.set_terminated(run_id, STATUS[status])
        return spent

    def _log_model(self, run_id, result, now) -> list:
        """The model as an MLflow Keras model (`runs:/<id>/model`); a failure here never fails the trial."""
        from mlflow.entities import Metric

        from tracking import mlflow_model
        try:
            return [Metric("log_model_s", mlflow_model.log_keras_model(self.uri, run_id, result.model_path), now, 0)]
        except Exception as exc:
            self.client.set_tag(run_id, "log_model_error", f"{type(exc).__name__}: {exc}"[:5000])
            return []

    def log_dataset(self, run_id: str, data) -> None:
        """The faces as the run's dataset input, named by their hash (built once per data file, not per trial)."""
        key = getattr(data, "sha", None) or id(data)
        try:
            if key not in self._datasets:
                from tracking import mlflow_model
                self._datasets[key] = mlflow_model.dataset_input(data)
            self.client.log_inputs(run_id, datasets=[self._datasets[key]])
        except Exception as exc:  # the trial runs whether or not MLflow can describe its data
            self.client.set_tag(run_id, "log_dataset_error", f"{type(exc).__name__}: {exc}"[:5000])

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
