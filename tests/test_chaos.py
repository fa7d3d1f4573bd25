"""Every fault at once on real servers: workers SIGKILLed and restarted, PostgreSQL restarted, the MLflow
server away for a while, three workers sharing one --trials budget through all of it."""
import json
import os
import signal
import time

from optuna.trial import TrialState

from tests.servers import finish, servers, wait_for, worker  # noqa: F401
from tests.test_cluster import _runs, _study, _trials, assert_killed
from tracking.mlflow_tracker import Tracker

TRIALS = 6


def _linked(servers, study, pid):
    return next((t for t in _trials(servers, study, TrialState.RUNNING)
                 if t.user_attrs.get("pid") == pid and "mlflow_run_id" in t.user_attrs), None)


def test_three_workers_through_kills_a_database_restart_and_a_tracking_server_outage(servers, tmp_path):
    from tests.fixtures import write_training_csv
    data = write_training_csv(tmp_path / "d.csv", n=40)
    study = "chaos"
    args = ["--space", "cnn", "--engine", "optuna", "--trials", str(TRIALS), "--epochs", "2", "--split", "random",
            "--no-presets", "--pruner", "none", "--sampler", "random", "--data", str(data), "--study-name", study,
            "--storage", servers.storage, "--tracking-uri", servers.tracking_uri, "--max-params", "60000"]
    # a grace of 3 s was shorter than a PostgreSQL restart plus a reconnect on a loaded 2-core machine: a live
    # worker's trial could be failed under it
    env = {"FKP_HEARTBEAT_S": 1, "FKP_GRACE_S": 10, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 0}
    procs, victims = {}, []

    def start(name):
        procs[name] = worker(args, tmp_path, tmp_path / f"{name}.log", **env)

    def kill_mid_trial(name):
        proc = procs[name]
        trial = wait_for(lambda: _linked(servers, study, proc.pid), f"a trial of {name} to start", proc=proc,
                         log=tmp_path / f"{name}.log")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        victims.append(trial)

    for name in ("a", "b", "c"):
        start(name)
    try:
        kill_mid_trial("b")
        start("b2")
        servers.restart_pg()
        kill_mid_trial("c")
        start("c2")
        # a worker checks the tracking server once as it starts: take it away once c2 is under way
        wait_for(lambda: _linked(servers, study, procs["c2"].pid) or procs["c2"].poll() is not None
                 or len(_trials(servers, study, TrialState.COMPLETE)) >= TRIALS - 1, "the restarted worker to start")
        servers.stop_mlflow()
        time.sleep(5)
    finally:
        if not servers.mlflow_answers():
            servers.start_mlflow(log=lambda line: None)
    for name in ("a", "b2", "c2"):
        out = finish(procs[name], tmp_path / f"{name}.log")
        assert procs[name].returncode == 0, out[-3000:]
    Tracker("cnn", servers.tracking_uri)  # a start on this machine sends what the outage spooled

    trials = _trials(servers, study)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == TRIALS, [(t.number, t.state, t.user_attrs.get("error")) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stored = _study(servers, study).trials
    client, runs = _runs(servers, study)
    for victim in victims:  # every killed attempt failed, in both stores
        assert_killed(stored[victim.number], client.get_run(victim.user_attrs["mlflow_run_id"]))
    every = client.search_runs([runs[0].info.experiment_id], f"tags.fkp_study = '{study}'", max_results=500)
    assert not [r.info.run_id for r in every if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.data.tags["fkp_status"] == "finished"]
    for t in done:  # each finished trial's run, by id or by what the spool renamed it to
        if "duplicate_of" in t.user_attrs:  # a restarted worker redrew a config that trained: reused, no run
            assert stored[t.user_attrs["duplicate_of"]].state == TrialState.COMPLETE
            continue
        run_id = t.user_attrs["mlflow_run_id"]
        run = next(r for r in finished if run_id in (r.info.run_id, r.data.tags.get("fkp_spooled_as")))
        assert {"rmse", "test_rmse"} <= set(run.data.metrics)
        assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert not [p for p in (tmp_path / "mlruns" / "spool").glob("*/*")]
    # no config trained twice at the same budget
    configs = [json.dumps({**r.data.params, "epochs": r.data.tags.get("max_epochs")}, sort_keys=True) for r in finished]
    assert len(configs) == len(set(configs)) == TRIALS
