"""Rungs with their own schedules, the study's own clock, learning-curve tables and their replay."""
import json

import numpy as np
import optuna
import pytest

import spaces
from bench import curves, replay
from bench.blackbox import Blackbox, check_table
from search import run as search_run
from search.optuna_engine import HOST, rungs_done
from search.prior_sampler import PriorSampler
from spaces.base import warm_starts
from search.pruners import RungPruner, default_rungs, parse_rungs, promotions
from search.study_clock import StudyClock, union_seconds
from tests.fixtures import write_training_csv
from tracking.leaderboard import collect
from tracking.mlflow_tracker import Tracker
from train.errors import UserError

optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_default_rungs_are_a_ninth_and_a_third_and_a_rung_over_the_budget_is_refused():
    assert default_rungs(30) == [3, 10]
    assert default_rungs(60) == [7, 20]
    assert default_rungs(1) == []
    assert parse_rungs("2,6", 30) == [2, 6]
    with pytest.raises(UserError, match="rung 30 is not below --epochs 30"):
        parse_rungs("3,30", 30)
    with pytest.raises(UserError, match="comma-separated"):
        parse_rungs("3,x", 30)


def test_rung_over_the_budget_and_rungs_without_a_rung_pruner_exit_2_in_one_line(tiny_csv, capsys):
    for extra in (["--epochs", "4", "--rungs", "2,4"], ["--epochs", "4", "--rungs", "2", "--pruner", "hyperband"]):
        with pytest.raises(SystemExit) as exit_:
            search_run.main(["--space", "cnn", "--data", str(tiny_csv), "--trials", "1", *extra])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--rungs" in err


def _trial_at(study, values: dict, rung=True):
    trial = study.ask()
    for step, value in values.items():
        if rung:  # as search/optuna_engine.py's climb records a rung
            trial.set_user_attr(f"rung_{step}", value)
        trial.report(value, step)
    return trial


def test_rung_pruner_keeps_the_best_third_of_each_rung_and_ignores_other_steps():
    study = optuna.create_study(pruner=RungPruner([3, 10]))
    first = _trial_at(study, {3: 5.0})
    assert first.should_prune()  # alone: no best third to be in yet, so it waits for a promotion
    assert _trial_at(study, {3: 6.0}).should_prune()  # 2 values: still no best third
    assert not _trial_at(study, {3: 4.0}).should_prune()  # 3 values: the best goes on
    for v in (7.0, 8.0, 9.0):
        _trial_at(study, {3: v})
    _trial_at(study, {3: 0.1}, rung=False)  # a per-epoch report (a resumed hyperband study): not a rung value
    # 7 values at rung 3: the best 7 // 3 = 2 go on (4.0 and 5.0)
    assert not _trial_at(study, {3: 4.5}).should_prune()
    assert _trial_at(study, {3: 5.5}).should_prune()
    assert not _trial_at(study, {4: 100.0}).should_prune()  # not a rung
    assert _trial_at(study, {3: float("nan")}).should_prune()


def test_a_warm_starts_value_at_a_rungs_epoch_is_a_bar_the_first_arrivals_must_clear():
    study = optuna.create_study(pruner=RungPruner([3, 10]))
    warm = study.ask()
    warm.set_user_attr("bar_3", 2.0)  # a preset's epoch 3 of its full run, as the engine records it
    assert _trial_at(study, {3: 2.5}).should_prune()  # the first arrival at rung 3, but worse than the bar
    assert not _trial_at(study, {3: 1.5}).should_prune()  # beats the preset: goes on without rivals
    assert _trial_at(study, {10: 2.5}).should_prune()  # no bar at rung 10 and no rivals: waits


def _stopped(study, values: dict):
    trial = _trial_at(study, values)
    assert trial.should_prune()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return trial.number


