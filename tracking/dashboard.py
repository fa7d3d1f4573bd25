"""What optuna-dashboard shows of a trial beyond its values: its learning curve and predictions as
artifacts, and a note that links its MLflow run.

Artifacts go to a FileSystemArtifactStore under the store dir (`mlruns/optuna_artifacts`); the
dashboard serves them when started with `--artifact-dir` on that folder, as tracking/stores.py's
dashboard_command does. Uses `optuna.artifacts.upload_artifact` (optuna-dashboard's own
`upload_artifact` is deprecated in favour of it; the dashboard lists both kinds).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from tracking import stores


def artifact_store(path: Path | None = None):
    from optuna.artifacts import FileSystemArtifactStore
    path = Path(path) if path else stores.optuna_artifact_dir()
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def note(result, run_id: str, experiment_id: str | None, ui_base: str = "http://127.0.0.1:5000") -> str:
    from tracking import mlflow_view
    m = result.metrics
    lines = ["### MLflow run", "",
             f"run id `{run_id}`" + (f": [open in the MLflow UI]({mlflow_view.run_url(experiment_id, run_id, ui_base)})"
                                     if experiment_id else ""), "",
             f"(the UI's address assumes `{stores.tool('mlflow')} ui … --port 5000` on this machine)", "",
             "| metric | value |", "|---|---|",
             f"| validation RMSE (px) | {m['rmse']:.3f} |"]
    if m.get("test_rmse") is not None:
        lines.append(f"| test RMSE (px) | {m['test_rmse']:.3f} |")
    for key, label, spec in (("mean_face_rmse", "mean-face RMSE (px)", ".3f"), ("params", "parameters", ",.0f"),
                             ("size_mb", "size (MB)", ".3f"), ("inference_s_per_100", "inference (s / 100 images)", ".4f"),
                             ("epochs", "epochs", ".0f")):
        if m.get(key) is not None:
            lines.append(f"| {label} | {format(m[key], spec)} |")
    return "\n".join(lines) + "\n"


def publish_trial(study, trial, result, run_id: str, tracking_uri: str | None = None, store=None) -> list[str]:
    """Upload the trial's learning curve and predictions PNGs and save its note. Call it from the
    objective once the trial has trained (the trial must still be running). Returns the artifact ids;
    a failure here is one warning line, never a failed trial."""
    try:
        return _publish(trial, result, run_id, tracking_uri, store)
    except Exception as exc:
        print(f"warning: optuna-dashboard artifacts of trial {trial.number} not saved: {type(exc).__name__}: {exc}",
              flush=True)
        return []


def _publish(trial, result, run_id, tracking_uri, store) -> list[str]:
    from optuna_dashboard import save_note

    from tracking import plots
    store = store or artifact_store()
    ids = []
    with tempfile.TemporaryDirectory(prefix="fkp-dashboard-") as tmp:
        curve, faces = Path(tmp) / "learning_curve.png", Path(tmp) / "predictions.png"
        plots.learning_curve(result.history, curve)
        plots.predictions(result.val_images, result.val_true, result.val_pred, faces)
        from optuna.artifacts import upload_artifact
        for path in (curve, faces):
            ids.append(upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial))
    experiment_id = None
    try:
        from mlflow.tracking import MlflowClient
        experiment_id = MlflowClient(tracking_uri=stores.mlflow_uri(tracking_uri)).get_run(run_id).info.experiment_id
    except Exception:  # an offline (spooled) run, or a server away: the note still names the run
        pass
    save_note(trial, note(result, run_id, experiment_id))
    return ids
