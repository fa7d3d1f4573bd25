"""MLflow models, datasets, search summaries, the registry, dashboard artifacts, printed commands and
the engines report, on real stores."""
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from search import run as search_run
from tests.fixtures import write_training_csv
from tracking import mlflow_view, report, stores
from tracking.mlflow_tracker import Tracker
from tracking.registry import register_best

TINY = {"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0, "augment": "none"}


@pytest.fixture
def searched(tmp_path):
    data = write_training_csv(tmp_path / "d.csv", n=24)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps([TINY, {**TINY, "learning_rate": 0.01}]))
    search_run.main(["--space", "cnn", "--engine", "manual", "--trials", "2", "--epochs", "1", "--split", "random",
                     "--data", str(data), "--no-presets", "--config", str(cfg), "--study-name", "t"])
    return tmp_path


def test_trials_log_models_and_data_and_the_search_its_summary(searched):
    import mlflow
    from tracking.mlflow_model import fluent_uri
    assert "MLFLOW_TRACKING_URI" not in os.environ  # logging models left the process's URI as it was
    tracker = Tracker("cnn")
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert json.loads(tags[mlflow_view.TAG])["orderByKey"] == "metrics.`rmse`"
    charts = json.loads(tags[f"mlflow.sharedViewState.{mlflow_view.CHARTS_KEY}"])
    assert [c["type"] for c in charts["compareRunCharts"]] == ["SCATTER", "SCATTER", "PARALLEL"]
    shown = tracker.client.search_runs([tracker.experiment_id], charts["searchFilter"])
    assert {r.info.run_id for r in shown} == {r.info.run_id for r in tracker.trials(study="t")}  # every trial, no search run
    trials = tracker.trials(study="t")
    parent_id = trials[0].data.tags["mlflow.parentRunId"]
    parent = tracker.client.get_run(parent_id)
    best = min(trials, key=lambda r: r.data.metrics["rmse"])
    assert parent.data.metrics["trials_finished"] == 2 and parent.data.metrics["trials_failed"] == 0
    assert parent.data.metrics["best_rmse"] == best.data.metrics["rmse"]
    assert parent.data.metrics["best_test_rmse"] == best.data.metrics["test_rmse"]
    assert parent.data.tags["best_run_id"] == best.info.run_id and parent.data.metrics["wall_time_s"] > 0
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.data.metrics["log_model_s"] > 0
        assert "model.keras" in {a.path for a in tracker.client.list_artifacts(run.info.run_id)}
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == f"faces-{run.data.tags.get('data_sha', parent.data.params['data_sha'])[:12]}"
        with fluent_uri(tracker.uri):
            info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
            model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
        assert "keras" in info.flavors
        assert info.signature.inputs.inputs[0].shape == (-1, 96, 96, 1)
        assert info.signature.outputs.inputs[0].shape == (-1, 30)
        assert model.predict(np.zeros((2, 96, 96, 1), np.float32), verbose=0).shape == (2, 30)

    version = register_best(tracker, "t", "fkp-cnn")
    again = register_best(tracker, "t", "fkp-cnn")  # the same best trial: no new version
    assert str(version.version) == str(again.version) == "1" and version.run_id == best.info.run_id
    aliased = tracker.client.get_model_version_by_alias("fkp-cnn", "best")
    assert str(aliased.version) == "1" and aliased.tags["test_rmse"] == f"{best.data.metrics['test_rmse']:.4f}"
    with fluent_uri(tracker.uri):
        assert mlflow.keras.load_model("models:/fkp-cnn@best").count_params() == best.data.metrics["params"]

    report.main(["--space", "cnn", "--study", "t", "--output", str(searched / "rep")])
    md = (searched / "rep" / "report.md").read_text()
    assert "# Engines compared on the `cnn` space" in md and "no test split logged" not in md
    assert "| manual " in md and f"{best.data.metrics['test_rmse']:.3f}" in md
    for png in ("best_so_far.png", "pareto.png", "worst_faces.png"):
        assert (searched / "rep" / png).stat().st_size > 5000, png
    assert "None: no Optuna search in this study" in md  # importances need an Optuna study
    assert "<table>" in (searched / "rep" / "report.html").read_text()


