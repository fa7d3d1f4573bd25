"""The final stage on a real (tiny) study: multi-seed selection, refit, ensemble, distillation, export, resume."""
import json
import shutil
from pathlib import Path

import pytest

from search import finalize
from search import run as search_run
from tests.fixtures import build_study, write_training_csv


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real study for the whole module (25 s to make); each test works on its own copy of the stores."""
    return build_study(tmp_path_factory.mktemp("study"), "--trials", "3", "--epochs", "2")


@pytest.fixture
def study(built, tmp_path):
    root, data = built
    shutil.copytree(root / "mlruns", tmp_path / "mlruns")  # the test's own store (conftest: FKP_STORE_DIR)
    return data


def _args(data, *extra):
    return ["--study", "s", "--data", str(data), "--top-k", "2", "--seeds", "2", *extra]


def test_final_stage_selects_on_seeds_refits_distils_exports_and_resumes_without_retraining(study, tmp_path, capsys):
    out = tmp_path / "best"
    # a time budget too roomy to shorten anything: the stage's plan must name every step it trains (else it raises)
    args = _args(study, "--ensemble", "2", "--distil", "--out", str(out), "--timeout", "1e6")
    finalize.main(args)
    first = capsys.readouterr().out
    report = json.loads((out / "finalize.json").read_text())
    means = {cid: s["mean_val_rmse"] for cid, s in report["selection"].items()}
    assert report["chosen"]["mean_val_rmse"] == min(means.values())  # chosen on the mean over seeds
    assert all(len(s["val_rmse"]) == 2 for s in report["selection"].values())
    assert set(report["models"]) == {"refit", "ensemble", "alone_seed0", "student_seed0", "alone_seed1",
                                     "student_seed1"}
    assert report["models"]["ensemble"]["params"] > report["models"]["refit"]["params"]
    assert report["shipped"].startswith("distil/")
    shipped = report["models"]["student_seed0"]
    assert report["flip_tta"]["mmacs"] == pytest.approx(2 * shipped["mmacs"])  # measured beside it, twice the work
    assert report["flip_tta"]["test_rmse"] != shipped["test_rmse"]
    # what the stage cost: every model it trained (2 selection runs, 2 refits, a second student alone, 2 distilled)
    exported = json.loads((out / "metrics.json").read_text())
    assert exported["params"] == shipped["params"] and exported["mean_face_test_rmse"] > 0
    assert exported["size_mb"] > 0 and exported["epochs"] == report["refit_epochs"]
    assert len(report["training_s"]) == 7 and all(v > 0 for v in report["training_s"].values())
    for name in ("model.keras", "model_fp16.tflite", "model_int8.tflite", "litert.json", "config.json",
                 "metrics.json", "COMMAND.md", "predictions.png", "models.png"):
        assert (out / name).exists(), name
    assert "[finalize] chosen: trial" in first and "distillation:" in first
    from bench.final import markdown
    table = markdown(report, "best")
    assert "| refit |" in table and "| student_seed1 |" in table and "Distillation:" in table and "flip TTA" in table
    assert "Cost: " in table
    state = json.loads((tmp_path / "runs" / "finalize" / "s" / "state.json").read_text())
    # selection runs never scored the test faces: the test split is scored once, at the end
    selects = [v for k, v in state["steps"].items() if k.startswith("select/")]
    assert selects and all(v["metrics"]["test_rmse"] != v["metrics"]["test_rmse"] for v in selects)
    assert all(v["metrics"]["test_rmse"] == v["metrics"]["test_rmse"] for k, v in state["steps"].items()
               if not k.startswith("select/"))

    finalize.main(args)  # the same command again: nothing trains, the same figures come out
    again = capsys.readouterr().out
    kept = {line.split()[1].rstrip(":") for line in again.splitlines() if line.endswith("done before, kept")}
    assert ": training" not in again and kept == set(state["steps"])
    scores = lambda r: {k: (m["test_rmse"], m["params"], m["mmacs"]) for k, m in r["models"].items()}  # noqa: E731
    assert scores(json.loads((out / "finalize.json").read_text())) == scores(report)

    from tracking.mlflow_tracker import Tracker
    tracker = Tracker("cnn")
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.fkp_role = 'finalize'")
    assert len(runs) == 2 and runs[0].data.tags["fkp_chosen_run"] in runs[0].data.tags["fkp_source_runs"]


@pytest.mark.parametrize("best, trained, schedule, expected", [
    ([20, 24], [25, 29], "constant", 18),  # both stopped early: 22 x 70 / (70 + 15) faces, the same steps
    ([20, 27], [25, 30], "constant", 30),  # one used the whole budget (best 27, patience 5): early stopping never fired
    ([20, 24], [25, 29], "onecycle", 30),  # a decaying schedule is planned over the budget: cutting would reshape it
    ([], [], "constant", 30),              # one seed, no selection run: the budget
])
def test_refit_epochs_keep_the_steps_of_an_early_stop_and_the_budget_otherwise(best, trained, schedule, expected):
    epochs, why = finalize.refit_epochs(best, trained, 30, schedule, 70, 15)
    assert epochs == expected and why


def test_the_refit_trains_on_more_faces_and_a_rerun_gives_the_same_score(study, tmp_path, capsys):
    finalize.main(_args(study))
    report_line = next(line for line in capsys.readouterr().out.splitlines() if "[finalize] refit:" in line)
    state = json.loads((tmp_path / "runs" / "finalize" / "s" / "state.json").read_text())
    name, refit = next((k, v) for k, v in state["steps"].items() if k.startswith("refit/"))
    select = state["steps"][f"select/{name.split('/')[1]}/seed1"]  # the same config, on the training faces only
    assert refit["train_images"] > select["train_images"]  # training + validation faces
    assert f"{refit['metrics']['epochs']} epochs" in report_line
    # the same command from scratch (another --work): the same test RMSE
    finalize.main([*_args(study), "--work", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "state.json").read_text())
    assert abs(again["steps"][next(k for k in again["steps"] if k.startswith("refit/"))]["metrics"]["test_rmse"]
               - refit["metrics"]["test_rmse"]) <= 0.01


def test_bad_input_is_one_line_and_exit_2_before_any_training(study, tmp_path, capsys):
    cases = [(["--study", "nope"], "study 'nope' does not exist"),
             (["--top-k", "9"], "--top-k 9 is larger than the 3 finished trial(s) of study 's'"),
             (["--max-params", "100"], "parameters is over the budget of 100"),
             (["--ship-ensemble"], "--ship-ensemble ships the refits averaged: pass --ensemble 2 or more")]
    capsys.readouterr()
    for extra, message in cases:  # one study for every case: each is refused before anything trains
        with pytest.raises(SystemExit) as exit_:
            finalize.main([*_args(study), *extra])
        err = capsys.readouterr()
        assert exit_.value.code == 2 and message in err.err and len(err.err.strip().splitlines()) == 1, extra
        assert ": training" not in err.out
        assert not (tmp_path / "runs" / "finalize" / "s" / "state.json").exists()


def test_an_interrupted_export_leaves_the_old_folder_whole(study, tmp_path, monkeypatch):
    out = tmp_path / "best"
    out.mkdir()
    (out / "model.keras").write_text("the old model")
    from train import litert

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # as a Ctrl-C during conversion
    working = litert.export
    monkeypatch.setattr(litert, "export", broken)
    with pytest.raises(SystemExit):
        finalize.main([*_args(study), "--out", str(out)])
    assert (out / "model.keras").read_text() == "the old model"
    monkeypatch.setattr(litert, "export", working)  # not undo(): that would also undo the fixture's chdir
    finalize.main([*_args(study), "--out", str(out)])
    assert (out / "model.keras").stat().st_size > 1000 and not (tmp_path / "best.new").exists()


def test_a_study_with_no_finished_trial_is_refused_in_one_line(tmp_path, capsys):
    data = write_training_csv(tmp_path / "d.csv", n=30)
    search_run.main(["--space", "cnn", "--data", str(data), "--trials", "1", "--epochs", "1", "--split", "random",
                     "--no-presets", "--study-name", "none-fit", "--max-params", "500", "--sampler", "random",
                     "--timeout", "5"])  # every draw is refused; the clock ends the search
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        finalize.main(["--study", "none-fit", "--data", str(data)])
    assert exit_.value.code == 2 and "has no finished trial" in capsys.readouterr().err


def _ranked(data):
    """The study's finished trials by validation RMSE, with their params (as the stage ranks them)."""
    from tracking.leaderboard import collect, one_key
    from tracking.mlflow_tracker import Tracker
    rows, _ = one_key(collect(Tracker("cnn"), "s"))
    return sorted(rows, key=lambda r: r["rmse"])


