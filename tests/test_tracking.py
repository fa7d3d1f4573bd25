import json

import numpy as np
import pytest

from search import run as search_run
from tests.fixtures import write_training_csv
from tracking import leaderboard
from tracking.mlflow_tracker import Tracker
from train import data, evaluate


def _row(engine, rmse, inference, trial):
    return {"engine": engine, "trial": str(trial), "model": "cnn", "hyperparameters": "", "rmse": rmse,
            "test_rmse": rmse + 0.25, "key": "k", "params": 1000, "size_mb": 0.1, "inference_s_per_100": inference, "latency_ms": 1.0, "run_id": "x"}


def test_leaderboard_ranks_known_metrics_and_marks_the_pareto_front():
    rows = [_row("optuna", 2.0, 0.05, 0), _row("manual", 1.5, 0.20, 1), _row("keras-tuner", 2.5, 0.10, 2),
            _row("optuna", 1.8, 0.04, 3)]
    ranked = leaderboard.rank(rows)
    assert [r["rmse"] for r in ranked] == [1.5, 1.8, 2.0, 2.5]
    assert [r["pareto"] for r in ranked] == [True, True, False, False]
    by_speed = leaderboard.rank(rows, metric="inference_s_per_100", top=2)
    assert [r["trial"] for r in by_speed] == ["3", "0"]
    md = leaderboard.render(ranked, "md")
    assert md.splitlines()[2].startswith("| 1 | manual | 1 | cnn | 1.500 | 1.750 |")
    assert "val RMSE px (ranked)" in md.splitlines()[0] and "test RMSE px" in md.splitlines()[0]
    csv_text = leaderboard.render(ranked, "csv")
    assert csv_text.splitlines()[1].startswith("1,manual,1,cnn,1.5,")
    assert "<table>" in leaderboard.render(ranked, "html")


def test_export_best_round_trips_through_evaluate(tmp_path, capsys):
    path = write_training_csv(tmp_path / "d.csv", n=24)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([{"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0,
                                "augment": "none", "learning_rate": lr} for lr in (1e-3, 3e-3)]))
    search_run.main(["--space", "cnn", "--engine", "manual", "--no-presets", "--config", str(cfg), "--epochs", "1",
                     "--split", "random", "--data", str(path)])
    tracker = Tracker("cnn")
    runs = tracker.trials()
    for run in runs:
        artifacts = {a.path for a in tracker.client.list_artifacts(run.info.run_id)}
        assert {"model.keras", "config.json", "learning_curve.png", "predictions.png"} <= artifacts
        assert len(tracker.client.get_metric_history(run.info.run_id, "val_rmse")) == 1
    capsys.readouterr()
    leaderboard.main(["--space", "cnn", "--format", "csv", "--output", str(tmp_path / "lb.csv"),
                      "--export-best", str(tmp_path / "best"), "--tflite", "fp32,int8", "--data", str(path)])
    best_rmse = min(r.data.metrics["rmse"] for r in runs)
    assert float((tmp_path / "lb.csv").read_text().splitlines()[1].split(",")[4]) == pytest.approx(best_rmse)
    result = evaluate.evaluate(tmp_path / "best", data.load(path))
    assert np.isfinite(result["rmse"])
    exported = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert exported["rmse"] == pytest.approx(best_rmse)
    # --faces test scores the faces the trial held out, so the shipped file reproduces the trial's test figure
    capsys.readouterr()
    evaluate.main([str(tmp_path / "best"), "--data", str(path), "--faces", "test", "--split", "random", "--json"])
    held_out = json.loads(capsys.readouterr().out)
    assert held_out["rmse"] == pytest.approx(exported["test_rmse"], abs=1e-4) and held_out["rows"] < 24
    edge = json.loads((tmp_path / "best" / "litert.json").read_text())
    assert (tmp_path / "best" / "model_int8.tflite").exists() and (tmp_path / "best" / "model_fp32.tflite").exists()
    assert abs(edge["fp32"]["rmse_change"]) < 1e-3  # float32 LiteRT computes the same function
    best_run = min(runs, key=lambda r: r.data.metrics["rmse"]).info.run_id
    logged = tracker.client.get_run(best_run).data.metrics
    assert logged["tflite_int8_size_mb"] == pytest.approx(edge["int8"]["size_mb"])
    assert "tflite_fp32_s_per_100" in logged


def test_leaderboard_without_runs_is_a_one_line_error():
    with pytest.raises(SystemExit) as exit_:
        leaderboard.main(["--space", "cnn"])
    assert exit_.value.code == 2
