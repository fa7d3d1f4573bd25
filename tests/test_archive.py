"""A study carried to another machine's stores resumes there, ranks the same and finalizes from it."""
import gzip
import json
import os
import subprocess
import sys

import optuna
import pytest

from search import archive
from search import run as search_run
from tests.fixtures import write_training_csv
from tracking.leaderboard import collect
from tracking.mlflow_tracker import Tracker


def _search(data):
    return ["--space", "cnn", "--trials", "2", "--epochs", "3", "--rungs", "1", "--split", "random",
            "--data", str(data), "--no-presets", "--study-name", "t", "--max-params", "0", "--engine", "optuna"]


def _ranked(study="t"):
    return sorted((r["trial"], round(r["rmse"], 9), round(r["test_rmse"], 9)) for r in collect(Tracker("cnn"), study))


def test_a_study_saved_here_and_loaded_elsewhere_ranks_the_same_and_resumes_without_training(tmp_path, monkeypatch,
                                                                                               capsys):
    data = write_training_csv(tmp_path / "d.csv", n=30)
    monkeypatch.setenv("FKP_STORE_DIR", str(tmp_path / "here"))
    search_run.main(_search(data))
    here = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/here/optuna.db")
    ranked = _ranked()
    # a worker still training here when the study is saved: a trial and its MLflow run both RUNNING
    from search.optuna_engine import HOST
    live = here.ask()
    live.set_user_attr("host", HOST)
    live.set_user_attr("pid", os.getpid())
    (parent,) = Tracker("cnn").searches("t")
    live.set_user_attr("mlflow_run_id", Tracker("cnn").start_trial(parent.info.run_id, "t", "optuna", live.number, {}))
    file = tmp_path / "t.jsonl.gz"
    archive.main(["save", "--study", "t", str(file)])

    monkeypatch.setenv("FKP_STORE_DIR", str(tmp_path / "elsewhere"))
    archive.main(["load", str(file)])
    there = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/elsewhere/optuna.db")
    assert [(t.number, t.state, t.values, t.params) for t in there.trials[:-1]] == \
           [(t.number, t.state, t.values, t.params) for t in here.trials[:-1]]
    # no worker there will end the carried running trial: it lands failed as interrupted, to be run again
    carried = there.trials[-1]
    assert carried.state == optuna.trial.TrialState.FAIL and carried.user_attrs["interrupted"]
    assert {k: v for k, v in there.user_attrs.items()} == here.user_attrs  # the study's clock goes with it
    assert _ranked() == ranked and len(ranked) >= 1
    tracker = Tracker("cnn")
    runs = {r.info.run_id: r for r in tracker.trials(study="t")}
    (search,) = tracker.searches("t")
    assert runs[carried.user_attrs["mlflow_run_id"]].info.status == "FAILED"
    assert sorted(r.info.status for r in runs.values()).count("RUNNING") == 0
    for t in there.trials[:-1]:  # the trials point at the runs as they were made here, not at the old ids
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna_trial_number"] == str(t.number)
        assert run.data.tags["mlflow.parentRunId"] == search.info.run_id
    assert search.data.tags["best_run_id"] in runs
    best = runs[search.data.tags["best_run_id"]]
    config = json.loads((tmp_path / tracker.client.download_artifacts(best.info.run_id, "config.json")).read_text())
    assert config["model"] == "cnn"
    curve = tracker.client.get_metric_history(best.info.run_id, "val_rmse")
    assert len(curve) == int(best.data.metrics["epochs"])  # every epoch's curve, for bench.replay

    capsys.readouterr()
    search_run.main(_search(data))  # the same command on the new stores: nothing to train
    assert "already has 2 finished trials" in capsys.readouterr().out
    assert len(Tracker("cnn").trials(study="t")) == len(runs)
    there = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/elsewhere/optuna.db")
    assert [t.user_attrs.get("retry_of") for t in there.trials if t.state.name == "WAITING"] == [carried.number]


def test_loading_twice_or_a_file_that_is_no_archive_is_one_line_and_loads_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_text("not gzip")
    headerless = tmp_path / "headerless.jsonl.gz"
    with gzip.open(headerless, "wt") as f:
        f.write(json.dumps({"kind": "run"}) + "\n")
    for path, says in ((bad, "not a study archive"), (headerless, "not a study archive of format 1"),
                       (tmp_path / "none.jsonl.gz", "no such archive")):
        done = subprocess.run([sys.executable, "-m", "search.archive", "load", str(path)], capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"error: {path}: {says}")
    done = subprocess.run([sys.executable, "-m", "search.archive", "save", "--study", "nope", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no Optuna study 'nope'" in done.stderr


def test_a_study_already_in_the_target_store_is_refused_and_nothing_is_loaded(tmp_path, monkeypatch):
    data = write_training_csv(tmp_path / "d.csv", n=30)
    search_run.main([*_search(data), "--trials", "1"])
    file = tmp_path / "t.jsonl.gz"
    archive.main(["save", "--study", "t", str(file)])
    optuna.delete_study(study_name="t", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    runs = len(Tracker("cnn").trials())
    with pytest.raises(SystemExit) as exit_:  # its MLflow runs are here, its Optuna study is not
        archive.main(["load", str(file)])
    assert exit_.value.code == 2 and len(Tracker("cnn").trials()) == runs
    assert "t" not in optuna.get_all_study_names(f"sqlite:///{tmp_path}/mlruns/optuna.db")

    monkeypatch.setenv("FKP_STORE_DIR", str(tmp_path / "other"))
    (tmp_path / "other").mkdir()
    optuna.create_study(study_name="t", storage=f"sqlite:///{tmp_path}/other/optuna.db")
    with pytest.raises(SystemExit) as exit_:  # its Optuna study is here, its MLflow runs are not
        archive.main(["load", str(file)])
    assert exit_.value.code == 2 and Tracker("cnn").trials() == []