def test_a_budget_below_the_studys_ships_only_a_model_that_fits_and_an_ensemble_past_top_k_adds_seeds(
        study, tmp_path, capsys):
    rows = _ranked(study)
    budget = int(min(r["params"] for r in rows))  # only the smallest trial fits, whatever its rank
    finalize.main([*_args(study), "--top-k", "1", "--ensemble", "3", "--max-params", str(budget), "--out",
                   str(tmp_path / "tiny")])
    report = json.loads((tmp_path / "tiny" / "finalize.json").read_text())
    smallest = min(rows, key=lambda r: r["params"])
    assert report["chosen"]["trial"] == str(smallest["trial"])
    assert json.loads((tmp_path / "tiny" / "metrics.json").read_text())["params"] <= budget
    # one config, three members: its refit at seeds 0, 1 and 2, averaged; the refit shipped is seed 0
    cid = next(iter(report["selection"]))
    assert sorted(k for k in report["training_s"] if k.startswith("refit/")) == [
        f"refit/{cid}/seed{s}" for s in range(3)]
    # one candidate with a decaying schedule has nothing to be chosen over: no selection run, whatever --seeds says
    assert not any(k.startswith("select/") for k in report["training_s"]) and report["chosen"]["val_rmse"] == [
        pytest.approx(smallest["rmse"])]
    assert "one candidate with a decaying schedule: nothing to choose" in capsys.readouterr().out
    ensemble, refit = report["models"]["ensemble"], report["models"]["refit"]
    assert ensemble["members"] == 3 and ensemble["params"] == 3 * refit["params"]
    assert ensemble["test_rmse"] != refit["test_rmse"] and report["shipped"] == f"refit/{cid}/seed0"


