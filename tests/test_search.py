import json
import subprocess
import sys

import keras_tuner as kt
import numpy as np
import optuna
import pytest

import spaces
from search import run as search_run
from search.adapters import KerasTunerSuggest, OptunaSuggest
from spaces.base import Categorical, Fixed, Float, Int, sample
from tests.fixtures import train_tiny_instead, write_training_csv
from tracking.mlflow_tracker import Tracker

TINY = {"blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0, "augment": "none"}


def _args(data, *extra):
    return ["--space", "cnn", "--trials", "2", "--epochs", "1", "--split", "random", "--data", str(data),
            "--no-presets", "--study-name", "t", "--max-params", "0", *extra]


@pytest.fixture
def tiny(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps([{"model": "cnn", **TINY}, {"model": "cnn", **TINY, "imputation": "knn"}]))
    return write_training_csv(tmp_path / "d.csv", n=24), cfg


def _trials(engine=None, rejected=False):
    """Trial runs of study t; configs refused before training (an impossible head) only when asked."""
    runs = Tracker("cnn").trials(study="t")
    return [r for r in runs if (engine is None or r.data.tags["fkp_engine"] == engine)
            and (rejected or r.data.tags.get("fkp_status") != "rejected")]


def test_every_engine_runs_two_tracked_trials_and_resumes_without_repeats(tiny, capsys):
    data, cfg = tiny
    search_run.main(_args(data, "--engine", "all", "--config", str(cfg)))
    out = capsys.readouterr().out
    assert "optuna-dashboard sqlite:///" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    for engine in ("manual", "optuna", "keras-tuner"):
        runs = _trials(engine, rejected=engine == "keras-tuner")  # Keras Tuner counts a refused config
        assert len(runs) == 2, engine
        for run in (r for r in runs if r.data.tags.get("fkp_status") != "rejected"):
            assert run.info.status == "FINISHED", (engine, run.data.tags.get("error"))
            assert {"rmse", "test_rmse", "mean_face_rmse", "mean_face_test_rmse", "params", "size_mb",
                    "inference_s_per_100", "latency_ms", "train_s"} <= set(run.data.metrics)
            tags = run.data.tags
            assert tags["data_sha"] and tags["split"] == "random:val=0.15,test=0.15" and tags["seed"] == "0"
            assert tags["max_epochs"] == "1" and tags["patience"] == "5" and tags["fkp_key"]
            assert {"learning_rate", "batch_size", "imputation", "blocks"} <= set(run.data.params)
            assert run.data.tags["mlflow.parentRunId"]
    study = optuna.load_study(study_name="t", storage="sqlite:///mlruns/optuna.db")
    linked = {t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert linked == {r.info.run_id for r in _trials("optuna", rejected=True)}
    assert len({r.data.tags["optuna_trial_number"] for r in _trials("optuna")}) == 2

    before, trained = len(_trials(rejected=True)), len(_trials())
    search_run.main(_args(data, "--engine", "all", "--config", str(cfg)))  # same command again
    assert len(_trials()) == trained >= 5 and len(_trials(rejected=True)) == before
    trials = optuna.load_study(study_name="t", storage="sqlite:///mlruns/optuna.db").trials
    assert len([t for t in trials if "rejected" not in t.user_attrs]) == 2


def test_manual_configs_run_once_per_budget_and_another_budget_is_another_study(tiny, capsys):
    data, cfg = tiny
    unnamed = [a for a in _args(data, "--engine", "manual", "--config", str(cfg)) if a not in ("--study-name", "t")]
    search_run.main(unnamed)
    search_run.main(unnamed)  # same budget: resumes, no repeats
    first = {r.data.tags["fkp_study"] for r in Tracker("cnn").trials()}
    assert len(first) == 1 and len(Tracker("cnn").trials()) == 2
    capsys.readouterr()
    search_run.main([*unnamed, "--epochs", "2"])  # a new budget: a new study, named on the screen
    studies = {r.data.tags["fkp_study"] for r in Tracker("cnn").trials()}
    (new,) = studies - first
    assert f"study: {new} (" in capsys.readouterr().out
    assert sorted(r.data.tags["max_epochs"] for r in Tracker("cnn").trials()) == ["1", "1", "2", "2"]


def test_a_raising_trial_is_recorded_failed_and_the_search_goes_on(tiny, tmp_path):
    data, _ = tiny
    cfg = tmp_path / "mixed.yaml"
    cfg.write_text("- {model: cnn, optimizer: nonsense}\n"
                   "- {model: cnn, blocks: 2, filters_1: 8, filters_2: 8, dense_units: 0, augment: none}\n")
    search_run.main(_args(data, "--engine", "manual", "--config", str(cfg)))
    status = {r.data.params.get("optimizer"): (r.info.status, r.data.tags.get("error", "")) for r in _trials()}
    assert status["nonsense"][0] == "FAILED" and "unknown optimizer 'nonsense'" in status["nonsense"][1]
    assert status["adam"][0] == "FINISHED"


def test_a_refused_config_is_never_announced_as_starting_and_does_not_count(tiny, tmp_path, capsys):
    data, _ = tiny
    cfg = tmp_path / "refused.yaml"
    cfg.write_text("- {model: cnn, blocks: 5, filters_1: 8, filters_2: 8, dense_units: 0, augment: none, head: heatmap}\n"
                   "- {model: cnn, blocks: 2, filters_1: 8, filters_2: 8, dense_units: 0, augment: none}\n")
    search_run.main(_args(data, "--engine", "manual", "--config", str(cfg)))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[manual")]
    assert lines[0].startswith("[manual 1/2] trial #0 refused before training: a heatmap head needs")
    assert lines[1].startswith("[manual 2/2] trial #1 cnn starts")  # one of the 2 listed configs, in no time
    assert not any("trial #0 cnn starts" in line for line in lines)
    assert {r.data.tags.get("fkp_status") for r in _trials(rejected=True)} == {"rejected", "finished"}


def test_optuna_survives_a_raising_trial(tiny, monkeypatch):
    import search.runner as runner_mod
    calls = {"n": 0}

    def flaky(train):
        def once_out_of_memory(*a, **k):
            calls["n"] += 1
            if calls["n"] == 1:
                raise MemoryError("out of memory (simulated)")
            return train(*a, **k)
        return once_out_of_memory

    train_tiny_instead(monkeypatch, runner_mod, TINY, wrap=flaky)
    search_run.main(_args(tiny[0], "--engine", "optuna", "--sampler", "random"))
    study = optuna.load_study(study_name="t", storage="sqlite:///mlruns/optuna.db")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL"]
    assert "out of memory" in [t for t in study.trials if t.state.name == "FAIL"][0].user_attrs["error"]
    assert sorted(r.info.status for r in _trials()) == ["FAILED", "FINISHED"]


def test_a_trial_left_running_by_a_killed_process_is_failed_and_rerun(tiny, monkeypatch):
    import search.runner as runner_mod
    from search.optuna_engine import HOST, recover
    train_tiny_instead(monkeypatch, runner_mod, TINY)
    from tracking import stores
    study = optuna.create_study(study_name="t", storage=stores.optuna_url())
    dead = study.ask({"blocks": optuna.distributions.IntDistribution(3, 5)})
    dead.set_user_attr("host", HOST)
    dead.set_user_attr("pid", 2 ** 22 + 12345)  # no such process
    search_run.main(_args(tiny[0], "--engine", "optuna", "--trials", "1"))
    study = optuna.load_study(study_name="t", storage="sqlite:///mlruns/optuna.db")
    assert study.trials[0].state.name == "FAIL"
    assert study.trials[1].user_attrs["retry_of"] == 0 and study.trials[1].state.name == "COMPLETE"
    assert study.trials[1].params["blocks"] == dead.params["blocks"]
    assert recover(study) == []  # nothing left to recover, nothing retried twice


def test_bad_flags_are_one_line_errors():
    for argv, message in [(["--space", "resnet"], "unknown space 'resnet'"),
                          (["--objectives", "rmse,speed"], "unknown objective 'speed'"),
                          (["--trials", "0"], "--trials must be at least 1")]:
        proc = subprocess.run([sys.executable, "-m", "search.run", *argv, "--data", "none.csv"],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def _describe_optuna(dist):
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return ("categorical", tuple(dist.choices))
    kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
    return (kind, dist.low, dist.high, dist.log)


def _describe_kt(hp):
    if isinstance(hp, kt.engine.hyperparameters.Boolean):
        return ("categorical", (True, False))
    if isinstance(hp, kt.engine.hyperparameters.Choice):
        return ("categorical", tuple(hp.values))
    kind = "int" if isinstance(hp, kt.engine.hyperparameters.Int) else "float"
    return (kind, hp.min_value, hp.max_value, hp.sampling == "log")


@pytest.mark.parametrize("name", spaces.names())
def test_both_adapters_see_the_same_names_types_and_ranges(name):
    space = spaces.get(name)
    deepest = {p.name: max(p.choices) if isinstance(p, Categorical) else p.high for p in space.params
               if p.name == "blocks"}
    study = optuna.create_study()
    study.enqueue_trial(deepest)  # the deepest net activates every conditional parameter
    trial = study.ask()
    sample(space, OptunaSuggest(trial))
    hp = kt.HyperParameters()
    sample(space, KerasTunerSuggest(hp))
    hp.values.update(deepest)  # Keras Tuner registers conditional parameters once they are active
    sample(space, KerasTunerSuggest(hp))
    optuna_view = {k: _describe_optuna(d) for k, d in trial.distributions.items()}
    kt_view = {h.name: _describe_kt(h) for h in hp.space}
    assert optuna_view == kt_view
    declared = {p.name for p in space.params if not isinstance(p, Fixed)}
    assert set(optuna_view) == declared


def test_conditional_parameters_exist_only_when_their_parent_allows():
    space = spaces.get("cnn")
    study = optuna.create_study()
    study.enqueue_trial({"blocks": 3})
    config = sample(space, OptunaSuggest(study.ask()))
    assert {"filters_1", "filters_2", "filters_3"} <= set(config) and "filters_4" not in config
    with pytest.raises(ValueError, match="declared later"):
        spaces.Space("bad", (Int("f", 1, 2, when=("depth", (2,))), Int("depth", 1, 2)))
    study.enqueue_trial({"blocks": 5})
    assert {f"filters_{k}" for k in range(1, 6)} <= set(sample(space, OptunaSuggest(study.ask())))


def test_a_resumed_study_does_not_replay_the_samplers_first_draws(tiny, monkeypatch, capsys):
    import search.runner as runner_mod
    train_tiny_instead(monkeypatch, runner_mod, TINY)
    search_run.main(_args(tiny[0], "--engine", "optuna", "--sampler", "random", "--trials", "1"))
    capsys.readouterr()
    search_run.main(_args(tiny[0], "--engine", "optuna", "--sampler", "random", "--trials", "2"))
    first, second = optuna.load_study(study_name="t", storage="sqlite:///mlruns/optuna.db").trials
    assert first.params != second.params
    starts = next(line for line in capsys.readouterr().out.splitlines() if "starts" in line)
    assert f"best {first.value:.3f} px" in starts  # the resumed search shows the study's best from the start


def test_a_grids_time_left_is_estimated_per_kind_of_trial(monkeypatch):
    import io

    from search import progress as progress_mod
    clock = [0.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: clock[0])
    out = io.StringIO()
    p = progress_mod.Progress(0, 1, stream=out)
    p.plan_kinds(["small", "big", "big", "big"])
    for kind, seconds in (("small", 10), ("big", 300)):
        p.trial_started("manual", 0, {"cell_model": kind})
        clock[0] += seconds
        p.trial_ended("done", 1.0)
    # two big trials left: 2 x 300 s, where an average over all trials would say 2 x 155 s
    assert out.getvalue().splitlines()[-1].endswith("~10:00 left")
    p.trial_started("manual", 2, {"cell_model": "big"})
    clock[0] += 4
    p.epoch(0, 1, 2.0)
    assert out.getvalue().splitlines()[-1].endswith("~9:56 left")  # the running trial's elapsed time counts


def test_a_config_refused_before_training_neither_counts_nor_shrinks_the_time_left(monkeypatch):
    import io

    from search import progress as progress_mod
    clock = [0.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: clock[0])
    out = io.StringIO()
    p = progress_mod.Progress(5, 1, stream=out)
    p.counts_refused = False  # as the Optuna engine sets it
    p.trial_started("optuna", 0, {})
    clock[0] += 60
    p.trial_ended("done", 1.0)
    p.refused("optuna", 1, "300,000 parameters is over the budget of 250,000")
    p.refused("optuna", 2, "52.0M multiply-accumulates per image is over the budget of 40M")
    last = out.getvalue().splitlines()[-1]
    # 4 of the 5 trials left at 60 s each: refused configs are not trials (--trials does not count them)
    assert last.startswith("[optuna 2/5] trial #2 refused before training: 52.0M") and last.endswith("~4:00 left")
    p.trial_started("optuna", 3, {})
    assert out.getvalue().splitlines()[-1].startswith("[optuna 2/5] trial #3")


def test_sigterm_stops_a_search_cleanly_and_the_same_command_resumes(tmp_path):
    """`kill PID` (or a scheduler's stop) closes the trial and the search as killed in both stores, exits 143, and
    the rerun trains the cut trial again; before, SIGTERM left both RUNNING until some later start cleaned up."""
    import os
    import signal

    from tests.servers import finish, wait_for, worker
    data = write_training_csv(tmp_path / "d.csv", n=24)
    args = ["--space", "cnn", "--engine", "optuna", "--trials", "1", "--epochs", "60", "--patience", "60",
            "--split", "random", "--data", str(data), "--no-presets", "--pruner", "none", "--sampler", "random",
            "--study-name", "t", "--max-params", "60000"]
    env = {"FKP_STORE_DIR": tmp_path / "mlruns", "FKP_CACHE_DIR": tmp_path / "cache"}
    log = tmp_path / "first.log"
    proc = worker(args, tmp_path, log, **env)
    wait_for(lambda: "epoch 3/60" in log.read_text(errors="replace"), "a trial to train", proc=proc, log=log)
    proc.send_signal(signal.SIGTERM)
    said = finish(proc, log, timeout=120)
    assert proc.returncode == 143, said[-2000:]
    assert "terminated: finished trials are saved" in said
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    (cut,) = optuna.load_study(study_name="t", storage=storage).trials
    assert cut.state.name == "FAIL" and cut.user_attrs["interrupted"] is True
    os.environ["FKP_STORE_DIR"] = str(tmp_path / "mlruns")  # the autouse fixture restores it
    (run,) = _trials()
    assert run.info.status == "KILLED" and run.data.tags["fkp_status"] == "killed"
    assert run.data.tags["error"] == "terminated (SIGTERM)"
    parent = Tracker("cnn").client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"

    log = tmp_path / "again.log"
    said = finish(worker(args, tmp_path, log, **env), log)
    trials = optuna.load_study(study_name="t", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"], said[-2000:]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params == cut.params


def test_a_trial_failed_by_another_workers_stale_sweep_while_it_ran_does_not_end_this_worker(capsys):
    """Optuna's optimize raises "Cannot tell a FAIL trial" when a live worker's trial was failed under it (its
    heartbeat missed the grace period through a database restart): the search must go on, not exit."""
    from optuna.trial import TrialState

    from search.engine import Budget
    from search.optuna_engine import optimize_past_stale_fails
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number in (0, 1):  # as fail_stale_trials run by another worker mid-trial
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.number == 1:  # an objective that goes on touching its trial raises instead of returning
            trial.set_user_attr("rung_1", x)
        return x

    bare = optuna.create_study()
    with pytest.raises((ValueError, AssertionError)):  # what a bare optimize does: "Cannot tell a FAIL trial", or
        # when the objective returned a value, Optuna's "Should not reach" assertion
        bare.optimize(lambda t: bare._storage.set_trial_state_values(t._trial_id, TrialState.FAIL) or 1.0, n_trials=1)
    optimize_past_stale_fails(study, objective, Budget(trials=2, timeout=None, seed=0, study="s"), n_trials=2)
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.FAIL] * 2 and states[2:].count(TrialState.COMPLETE) == 2
    out = capsys.readouterr().out
    assert "trial 0 was failed by another worker while it ran here" in out and "trial 1 was failed" in out
