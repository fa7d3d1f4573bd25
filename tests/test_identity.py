"""Numbers a user can trust: the test split, study identity, and the engines' rough edges."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

import spaces
from search import run as search_run
from search.identity import StudyKey
from search.keras_tuner_engine import KerasTunerEngine
from search.optuna_engine import OptunaEngine
from tests.fixtures import faces, train_tiny_instead, write_training_csv
from tracking import leaderboard
from tracking.mlflow_tracker import Tracker
from train.data import FaceData
from train.split import split3

TINY = {"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0, "augment": "none"}
REPO = Path(__file__).resolve().parents[1]


def _manual(data, cfg, *extra):
    return ["--space", "cnn", "--engine", "manual", "--no-presets", "--config", str(cfg), "--epochs", "1",
            "--split", "random", "--data", str(data), *extra]


@pytest.fixture
def tiny_cfg(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps([TINY]))
    return cfg


def test_three_way_split_is_disjoint_deterministic_and_keeps_look_alikes_together():
    images, kp = faces(40, seed=1)
    rng = np.random.default_rng(0)
    # every face twice, the copy with a little noise: frames of one video
    twins = np.clip(images.astype(int) + rng.integers(-3, 4, images.shape), 0, 255).astype(np.uint8)
    data = FaceData(np.concatenate([images, twins]), np.concatenate([kp, kp]), np.arange(80), "x.csv", "sha")
    train, val, test = split3(data, 0.2, 0.2, "group", seed=0)
    assert len(set(train) | set(val) | set(test)) == 80
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert 8 <= len(test) <= 24 and 8 <= len(val) <= 24
    side = np.zeros(80, int)
    side[val], side[test] = 1, 2
    assert (side[:40] == side[40:]).mean() >= 0.9  # a face and its near-copy land on the same side
    again = split3(data, 0.2, 0.2, "group", seed=0)
    assert all((a == b).all() for a, b in zip((train, val, test), again))
    assert set(split3(data, 0.2, 0.2, "group", seed=1)[2]) != set(test)  # the seed is part of the split


def test_a_named_study_refuses_other_data_in_one_line(tmp_path, tiny_cfg, capsys):
    first = write_training_csv(tmp_path / "a.csv", n=24, seed=0)
    other = write_training_csv(tmp_path / "b.csv", n=24, seed=5)
    search_run.main(_manual(first, tiny_cfg, "--study-name", "S"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        search_run.main(_manual(other, tiny_cfg, "--study-name", "S"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    from train import data as data_mod
    a, b = data_mod.load(first).sha[:12], data_mod.load(other).sha[:12]
    assert len(err.splitlines()) == 1 and a in err and b in err


def test_a_study_trained_by_older_training_code_is_not_resumed(tmp_path, tiny_cfg, capsys, monkeypatch):
    from train import trial
    data = write_training_csv(tmp_path / "a.csv", n=24)
    code = trial.TRAINING_CODE
    monkeypatch.setattr(trial, "TRAINING_CODE", code - 1)  # the code before the last change to training
    search_run.main(_manual(data, tiny_cfg, "--study-name", "S"))
    monkeypatch.setattr(trial, "TRAINING_CODE", code)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        search_run.main(_manual(data, tiny_cfg, "--study-name", "S"))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert f"trained by training code {code - 1}, this is {code}" in err
    search_run.main(_manual(data, tiny_cfg))  # the default name carries the code in its digest: a study of its own


def test_the_leaderboard_shows_one_data_and_budget_key_unless_asked(tmp_path, tiny_cfg, capsys):
    data = write_training_csv(tmp_path / "a.csv", n=24)
    search_run.main(_manual(data, tiny_cfg))
    search_run.main(_manual(data, tiny_cfg, "--epochs", "2"))
    rows, hidden = leaderboard.one_key(leaderboard.collect(Tracker("cnn")))
    assert len(rows) == 1 and hidden == 1
    assert len(leaderboard.collect(Tracker("cnn"))) == 2
    capsys.readouterr()
    leaderboard.main(["--space", "cnn", "--format", "csv"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # header + the newest key's one trial
    leaderboard.main(["--space", "cnn", "--format", "csv", "--all-keys"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_a_failed_manual_config_runs_again_on_the_next_run(tmp_path):
    data = write_training_csv(tmp_path / "a.csv", n=24)
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps([{**TINY, "optimizer": "nonsense"}]))
    search_run.main(_manual(data, cfg))
    search_run.main(_manual(data, cfg))
    assert [r.info.status for r in Tracker("cnn").trials()] == ["FAILED", "FAILED"]


def test_a_config_over_the_parameter_budget_is_refused_before_training(tmp_path, tiny_cfg):
    data = write_training_csv(tmp_path / "a.csv", n=24)
    search_run.main(_manual(data, tiny_cfg, "--max-params", "500"))  # the tiny net has 982
    (run,) = Tracker("cnn").trials()
    assert run.data.tags["fkp_status"] == "rejected" and "982 parameters" in run.data.tags["error"]
    assert "val_rmse" not in run.data.metrics  # not one epoch trained


def test_keras_tuners_first_trial_is_a_real_sample_not_every_lowest_value(tmp_path):
    from search.engine import Budget
    space = spaces.get("cnn")
    oracle = KerasTunerEngine("random").make_oracle(Budget(3, None, 0, "s"), 5, space)
    oracle._set_project_dir(str(tmp_path), "p")
    values = oracle.create_trial("tuner0").hyperparameters.values
    lowest = {p.name: p.low for p in space.params if hasattr(p, "low") and p.when is None}
    assert set(lowest) <= set(values)  # every parameter drawn, not left to its default
    assert any(values[name] != low for name, low in lowest.items())


def test_the_sampler_that_runs_is_the_one_logged_and_objectives_are_named():
    engine = OptunaEngine("tpe", objectives=("rmse", "latency"))
    study = engine.open_study("multi", spaces.get("cnn"), 0)
    assert engine.describe()["sampler"] == "nsga2" and type(study.sampler.inner).__name__ == "NSGAIISampler"
    assert study.metric_names == ["rmse", "latency"]
    single = OptunaEngine("tpe").open_study("single", spaces.get("cnn"), 0)
    assert single.metric_names == ["rmse"] and type(single.sampler.inner).__name__ == "TPESampler"


def test_presets_of_the_space_are_the_first_optuna_trials():
    study = OptunaEngine("tpe").open_study("warm", spaces.get("cnn"), 0)
    first = study.ask()
    from search.adapters import OptunaSuggest
    from spaces.base import sample
    from spaces.cnn import EDGE_FAST
    assert sample(spaces.get("cnn"), OptunaSuggest(first)) == {"model": "cnn", "stem_stride": 2,
                                                                "batch_norm": True, **EDGE_FAST}


def _runner(tmp_path):
    """One search's trial runner on tiny data, as an engine drives it, and its tracker."""
    from search.identity import StudyKey
    from search.progress import Progress
    from search.runner import TrialRunner
    from train import data as data_mod
    from train.trial import TrialSettings
    data = data_mod.load(write_training_csv(tmp_path / "a.csv", n=24))
    settings = TrialSettings(epochs=3, split="random")
    tracker = Tracker("cnn")
    parent = tracker.open_search("s", "optuna", {})
    return TrialRunner(data, settings, tracker, Progress(1, 3), "s", parent, StudyKey.of(data, settings)), tracker