def test_a_config_stopped_for_want_of_rivals_is_promoted_once_it_ranks_in_the_best_third():
    study = optuna.create_study(pruner=RungPruner([3, 10]))
    first = _stopped(study, {3: 2.0})  # the first arrival: stopped, not sent on unopposed
    assert promotions(study, [3, 10]) == []  # one value: no best third yet
    _stopped(study, {3: 3.0})
    # the --trials budget spent, no rival will come: the best stopped config at the rung goes on anyway
    assert [(t.number, r) for t, r in promotions(study, [3, 10], last=True)] == [(first, 3)]
    third = _trial_at(study, {3: 4.0})
    assert third.should_prune()
    study.tell(third, state=optuna.trial.TrialState.PRUNED)
    assert [(t.number, r) for t, r in promotions(study, [3, 10])] == [(first, 3)]  # best of 3 at rung 3
    # the promotion carries its rung-3 value, is not ranked there again nor counted twice, and trains rung 10
    study.enqueue_trial({}, user_attrs={"promoted_from": first, "promoted_at": 3})
    copy = _trial_at(study, {3: 2.0})
    assert copy.user_attrs["promoted_from"] == first and not copy.should_prune()
    assert promotions(study, [3, 10]) == []  # already sent on
    copy.set_user_attr("rung_10", 1.5)
    copy.report(1.5, 10)
    assert copy.should_prune()  # the first at rung 10: it waits there in turn
    study.tell(copy, state=optuna.trial.TrialState.PRUNED)
    for v in (1.8, 1.9):
        _stopped(study, {3: 1.0 + v / 10, 10: v})
    assert [(t.number, r) for t, r in promotions(study, [3, 10])] == [(copy.number, 10)]  # now the full budget
    nan = _stopped(study, {3: float("nan")})
    assert nan not in [t.number for t, _ in promotions(study, [3, 10])]


def test_a_config_stopped_as_too_slow_is_never_promoted_though_its_rung_value_ranks():
    for too_slow in (False, True):
        study = optuna.create_study(pruner=RungPruner([3, 10]))
        slow = _trial_at(study, {3: 1.0})  # the best at rung 3, then stopped in rung 10 (for its speed, or not)
        if too_slow:
            slow.set_user_attr("too_slow", "too slow for the time budget")
        study.tell(slow, state=optuna.trial.TrialState.PRUNED)
        for v in (2.0, 3.0):
            _stopped(study, {3: v})
        # its value still ranks the others (a real measurement): none of them is in the best third
        assert [t.number for t, _ in promotions(study, [3, 10])] == ([] if too_slow else [slow.number])


