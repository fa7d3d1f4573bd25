import json

import numpy as np
import pytest

from tests.fixtures import write_training_csv
from train import data, evaluate, fit
from train.trial import TrialFailed, TrialSettings, run_trial

TINY = ["--model", "cnn", "--epochs", "1", "--split", "random"]


def test_fit_then_evaluate_round_trip(tmp_path, capsys):
    path = write_training_csv(tmp_path / "t.csv", n=24)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0}))
    fit.main([*TINY, "--config", str(cfg), "--imputation", "knn", "--augment", "flip", "--data", str(path),
              "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "RMSE" in out and "params" in out
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["imputation"] == "knn" and config["blocks"] == 2
    result = evaluate.evaluate(tmp_path / "run", data.load(path))
    assert np.isfinite(result["rmse"]) and set(result["per_keypoint"]) >= {"nose_tip", "left_eye_center"}
    assert saved["params"] > 0 and saved["size_mb"] > 0


def test_evaluate_needs_labels_and_a_model(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(tmp_path), "--data", str(write_training_csv(tmp_path / "t.csv", n=4))])
    assert exit_.value.code == 2


def test_a_diverging_config_fails_with_a_reason(tmp_path):
    d = data.load(write_training_csv(tmp_path / "t.csv", n=24))
    with pytest.raises(TrialFailed, match="NaN"):
        run_trial({"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "batch_norm": False,
                   "learning_rate": 1e12, "optimizer": "sgd", "augment": "none"}, d,
                  TrialSettings(epochs=2, split="random"), out_dir=tmp_path / "o")


def test_a_config_over_the_compute_budget_is_rejected_before_training(tmp_path):
    from train.trial import Rejected
    d = data.load(write_training_csv(tmp_path / "t.csv", n=24))
    config = {"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0}
    with pytest.raises(Rejected, match="multiply-accumulates per image is over the budget of 0.01M"):
        run_trial(config, d, TrialSettings(epochs=50, split="random", max_mmacs=0.01), out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written
    done = run_trial(config, d, TrialSettings(epochs=1, split="random", max_mmacs=1e6), out_dir=tmp_path / "p")
    assert 0 < done.metrics["mmacs"] < 1e6


def test_refit_trains_on_training_and_validation_faces_for_every_epoch_and_keeps_the_test_faces_out(tmp_path, capsys):
    from tests.fixtures import write_training_csv
    from train import data as data_mod
    from train.fit import main
    from train.split import split3
    path = write_training_csv(tmp_path / "d.csv", n=40)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0,
                                  "augment": "none", "learning_rate": 0.0, "batch_norm": False}))
    main(["--config", str(config), "--data", str(path), "--split", "random", "--epochs", "3", "--patience", "1",
          "--refit", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert "refit on training + validation faces | test RMSE" in out and "train rmse" in out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    train, val, test = split3(data_mod.load(path), 0.15, 0.15, "random", 0)
    # nothing learns (no step, no batch statistics): early stopping at patience 1 would have ended at epoch 2
    assert metrics["epochs"] == 3 and metrics["train_images"] == len(train) + len(val)
    assert metrics["test_images"] == len(test) and np.isnan(metrics["rmse"])
    main(["--config", str(config), "--data", str(path), "--split", "random", "--epochs", "3", "--patience", "1",
          "--out", str(tmp_path / "s")])  # the premise: without --refit, early stopping ends it at epoch 2
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["epochs"] == 2


def test_early_stopping_waits_for_one_cycles_warm_up(tmp_path):
    ds = data.load(write_training_csv(tmp_path / "t.csv", n=24))
    config = {"model": "cnn", "blocks": 1, "filters_1": 4, "dense_units": 8, "batch_size": 16, "learning_rate": 0.3,
              "schedule": "onecycle"}
    # 20 epochs: a 6-epoch warm-up, so the premise below does not hang on one epoch's noise (at 12 epochs, a
    # change in the flip's labels moved the first worse epoch from inside the 3-epoch warm-up to just after it)
    curve = run_trial(config, ds, TrialSettings(epochs=20, patience=1, split="random")).history["val_rmse"]
    warm = int(0.3 * 20)
    worse = next(i for i in range(1, len(curve)) if curve[i] >= min(curve[:i]))
    assert worse < warm  # the premise: the rising learning rate made an epoch worse during the warm-up
    assert len(curve) > warm  # and patience 1 did not stop it there