def test_a_pruned_trial_keeps_its_curve_in_mlflow(tmp_path):
    from train.trial import Pruned
    runner, tracker = _runner(tmp_path)

    def report(epoch, val):
        if epoch == 1:
            raise Pruned("pruned at epoch 2")
    with pytest.raises(Pruned):
        runner("optuna", 0, TINY, report=report)
    (run,) = tracker.trials()
    assert run.info.status == "KILLED"
    assert [m.step for m in tracker.client.get_metric_history(run.info.run_id, "val_rmse")] == [0, 1]


def test_a_rung_run_cut_by_the_time_budget_is_pruned_not_measured_as_if_its_schedule_had_ended(tmp_path):
    from train.trial import Pruned
    runner, tracker = _runner(tmp_path)
    runner.seconds_left = lambda: 0.0  # the clock runs out in the first epoch
    with pytest.raises(Pruned, match="time budget ran out in epoch 1 of rung 3/6"):
        runner("optuna", 0, TINY, refs={"fkp_rung": "3/6"}, epochs=3)
    (run,) = tracker.trials()
    assert run.data.tags["fkp_status"] == "pruned" and run.data.tags["stopped_by_timeout"] == "1"
    assert "rmse" not in run.data.metrics  # no rung value to rank


def test_a_full_trial_the_clock_would_cut_says_it_replanned_and_a_rung_never_replans(tmp_path, capsys):
    runner, tracker = _runner(tmp_path)
    runner.settings.epochs = 8
    onecycle = {**TINY, "schedule": "onecycle", "learning_rate": 1e-2}

    def clock():  # the runner and the re-plan each read the clock once an epoch: 10 s an epoch after the first
        for left in (55, 45, 35, 25, 15, 5):
            yield from (left, left)
    runner.seconds_left = clock().__next__
    runner("optuna", 0, onecycle)
    runner.seconds_left = clock().__next__
    runner("optuna", 1, onecycle, refs={"fkp_rung": "6/8"}, epochs=6)
    full, rung = sorted(tracker.trials(), key=lambda r: r.data.tags["fkp_budget"])
    assert full.data.tags["schedule_fit_to_time"] == "5" and full.data.metrics["epochs"] == 5
    assert "stopped_by_timeout" not in full.data.tags  # it ended its own (shorter) schedule before the clock did
    assert "schedule_fit_to_time" not in rung.data.tags and rung.data.metrics["epochs"] == 6
    out = capsys.readouterr().out
    assert "the time left fits 5 of 8 epochs" in out and "epoch 4/5" in out