def test_the_engines_report_without_a_test_split_says_so(tmp_path):
    from mlflow.entities import Metric
    tracker = Tracker("cnn")
    now = int(time.time() * 1000)
    for engine, values in (("optuna", (9.0, 7.5, 8.0)), ("manual", (8.5, 8.8))):
        parent = tracker.open_search("old", engine, {"space": "cnn", "trials": 3, "epochs": 2, "data": "gone.csv"})
        for number, rmse in enumerate(values):
            run_id = tracker.start_trial(parent, "old", engine, number, {"model": "cnn", "blocks": 2 + number})
            metrics = {"rmse": rmse, "params": 1000 * (number + 1), "inference_s_per_100": 0.01 * rmse,
                       "mean_face_rmse": 9.5}
            tracker.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
            tracker.end_trial(run_id, "finished")
        tracker.close_search(parent)
    report.main(["--space", "cnn", "--output", str(tmp_path / "rep")])  # default: the newest study
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**no test split logged** in these runs" in md
    assert "study `old`" in md and "9.500 px" in md
    assert "Not drawn: the data file the study trained on (gone.csv) is not here." in md
    assert (tmp_path / "rep" / "best_so_far.png").exists() and (tmp_path / "rep" / "pareto.png").exists()


def test_publish_trial_uploads_curves_and_a_note_linking_the_run(tmp_path):
    from optuna.artifacts import get_all_artifact_meta
    from optuna_dashboard import get_note

    from tracking.dashboard import publish_trial
    study = optuna.create_study(storage=stores.optuna_url(), study_name="s")
    trial = study.ask()
    rng = np.random.default_rng(0)
    result = SimpleNamespace(history={"loss": [2.0], "rmse": [1.5], "val_rmse": [1.9]},
                             val_images=rng.integers(0, 255, (3, 96, 96)), val_true=rng.uniform(20, 70, (3, 30)),
                             val_pred=rng.uniform(20, 70, (3, 30)), metrics={"rmse": 1.9, "params": 10})
    publish_trial(study, trial, result, "abc123", None)
    study.tell(trial, 1.9)
    frozen = study.trials[0]
    names = sorted(a.filename for a in get_all_artifact_meta(frozen, storage=study._storage))
    assert names == ["learning_curve.png", "predictions.png"]
    assert len(list(stores.optuna_artifact_dir().iterdir())) == 2
    body = get_note(trial)
    assert "run id `abc123`" in body and "| validation RMSE (px) | 1.900 |" in body and "test RMSE" not in body


def test_printed_commands_name_the_venvs_tools(tmp_path, monkeypatch):
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for tool in ("mlflow", "optuna-dashboard", "python"):
        (venv_bin / tool).write_text("")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert stores.tool("mlflow") == ".venv/bin/mlflow"  # relative from the directory it was run in
    ui = stores.mlflow_ui_command("sqlite:////x/mlflow.db")
    assert ui.startswith("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow ui ")
    dash = stores.dashboard_command("sqlite:////x/optuna.db")
    assert dash.startswith(".venv/bin/optuna-dashboard sqlite:////x/optuna.db --artifact-dir ")
    assert str(stores.optuna_artifact_dir()) in dash
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert stores.tool("mlflow") == str(venv_bin / "mlflow")  # outside it: the full path
    assert stores.tool("no-such-tool") == "no-such-tool"


def test_the_quick_start_bench_reads_the_readmes_main_job_and_the_best_full_trial_of_its_store(searched):
    from pathlib import Path

    from bench import quickstart
    repo = Path(quickstart.__file__).resolve().parents[1]
    command = quickstart.main_job_command(repo / "README.md")
    assert command.startswith("python3 -m venv .venv && ") and "-m search.run" in command
    # .ci/run runs the README's other command, the tests, exactly
    test_command = (repo / "README.md").read_text().split(command, 1)[1].split("```")[0]
    test_command = [ln for ln in test_command.splitlines() if ln.strip() and not ln.startswith("#")][0]
    assert (repo / ".ci" / "run").read_text().rstrip().splitlines()[-1] == test_command
    found = quickstart.best_trial(searched / "mlruns")
    runs = [r for r in Tracker("cnn").trials() if r.data.tags.get("fkp_status") == "finished"]
    assert found["trials"] == 2 and found["val"] == min(r.data.metrics["rmse"] for r in runs)
    assert found["epochs"] == 1 and found["fit_to_time"] is None
    section = quickstart.markdown(command, None, 700.0, found, "0:05", "abc1234")
    assert "MISSED" in section  # 700 s is over the 10 minutes, whatever the RMSE