def test_ship_ensemble_ships_the_averaged_refits_only_when_together_they_fit(study, tmp_path, capsys):
    params = int(_ranked(study)[0]["params"])
    args = [*_args(study), "--top-k", "1", "--seeds", "1", "--ensemble", "2", "--ship-ensemble"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # each member fits alone; the two together do not
        finalize.main([*args, "--max-params", str(2 * params - 1)])
    err = capsys.readouterr()
    assert exit_.value.code == 2 and len(err.err.strip().splitlines()) == 1
    assert "--ship-ensemble: the 2 refits averaged" in err.err and ": training" not in err.out

    out = tmp_path / "pair"
    finalize.main([*args, "--max-params", str(2 * params), "--out", str(out)])
    report = json.loads((out / "finalize.json").read_text())
    assert report["shipped"] == "ensemble" and report["models"]["ensemble"]["params"] == 2 * params
    assert json.loads((out / "metrics.json").read_text())["test_rmse"] == report["models"]["ensemble"]["test_rmse"]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "ensemble" and len(config["members"]) == 2
    # the shipped file is the mean of the two refits (seeds 0 and 1 of the one config), not either of them
    import numpy as np

    from train import data as data_mod
    from train import metrics
    from train.model_io import keras_model
    state = json.loads((tmp_path / "runs" / "finalize" / "s" / "state.json").read_text())
    refits = sorted(k for k in report["training_s"] if k.startswith("refit/"))
    faces = data_mod.load(str(study)).images[:5, ..., None].astype(np.float32)
    each = [metrics.predict(keras_model(Path(state["steps"][k]["model"]).parent), faces) for k in refits]
    assert len(refits) == 2 and np.abs(each[0] - each[1]).max() > 1e-3
    np.testing.assert_allclose(metrics.predict(keras_model(out), faces), np.mean(each, axis=0), atol=1e-3)


def test_a_student_within_the_budget_learns_from_teachers_over_it_and_shares_their_steps(study, tmp_path, capsys):
    rows = _ranked(study)
    finalize.main(_args(study, "--ensemble", "2"))  # the full-budget stage first: its selection and refits are kept
    capsys.readouterr()
    student = tmp_path / "student.json"
    student.write_text(json.dumps({"model": "cnn", "blocks": 2, "f1": 8, "f2": 8, "conv": "plain",
                                   "head": "gap", "dense_units": 0, "learning_rate": 0.003}))
    from train.models import build, resolve
    small = int(build(resolve(json.loads(student.read_text()))).count_params())
    assert small < min(r["params"] for r in rows[:2])  # every teacher is over the student's budget
    out = tmp_path / "tiny"
    finalize.main([*_args(study), "--ensemble", "2", "--distil", "--student", str(student), "--max-params",
                   str(small), "--out", str(out)])
    log = capsys.readouterr().out
    trained = {line.split()[1].rstrip(":") for line in log.splitlines() if line.endswith(": training")}
    sid = finalize.Candidate("", "", 0.0, json.loads(student.read_text())).cid
    # only the student trained, alone and distilled on 2 seeds: the teachers' selection and refits were reused
    assert len(trained) == 4 and all(sid in name for name in trained), trained
    report = json.loads((out / "finalize.json").read_text())
    assert report["models"]["ensemble"]["params"] > small
    assert json.loads((out / "metrics.json").read_text())["params"] == small
    assert report["shipped"].startswith("distil/")
    # a mirror-averaged teacher is another teacher: only the distilled students train again
    finalize.main([*_args(study), "--ensemble", "2", "--distil", "--student", str(student), "--max-params",
                   str(small), "--teacher-tta", "--out", str(tmp_path / "tiny-tta")])
    log = capsys.readouterr().out
    again = {line.split()[1].rstrip(":") for line in log.splitlines() if line.endswith(": training")}
    assert len(again) == 2 and all(n.startswith("distil/") for n in again) and not again & trained, again
    models = json.loads((tmp_path / "tiny-tta" / "finalize.json").read_text())["models"]
    assert models["ensemble_flip_tta"]["mmacs"] == pytest.approx(2 * models["ensemble"]["mmacs"])
    assert models["alone_seed0"]["test_rmse"] == report["models"]["alone_seed0"]["test_rmse"]


def test_a_student_over_the_budget_or_without_distil_is_refused_before_training(study, tmp_path, capsys):
    student = tmp_path / "student.json"
    student.write_text(json.dumps({"model": "cnn", "blocks": 2, "f1": 8, "f2": 8}))
    cases = [(["--ensemble", "2", "--distil", "--student", str(student), "--max-params", "50"],
              f"--student {student}: "),
             (["--student", str(student)], "--student is the distilled model: pass --distil"),
             (["--teacher-tta"], "--teacher-tta is the distillation teacher's: pass --distil")]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_:
            finalize.main([*_args(study), *extra])
        err = capsys.readouterr()
        assert exit_.value.code == 2 and message in err.err and len(err.err.strip().splitlines()) == 1, extra
        assert ": training" not in err.out


def test_two_stages_on_one_work_folder_keep_each_others_steps(tmp_path, capsys):
    """Steps alone, with a stand-in for training: what is under test is the bookkeeping, not a model."""
    from types import SimpleNamespace
    trained = []

    def train(name):
        def fit(out, tick, seconds_left, on_replan):
            trained.append(name)
            for epoch in range(2):
                tick(epoch, {"rmse": 3.0 - epoch})
            return SimpleNamespace(config={"name": name}, history={"val_rmse": [2.0, 1.0]},
                                   metrics={"rmse": 1.0, "test_rmse": float("nan"), "epochs": 2, "train_s": 1.0,
                                            "train_images": 10})
        return fit
    plan = {"data_sha": "x", "settings": {}, "training_code": 2}
    first, second = finalize.Steps(tmp_path, plan), finalize.Steps(tmp_path, plan)  # both open before either trains
    first.run("a", train("a"), 2)
    second.run("b", train("b"), 2)
    second.run("a", train("a"), 2)  # finished by the other stage meanwhile: kept, not trained again
    assert trained == ["a", "b"]
    assert set(finalize.Steps(tmp_path, plan).state["steps"]) == {"a", "b"}
    assert "[finalize] b: epoch 2/2, train RMSE 2.000 px" in capsys.readouterr().out
    with pytest.raises(finalize.UserError, match="trained by training code 2, this is 3"):
        finalize.Steps(tmp_path, {**plan, "training_code": 3})


def test_bench_repro_trains_the_forgotten_step_twice_and_finds_the_same_score(study, tmp_path, capsys,
                                                                               monkeypatch):
    from pathlib import Path

    from bench import repro
    stage = _args(study)
    finalize.main(stage)
    capsys.readouterr()
    work = tmp_path / "runs" / "finalize" / "s"
    step = next(k for k in json.loads((work / "state.json").read_text())["steps"] if k.startswith("refit/"))
    results = tmp_path / "bench"
    results.mkdir()
    shutil.copy(Path(repro.__file__).parent / "results.json", results)
    repro.main(["--steps", step, "--results", str(results), "--", *stage])
    row = next(line for line in (results / "results.md").read_text().splitlines() if line.startswith(f"| `{step}`"))
    kind, first, second, difference = (v.strip() for v in row.split("|")[2:6])
    assert kind == "test" and first == second and float(difference) == 0.0
    kept = json.loads((work / "state.json").read_text())["steps"][step]["metrics"]["test_rmse"]
    assert kept == pytest.approx(float(first), abs=1e-6)
    with pytest.raises(SystemExit) as exit_:
        repro.main(["--steps", "refit/nope/seed0", "--results", str(results), "--", *stage])
    assert exit_.value.code == 2 and "no step refit/nope/seed0" in capsys.readouterr().err
    from train import trial
    monkeypatch.setattr(trial, "TRAINING_CODE", trial.TRAINING_CODE + 1)  # the code moved on since the stage ran
    with pytest.raises(SystemExit) as exit_:
        repro.main(["--steps", step, "--results", str(results), "--", *stage])
    assert exit_.value.code == 2 and f"trained by training code {trial.TRAINING_CODE - 1}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # and the study itself: its scores would be averaged with new seeds
        finalize.main(stage)
    err = capsys.readouterr()
    assert exit_.value.code == 2 and "study 's' was trained by training code" in err.err and ": training" not in err.out