def test_no_trial_starts_with_less_time_left_than_a_trial_here_took_to_finish_its_first_epoch(tmp_path):
    from search.engine import Budget

    class Clock:
        used_s = 0.0

        def used(self):
            return self.used_s

    budget = Budget(trials=6, timeout=420, seed=0, study="s", clock=Clock())
    runner, _ = _runner(tmp_path)
    runner.on_first_epoch = budget.first_epoch_took  # as search/engine.py:run_engine wires it
    runner("optuna", 0, TINY)
    took = budget.first_epoch_s
    assert took > 0
    budget.clock.used_s = 420 - took - 1
    assert not budget.expired()  # one first epoch still fits
    budget.clock.used_s = 420 - took + 0.01
    assert budget.expired()
    budget.first_epoch_took(took / 10)  # a faster trial does not lower the bar: the next config may be as slow
    assert budget.first_epoch_s == took
    budget.first_epoch_took(took * 2)
    assert budget.first_epoch_s == took * 2 and budget.expired()


def test_a_config_proposed_twice_is_trained_and_listed_once(tmp_path, monkeypatch):
    import search.runner as runner_mod
    train_tiny_instead(monkeypatch, runner_mod, TINY)
    data = write_training_csv(tmp_path / "a.csv", n=24)
    engine = OptunaEngine("random", warm_start=False)
    study = engine.open_study("twice", spaces.get("cnn"), 0)
    values = {"blocks": 3, "filters_1": 16, "filters_2": 16, "filters_3": 16, "convs_per_block": 1,
              "conv": "plain", "kernel_size": 3, "head": "gap", "dense_units": 0, "dropout": 0.0,
              "output_bias": "zero", "learning_rate": 1e-3, "schedule": "constant", "weight_decay": 1e-5,
              "batch_size": 32, "imputation": "masked", "augment": "none", "aug_strength": 0.0, "aug_flip": False}
    study.enqueue_trial(values)
    study.enqueue_trial(values, skip_if_exists=False)
    search_run.main(["--space", "cnn", "--engine", "optuna", "--sampler", "random", "--trials", "2", "--epochs", "1",
                     "--split", "random", "--data", str(data), "--study-name", "twice", "--max-params", "0"])
    trials = optuna.load_study(study_name="twice", storage="sqlite:///mlruns/optuna.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["duplicate_of"] == 0 and trials[1].values == trials[0].values
    assert len(Tracker("cnn").trials()) == 1


def test_online_flip_agrees_with_the_offline_flip_and_its_named_axis():
    import tensorflow as tf

    from train.augment import flip
    from train.keypoints import FLIP_AXES
    from train.online_augment import augment_batch
    images, kp = faces(8, seed=2, missing=0)
    x = tf.constant(images.astype(np.float32)[..., None])
    online_x, online_y = augment_batch(x, tf.constant(kp), 0.0, True, tf.constant([0, 0]))
    offline_x, offline_y = flip(images, kp)
    mirrored = np.array([np.array_equal(a, b) for a, b in zip(online_x.numpy()[..., 0], offline_x)])
    assert mirrored.any() and (~mirrored).any()  # a coin per face
    np.testing.assert_allclose(online_y.numpy()[mirrored], offline_y[mirrored], atol=1e-3)
    np.testing.assert_allclose(online_y.numpy()[~mirrored], kp[~mirrored], atol=1e-3)
    left_eye_x = kp[0, 0]
    # now the right eye, mirrored about the eyes' measured label axis
    assert offline_y[0, 2] == pytest.approx(FLIP_AXES[1] - left_eye_x, abs=1e-4)


def test_online_augmentation_is_the_same_for_the_same_seed_and_new_every_epoch():
    import tensorflow as tf

    from train.online_augment import dataset
    images, kp = faces(64, seed=3, missing=0)
    x = images.astype(np.float32)[..., None]

    def two_epochs():
        tf.random.set_seed(7)  # as keras.utils.set_random_seed does before every fit
        ds = dataset(x, kp, 8, 0.8, True, seed=5)
        return [np.concatenate([b[0].numpy().ravel() for b in ds]) for _ in range(2)]

    first, again = two_epochs(), two_epochs()
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])


