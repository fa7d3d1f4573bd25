"""What a person sees: MLflow's UI and optuna-dashboard on a real store, rendered by headless Chromium.

The servers are started with the very commands search.run prints (tracking/stores.py), on free ports.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from search import run as search_run
from search.cluster import free_port
from tests.fixtures import write_training_csv
from tracking import mlflow_view, stores
from tracking.mlflow_tracker import Tracker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: `apt-get install -y chromium` "
                                                         "(.ci/run installs it) to check the dashboards in a browser")
TINY = {"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0, "augment": "none"}


class Server:
    """A printed command run as printed (its port swapped for a free one), stopped with its process group."""

    def __init__(self, command: str, default_port: int, probe: str, log):
        self.port = free_port()
        command = command.replace(f"--port {default_port}", f"--port {self.port}")
        self.proc = subprocess.Popen(["bash", "-c", command], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self.base + probe, timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{command} did not come up; see {log.name}")
                time.sleep(0.5)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _seen(url: str, *ready: str) -> tuple[str, str]:
    """(the page's text as a person reads it, its HTML) after Chromium has run its scripts. A page whose data came
    after Chromium's time budget (a server's first, cold request, or a machine busy with the other tests) is
    looked at again, with a longer budget each time, until all of `ready` shows; the assertions then judge what a
    person would see. (CI once failed the charts page three times over at a fixed 20 s budget.)"""
    for budget_s in (20, 40, 60, 90, 120):
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=2400,1000",
                              f"--virtual-time-budget={budget_s * 1000}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=300).stdout
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))
        if all(r in text for r in ready):
            break
    return text, dom


def _around(text: str, marker: str, width: int = 400) -> str:
    """What the page showed where `marker` should be (or its start), for a failure message that says why."""
    at = text.find(marker)
    return f"page text near {marker!r}: " + (text[max(at - width, 0):at + width] if at >= 0 else text[:2 * width])


@pytest.fixture
def store(tmp_path):
    data = write_training_csv(tmp_path / "d.csv", n=24)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps([TINY]))
    search_run.main(["--space", "cnn", "--engine", "all", "--trials", "1", "--epochs", "1", "--split", "random",
                     "--data", str(data), "--no-presets", "--config", str(cfg), "--study-name", "t"])
    return tmp_path


def _publish_one(storage_url: str, run_id: str) -> int:
    """A study whose trial went through tracking.dashboard.publish_trial: its curve, faces and note."""
    from tracking.dashboard import publish_trial
    study = optuna.create_study(study_name="published", storage=storage_url)
    study.set_metric_names(["rmse"])
    trial = study.ask()
    trial.suggest_int("blocks", 2, 3)
    rng = np.random.default_rng(0)
    result = SimpleNamespace(history={"loss": [3.0, 2.0], "rmse": [2.0, 1.5], "val_rmse": [2.5, 1.9]},
                             val_images=rng.integers(0, 255, (6, 96, 96)), val_true=rng.uniform(20, 70, (6, 30)),
                             val_pred=rng.uniform(20, 70, (6, 30)),
                             metrics={"rmse": 1.9, "test_rmse": 2.125, "params": 1234, "epochs": 2})
    publish_trial(study, trial, result, run_id)
    study.tell(trial, 1.9)
    return study._study_id


def test_a_person_sees_runs_metrics_engines_and_the_named_study(store, tmp_path):
    tracker = Tracker("cnn")
    trials = tracker.trials(study="t")
    assert {r.data.tags["fkp_engine"] for r in trials} == {"manual", "optuna", "keras-tuner"}
    best = min((r for r in trials if r.info.status == "FINISHED"), key=lambda r: r.data.metrics["rmse"])
    url = stores.optuna_url()
    optuna_run = next(r for r in trials if r.data.tags["fkp_engine"] == "optuna")
    published = _publish_one(url, optuna_run.info.run_id)
    log = open(tmp_path / "servers.log", "w")
    servers = []
    try:
        servers.append(Server(stores.mlflow_ui_command(tracker.uri), 5000, "/health", log))
        servers.append(Server(stores.dashboard_command(url), 8081, "/api/studies", log))
        mlflow_ui, dashboard = servers

        text, _ = _seen(mlflow_view.runs_url(tracker.experiment_id, mlflow_ui.base), "test_rmse")
        assert "Training runs" in text  # the runs, not MLflow's GenAI overview
        for column in ("fkp_engine", "rmse", "test_rmse", "params", "size_mb", "learning_rate", "imputation"):
            assert re.search(rf"\b{re.escape(column)}\b", text), column
        for engine in ("manual", "optuna", "keras-tuner"):
            assert f"{engine}-" in text, engine  # each engine's trial run, listed flat (ranked by rmse)
        assert f"{best.data.metrics['rmse']:.4f}"[:6] in text  # the best trial's validation RMSE, as a value
        assert f"{best.data.metrics['test_rmse']:.4f}"[:6] in text

        text, dom = _seen(mlflow_view.runs_url(tracker.experiment_id, mlflow_ui.base, charts=True),
                          "Trials compared (3)", "Parallel Coordinates")
        # the charts view's own section, over the three full-budget trials
        assert "Trials compared (3)" in text and "Parallel Coordinates" in text, _around(text, "Trials compared")
        assert "fkp_budget" in dom  # its filter, in the search box: full-budget trials only

        study_id = optuna.load_study(study_name="t", storage=url)._study_id
        text, _ = _seen(f"{dashboard.base}/dashboard/studies/{study_id}", "Best Trial")
        assert "t (id=" in text and "Best Trial (number=0)" in text
        assert "History y Axis rmse" in text and "Objective 0" not in text  # the objective by its name
        text, _ = _seen(f"{dashboard.base}/dashboard/studies/{study_id}/trials", "mlflow_run_id")
        assert "1 Trials" in text and "mlflow_run_id" in text  # the trial, linked to its MLflow run

        text, dom = _seen(f"{dashboard.base}/dashboard/studies/{published}/trials", "MLflow run")
        assert "MLflow run" in text and optuna_run.info.run_id in text  # the note
        assert "test RMSE (px) 2.125" in text
        assert f"#/experiments/{tracker.experiment_id}/runs/{optuna_run.info.run_id}" in dom  # its link
        images = re.findall(r'<img[^>]*alt="(learning_curve\.png|predictions\.png)"[^>]*src="([^"]+)"', dom)
        assert sorted(name for name, _ in images) == ["learning_curve.png", "predictions.png"]
        for _, src in images:  # the dashboard serves them from the artifact folder
            assert urllib.request.urlopen(dashboard.base + src, timeout=10).read()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        for server in servers:
            server.stop()
        log.close()