def test_a_config_too_slow_for_its_share_of_the_time_budget_stops_at_its_third_epoch_and_a_warm_start_does_not(
        tmp_path, capsys):
    data = write_training_csv(tmp_path / "d.csv", n=30)
    # a share this small makes every config too slow: a limit of well under a millisecond per epoch
    flags = ["--space", "cnn", "--engine", "optuna", "--epochs", "4", "--split", "random", "--data", str(data),
             "--timeout", "3600", "--max-trial-share", "0.0000001", "--max-params", "0", "--pruner", "none"]
    search_run.main([*flags, "--trials", "2", "--no-presets", "--study-name", "slow"])
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="slow", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    trained = [t for t in study.trials if "rejected" not in t.user_attrs]
    assert len(trained) == 2 and all(t.state.name == "PRUNED" and "too_slow" in t.user_attrs for t in trained)
    assert out.count("stopped, too slow for the time budget") == 2
    tracker = Tracker("cnn")
    for run in tracker.trials(study="slow"):
        if run.data.tags["fkp_status"] == "rejected":
            continue
        assert run.data.tags["fkp_status"] == "pruned" and float(run.data.tags["too_slow_s_per_epoch"]) > 0
        assert [m.step for m in tracker.client.get_metric_history(run.info.run_id, "val_rmse")] == [0, 1, 2]
    search_run.main([*flags, "--trials", "1", "--study-name", "warm"])  # the first warm start: a preset, exempt
    warm = optuna.load_study(study_name="warm", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db").trials[0]
    assert warm.user_attrs["warm_start"] and warm.state.name == "COMPLETE" and "too_slow" not in warm.user_attrs
    with pytest.raises(SystemExit) as exit_:
        search_run.main([*flags, "--max-trial-share", "1.5", "--study-name", "bad"])
    assert exit_.value.code == 2 and "--max-trial-share 1.5" in capsys.readouterr().err


def test_in_the_time_budgets_last_share_with_no_full_model_the_best_at_the_highest_rung_goes_on():
    from search.engine import Budget
    from search.optuna_engine import promote

    class Clock:
        used_s = 0.0

        def used(self):
            return self.used_s

    budget = Budget(trials=500, timeout=7200, seed=0, study="s", clock=Clock())
    study = optuna.create_study(pruner=RungPruner([3, 10]))
    _stopped(study, {3: 2.0})
    _stopped(study, {3: 1.0})
    best = _trial_at(study, {3: 0.5, 10: 0.9})  # alone at rung 10: it waits there for rivals
    assert best.should_prune()
    study.tell(best, state=optuna.trial.TrialState.PRUNED)
    for _ in range(2):
        _stopped(study, {3: 3.0})
    assert promote(study, budget, endgame_s=1800) == []  # 2 hours left: rivals may still come
    budget.clock.used_s = 7200 - 1700  # the last quarter
    assert promote(study, budget) == []  # no --max-trial-share, no endgame
    assert promote(study, budget, endgame_s=1800) == [best.number]  # the highest rung's best, and only it
    (queued,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert queued.user_attrs == {"promoted_from": best.number, "promoted_at": 10}
    assert promote(study, budget, endgame_s=1800) == []  # one on its way: not another


def test_promotion_beats_a_preset_bar_without_rivals_and_comes_back_if_it_never_trained():
    study = optuna.create_study(pruner=RungPruner([3, 10]))
    early = _stopped(study, {3: 2.0})  # stopped before the preset set its bar
    warm = study.ask()
    warm.set_user_attr("bar_3", 2.5)
    assert [t.number for t, _ in promotions(study, [3, 10])] == [early]  # beats the bar: as prune() would let on
    study.enqueue_trial({}, user_attrs={"promoted_from": early, "promoted_at": 3})
    refused = study.ask()
    refused.set_user_attr("over_budget", True)  # picked up as the time budget ran out: never trained
    study.tell(refused, state=optuna.trial.TrialState.FAIL)
    assert [t.number for t, _ in promotions(study, [3, 10])] == [early]


def test_study_clock_counts_wall_time_while_any_worker_runs_across_kills_and_resumes():
    assert union_seconds([(0, 10), (5, 15), (20, 30)]) == 25
    study = optuna.create_study()
    now = [1000.0]
    a = StudyClock(study, now=lambda: now[0])
    now[0] = 1010.0
    b = StudyClock(study, now=lambda: now[0])  # a second worker joins at 1010
    now[0] = 1030.0
    a.tick(force=True)
    b.tick(force=True)
    assert a.used() == pytest.approx(30.0)  # two workers for 20 s of overlap count 20 s, not 40
    # both are killed at 1030; a resume at 2000 goes on from 30 s, not from zero
    now[0] = 2000.0
    c = StudyClock(study, now=lambda: now[0])
    now[0] = 2012.0
    assert c.used() == pytest.approx(42.0)


def test_prior_sampler_samples_near_the_preset_and_stays_in_range():
    space = spaces.get("cnn")
    from search.adapters import OptunaSuggest
    from spaces.base import warm_starts
    from spaces.base import sample
    preset = warm_starts(space)[1]
    study = optuna.create_study(sampler=PriorSampler([preset], seed=0))
    same = []
    for _ in range(30):
        trial = study.ask()
        config = sample(space, OptunaSuggest(trial))
        assert 3e-4 <= config["learning_rate"] <= 1e-2 and 3 <= config["blocks"] <= 5
        same.append(sum(config.get(k) == v for k, v in preset.items()) / len(preset))
        study.tell(trial, float(config["learning_rate"]))
    # about a third of the draws (plus mutations of the incumbent) keep most of the preset's choices
    assert sum(s > 0.5 for s in same) >= 5
    assert sum(s > 0.5 for s in same) < 30


def _row(cid, budget, val, test, epochs=None, status="complete", config=None, preset=None):
    epochs = budget if epochs is None else epochs
    return {"config_id": cid, "budget": budget, "status": status, "preset": preset,
            "config": config or {"model": "cnn", "blocks": 3, "learning_rate": 1e-3},
            "val_rmse": [val + 1.0 / (e + 1) for e in range(epochs)], "epoch_s": [1.0] * epochs, "epochs": epochs,
            "final_val_rmse": val, "test_rmse": test, "wall_s": epochs + 2.0}


def _table(tmp_path, rows, budgets=(1, 3), space="cnn", data_sha="abc"):
    path = tmp_path / "t.jsonl"
    meta = {"space": space, "data_sha": data_sha, "budgets": list(budgets)}
    path.write_text("\n".join(json.dumps(r) for r in [{"meta": meta}, *rows]) + "\n")
    return path


def _pool(rung: int = 1, full: int = 3):
    """4 configs, each at one rung and the full budget, better as i grows."""
    rows = []
    for i, (blocks, lr) in enumerate([(3, 3e-4), (4, 1e-3), (5, 3e-3), (3, 1e-2)]):
        config = {"model": "cnn", "blocks": blocks, "learning_rate": lr}
        rows += [_row(f"c{i}", rung, 5.0 - i * 0.3, 0, config=config),
                 _row(f"c{i}", full, 3.0 - i * 0.2, 2.9 - i * 0.2, config=config)]
    return rows


def test_a_table_with_missing_epochs_or_budgets_or_of_another_space_or_data_is_refused_by_name(tmp_path):
    space = spaces.get("cnn")
    torn = _row("c9", 3, 2.0, 2.0)
    torn["val_rmse"] = torn["val_rmse"][:2]
    meta, rows = curves.read(_table(tmp_path, _pool() + [_row("c9", 1, 3.0, 3.0), torn]))
    with pytest.raises(UserError, match="config c9 at budget 3: 3 epochs trained but 2 validation values.*missing epochs 3-3"):
        Blackbox(space, meta, rows, "t.jsonl")
    bb = Blackbox(space, meta, rows, "t.jsonl", complete_only=True)
    assert len(bb) == 4 and len(bb.dropped) == 1
    meta, rows = curves.read(_table(tmp_path, _pool() + [_row("c8", 1, 3.0, 3.0)]))
    with pytest.raises(UserError, match="config c8 has no run at budget 3 epochs"):
        Blackbox(space, meta, rows, "t.jsonl")
    odd = _row("c7", 1, 3.0, 3.0, config={"model": "cnn", "blocks": 99, "learning_rate": 1e-3})
    meta, rows = curves.read(_table(tmp_path, _pool() + [odd, {**odd, "budget": 3}]))
    with pytest.raises(UserError, match=r"config c7: blocks=99, the space holds \[\d+, \d+\]: a table of another version"):
        Blackbox(space, meta, rows, "t.jsonl")
    with pytest.raises(UserError, match="a table of space 'mobilenetv2', not 'cnn'"):
        check_table({**meta, "space": "mobilenetv2"}, "t.jsonl", "cnn", None)
    with pytest.raises(UserError, match="a table of data abc, this data is def"):
        check_table(meta, "t.jsonl", "cnn", "def")


def test_replay_picks_on_validation_reports_test_and_keeps_its_clock(tmp_path):
    space = spaces.get("cnn")
    meta, rows = curves.read(_table(tmp_path, _pool()))
    bb = Blackbox(space, meta, rows, "t.jsonl")
    assert bb.nearest({"model": "cnn", "blocks": 5, "learning_rate": 2.9e-3}) == "c2"
    r = replay.simulate(bb, "random", 0, budget_s=40.0)
    assert r.events and all(t <= 40.0 for t, *_ in r.events)
    times = [t for t, *_ in r.events]
    assert times == sorted(times)
    # every full-budget trial costs 3 epochs of 1 s and 2 s outside them: 5 s each, one after another
    assert np.allclose(np.diff([0.0, *times]) % 5.0, 0.0)
    grid = np.array([0.0, 40.0])
    best = replay.best_so_far(r, grid, empty=9.9)
    chosen = min(r.events, key=lambda e: e[1])
    assert best[0] == 9.9 and best[-1] == pytest.approx(chosen[2])
    asha = replay.simulate(bb, "random+asha", 0, budget_s=40.0)
    # no best third before 3 configs reach the rung (1 epoch + 2 s each); then the best of them goes on, by
    # promotion or at once, to its full run (3 epochs + 2 s), which carries its rung and does not retrain it
    assert asha.events[0][0] == pytest.approx(14.0)
    # a trial stopped at the rung costs 3 s: the clock is the sum of what each trial trained
    assert asha.trials > len(asha.events)


def test_an_untried_replay_runs_each_pool_config_once_tells_the_sampler_that_config_and_ends_when_spent(tmp_path):
    meta, rows = curves.read(_table(tmp_path, _pool()))
    bb = Blackbox(spaces.get("cnn"), meta, rows, "t.jsonl")
    assert bb.nearest({"model": "cnn", "blocks": 5, "learning_rate": 2.9e-3}, among=["c0", "c1"]) == "c1"
    for strategy in ("random", "tpe"):
        again = replay.simulate(bb, strategy, 0, budget_s=1000.0)  # 1-NN: 4 configs, 200 full runs of them
        assert len(again.events) == 200 and (again.spent_at or 1e9) > 15.0  # repeats before a 4th config, if ever
        r = replay.simulate(bb, strategy, 0, budget_s=1000.0, untried=True)
        assert sorted(e[3] for e in r.events) == ["c0", "c1", "c2", "c3"] and r.trials == 4
        assert r.spent_at == pytest.approx(15.0)  # the 4th full run of 5 s starts; then nothing is left to try
        states = [t.state.name for t in r.study.trials]
        # each proposal closed (never left RUNNING, which a constant-liar TPE counts as pending), the 5th finding
        # the pool spent
        assert states.count("COMPLETE") == 4 and states.count("FAIL") == 5 and "RUNNING" not in states
    told = replay.simulate(bb, "tpe", 1, budget_s=1000.0, untried=True).study  # the sampler sees these trials
    complete = [t for t in told.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and all(t.params[k] == v for t in complete for k, v in bb.params(t.user_attrs["pool"]).items())
    # under ASHA the pool's best goes on to the full budget before the pool is spent
    asha = replay.simulate(bb, "random+asha", 0, budget_s=1000.0, untried=True)
    assert len(asha.configs) == 4 and [e[3] for e in asha.events] == ["c3"] and asha.spent_at is not None
    # a warm start the pool lacks is swapped for a pool config too, the sampler told that config, not the preset
    warm = replay.simulate(bb, "random+asha", 0, budget_s=1000.0, presets=True, untried=True)
    starts = [t for t in warm.study.trials if t.user_attrs.get("warm_start") and t.state.name != "FAIL"]
    assert starts and all(t.params[k] == v for t in starts for k, v in bb.params(t.user_attrs["pool"]).items())
    assert len(warm.configs) == 4


def test_a_replayed_config_too_slow_for_its_share_stops_after_three_epochs_as_the_engine_does(tmp_path):
    rows = _pool(1, 4)
    rows[-1].update(epoch_s=[1.0, 30.0, 32.0, 30.0], wall_s=95.0)  # the pool's best config, slow from epoch 2 on
    meta, rows = curves.read(_table(tmp_path, rows, budgets=(1, 4)))
    bb = Blackbox(spaces.get("cnn"), meta, rows, "t.jsonl")
    plain = replay.simulate(bb, "random", 0, budget_s=300.0)
    cut = replay.simulate(bb, "random@0.25", 0, budget_s=300.0)  # 300 s x 0.25 / 4 epochs: 18.75 s/epoch at most
    assert "c3" in [e[3] for e in plain.events]
    assert "c3" in cut.configs and "c3" not in [e[3] for e in cut.events]
    assert cut.trials > plain.trials  # each cut costs 3 epochs and the overhead: 65 s, not 95 s
    assert "c3" in [e[3] for e in replay.simulate(bb, "random@0.5", 0, budget_s=300.0).events]  # 37.5 s/epoch
    with pytest.raises(UserError, match="strategy 'tpe@2'"):
        replay.parse_strategy("tpe@2")


def test_replay_plays_the_engines_endgame_the_best_config_at_its_rung_goes_on_in_the_budgets_last_share(tmp_path):
    meta, rows = curves.read(_table(tmp_path, _pool(2, 4), budgets=(2, 4)))
    bb = Blackbox(spaces.get("cnn"), meta, rows, "t.jsonl")
    # a rung run costs 4 s, a full run 6 s. Two configs reach the rung by 8 s: too few rivals for a best third.
    # Without the endgame the third arrives at 12 s and whatever goes on ends after the 16 s budget.
    for seed in range(3):
        assert replay.simulate(bb, "random+asha", seed, budget_s=16.0).events == []
        # with a share of 0.5 the last 8 s are the endgame: at 8 s the better of the two goes on, done at 14 s
        (event,) = replay.simulate(bb, "random+asha@0.5", seed, budget_s=16.0).events
        assert event[0] == pytest.approx(14.0)


def test_a_replayed_warm_start_skips_the_rungs_and_sets_their_bars_as_the_engine_does(tmp_path):
    space = spaces.get("cnn")
    preset = warm_starts(space)[0]
    rows = _pool() + [_row("p", 1, 4.0, 0, config=preset), _row("p", 3, 1.5, 1.4, config=preset)]
    meta, rows = curves.read(_table(tmp_path, rows))
    bb = Blackbox(space, meta, rows, "t.jsonl")
    assert bb.nearest(preset) == "p"
    r = replay.simulate(bb, "random+asha", 0, budget_s=5.0, presets=True)
    # the preset's full run alone: 3 epochs of 1 s + 2 s, no rung run before it (that would be 3 s more)
    assert r.events[0][0] == pytest.approx(5.0) and r.events[0][3] == "p"
    # its epoch-1 value (1.5 + 1/1) is the bar: every config of the pool is worse at rung 1, so none goes on;
    # only the warm starts (each answered by "p", the pool's nearest) reach the full budget
    r = replay.simulate(bb, "random+asha", 0, budget_s=60.0, presets=True)
    starts = len(warm_starts(space))
    assert [e[3] for e in r.events] == ["p"] * starts and r.trials > starts + 3


def test_replay_cli_writes_its_figure_and_refuses_unknown_strategies(tmp_path, capsys):
    table = _table(tmp_path, _pool())
    replay.main(["--table", str(table), "--seeds", "3", "--budget", "60", "--out", str(tmp_path / "r"),
                 "--no-results", "--strategies", "random,tpe+asha,tpe-plain+hyperband"])
    assert (tmp_path / "r" / "replay.png").stat().st_size > 1000
    stats = json.loads((tmp_path / "r" / "replay.json").read_text())["stats"]
    assert set(stats) == {"random", "tpe+asha", "tpe-plain+hyperband"}
    assert all(lo <= m + 1e-9 and m <= hi + 1e-9 for s in stats.values() for lo, m, hi in zip(s["lo"], s["iqm"], s["hi"]))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        replay.main(["--table", str(table), "--strategies", "tpe+magic", "--no-results"])
    assert exit_.value.code == 2 and "strategy 'tpe+magic'" in capsys.readouterr().err


def test_curves_table_resumes_without_retraining_and_refuses_other_settings(tmp_path, capsys):
    data = write_training_csv(tmp_path / "d.csv", n=30)
    out = tmp_path / "c.jsonl"
    args = ["--data", str(data), "--configs", "1", "--budgets", "1,2", "--out", str(out), "--split", "random",
            "--max-params", "0", "--max-mmacs", "0"]
    curves.main(args)
    meta, rows = curves.read(out)
    trained = [r for r in rows if r["status"] != "rejected"]
    assert meta["budgets"] == [1, 2] and sorted(r["budget"] for r in trained) == [1, 2]
    assert all(len(r["val_rmse"]) == r["epochs"] == len(r["epoch_s"]) for r in trained if r["status"] == "complete")
    out.write_text(out.read_text() + '{"config_id": "torn')  # a kill mid-line
    curves.main(args)
    assert curves.read(out)[1] == rows  # nothing trained twice, the torn line skipped
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        curves.main([*args[:-4], "--max-params", "1000", "--max-mmacs", "0"])
    assert exit_.value.code == 2 and "a table of other settings (max_params=None)" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    older = json.loads(lines[0])
    del older["meta"]["training_code"]  # a table made before the training code had a version
    out.write_text("\n".join([json.dumps(older), *lines[1:]]) + "\n")
    with pytest.raises(SystemExit) as exit_:
        curves.main(args)
    assert exit_.value.code == 2 and "(training_code=None); this run has training_code=2" in capsys.readouterr().err


def test_asha_search_trains_rungs_apart_keeps_them_off_the_leaderboard_and_never_retrains_a_rung(tmp_path, capsys):
    data = write_training_csv(tmp_path / "d.csv", n=30)
    args = ["--space", "cnn", "--data", str(data), "--trials", "3", "--epochs", "3", "--split", "random",
            "--no-presets", "--study-name", "t", "--max-params", "60000", "--sampler", "random"]
    search_run.main(args)
    out = capsys.readouterr().out
    assert "rung 1/3 epochs" in out and "Study time:" in out
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    trained = [t for t in study.trials if "rejected" not in t.user_attrs]
    assert all("rung_1" in t.user_attrs and 1 in t.intermediate_values for t in trained)
    # 3 configs, none let on alone at the rung: the best of them goes to the full budget, at once if it came
    # third, else stopped and promoted after the third, keeping its rung value
    counted = [t for t in trained if "promoted_from" not in t.user_attrs]
    (full,) = [t for t in trained if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(counted) == 3 and full.user_attrs["rung_1"] == min(t.user_attrs["rung_1"] for t in counted)
    if "promoted_from" in full.user_attrs:
        origin = study.trials[full.user_attrs["promoted_from"]]
        assert origin.state == optuna.trial.TrialState.PRUNED and origin.params == full.params
        assert origin.user_attrs["rung_1"] == full.user_attrs["rung_1"] and "promoted, it trains the next" in out
    tracker = Tracker("cnn")
    runs = tracker.trials(study="t")
    rung_runs = [r for r in runs if r.data.tags.get("fkp_rung") == "1/3" and r.data.tags["fkp_status"] != "rejected"]
    assert len(rung_runs) == len(counted)  # a promotion does not train rung 1 again
    assert all(r.data.tags["max_epochs"] == "1" for r in rung_runs)
    # the charts view's filter keeps the full-budget runs and drops every rung run
    from tracking.mlflow_view import CHARTS_FILTER
    full = tracker.client.search_runs([tracker.experiment_id], CHARTS_FILTER)
    assert full and {r.info.run_id for r in full} == {r.info.run_id for r in runs if not r.data.tags.get("fkp_rung")}
    board = collect(tracker, "t")
    assert board and all(row["max_epochs"] == "3" for row in board)
    # a killed attempt's rungs are reused by its retry
    origin = counted[0]
    retry = optuna.trial.create_trial(params=origin.params, distributions=origin.distributions, value=1.0,
                                      user_attrs={"retry_of": origin.number})
    assert rungs_done(study, retry) == {1: origin.user_attrs["rung_1"]}
    # The --trials budget is spent when a promotion's process is killed before it recorded its carried rung:
    # the same command queues it again, runs it (not "already has 3 finished trials"), and trains only the rest.
    stopped = next(t for t in counted if t.state == optuna.trial.TrialState.PRUNED
                   and not any(o.user_attrs.get("promoted_from") == t.number for o in study.trials))
    study.enqueue_trial(stopped.params, user_attrs={"promoted_from": stopped.number, "promoted_at": 1})
    dead = study.ask()
    dead.set_user_attr("host", HOST)
    dead.set_user_attr("pid", 2 ** 22 + 12345)  # no such process
    search_run.main(args)
    out = capsys.readouterr().out
    assert f"trial #{dead.number} was cut off by a killed process" in out and "already has" not in out
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    (again,) = [t for t in study.trials if t.user_attrs.get("retry_of") == dead.number]
    assert again.state == optuna.trial.TrialState.COMPLETE and again.user_attrs["rung_1"] == stopped.user_attrs["rung_1"]
    rung_runs = [r for r in tracker.trials(study="t") if r.data.tags.get("fkp_rung") == "1/3"
                 and r.data.tags["fkp_status"] != "rejected"]
    assert len(rung_runs) == len(counted)  # rung 1 still trained once per config


def test_a_warm_start_skips_the_rungs_and_leaves_its_value_at_each_rungs_epoch_as_a_bar(tmp_path, capsys):
    data = write_training_csv(tmp_path / "d.csv", n=30)
    search_run.main(["--space", "cnn", "--data", str(data), "--trials", "1", "--epochs", "3", "--split", "random",
                     "--study-name", "w"])
    assert "rung 1/3" not in capsys.readouterr().out
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    (warm,) = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]  # the others wait, enqueued
    assert warm.user_attrs["warm_start"] and "rung_1" not in warm.user_attrs
    history = Tracker("cnn").client.get_metric_history(warm.user_attrs["mlflow_run_id"], "val_rmse")
    first = min(history, key=lambda m: m.step)  # epoch 1 of its full run
    assert warm.user_attrs["bar_1"] == pytest.approx(first.value)


def test_the_sampler_sees_one_trial_per_config_and_still_samples():
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from search.samplers import make_sampler
    study = optuna.create_study(sampler=make_sampler("tpe", spaces.get("cnn"), 0))
    dist = {"x": FloatDistribution(0.0, 1.0)}
    for i in range(12):
        study.add_trial(create_trial(params={"x": i / 12}, distributions=dist, state=TrialState.PRUNED,
                                     intermediate_values={3: 5.0 - i / 10}, user_attrs={"rung_3": 5.0 - i / 10}))
    study.add_trial(create_trial(params={"x": 11 / 12}, distributions=dist, value=1.0, intermediate_values={3: 3.9},
                                 user_attrs={"promoted_from": 11, "promoted_at": 3}))
    study.add_trial(create_trial(params={"x": 0.0}, distributions=dist, state=TrialState.PRUNED,
                                 user_attrs={"duplicate_of": 0}))
    from search.sampler_view import _View
    shown = [t.number for t in _View(study).get_trials(deepcopy=False)]
    assert 11 not in shown and 13 not in shown and 12 in shown and len(shown) == 12  # the origin, the duplicate
    assert len(study.get_trials(deepcopy=False)) == 14  # everyone else still sees every trial
    x = study.ask(dist).params["x"]  # TPE samples through the view
    assert 0.0 <= x <= 1.0