def test_two_workers_share_one_trials_budget(tmp_path):
    data = write_training_csv(tmp_path / "a.csv", n=24)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    argv = [sys.executable, "-m", "search.run", "--space", "cnn", "--engine", "optuna", "--trials", "4",
            "--epochs", "1", "--split", "random", "--data", str(data), "--study-name", "S", "--no-presets",
            "--sampler", "random"]
    # one worker creates the study's stores first, as `search.cluster` or a first worker would
    from tracking import stores
    optuna.create_study(study_name="S", storage=stores.optuna_url())
    Tracker("cnn")
    workers = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    trials = optuna.load_study(study_name="S", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}").trials
    # a config refused by a constraint before training is pruned, not a finished trial
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and "rejected" not in t.user_attrs]
    assert len(done) == 4 and not [t for t in trials if t.state.name == "RUNNING"]
    assert len({r.data.tags["mlflow.parentRunId"] for r in Tracker("cnn").trials()}) == 1  # one parent run


def test_timeout_bounds_the_whole_search_and_a_running_trial_is_measured_as_it_stands(tmp_path, monkeypatch):
    from search.engine import Budget
    data = write_training_csv(tmp_path / "a.csv", n=24)
    cfg = tmp_path / "two.json"
    cfg.write_text(json.dumps([TINY, {**TINY, "learning_rate": 3e-3}]))
    # The clock runs out during the first trial's first epoch, whatever this machine's speed.
    checks = iter([False, False])
    monkeypatch.setattr(Budget, "expired", lambda self: next(checks, True))
    monkeypatch.setattr(Budget, "seconds_left", lambda self: 0.0)
    search_run.main([*_manual(data, cfg), "--epochs", "4", "--timeout", "60"])
    (run,) = Tracker("cnn").trials()  # the second config never started
    assert run.info.status == "FINISHED" and run.data.tags["stopped_by_timeout"] == "1"
    assert run.data.metrics["epochs"] == 1 and np.isfinite(run.data.metrics["test_rmse"])


def test_the_quick_start_budget_applies_only_when_no_budget_flag_is_given():
    args = search_run.parse(["--space", "cnn"])
    assert (args.trials, args.epochs, args.timeout, args.patience) == (6, 75, 420, 15)
    assert search_run.parse(["--space", "cnn", "--patience", "3"]).patience == 3  # a given flag wins
    args = search_run.parse(["--space", "cnn", "--epochs", "2"])
    assert (args.trials, args.epochs, args.timeout) == (6, 2, None)
