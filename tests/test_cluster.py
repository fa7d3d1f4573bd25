"""One search on several workers: PostgreSQL for Optuna, an MLflow tracking server, and their faults.

Real servers only (tests/servers.py): a tiny search on them, `search.cluster up/down`, a worker killed
mid-trial, the database going away mid-search, the tracking server going away mid-search, a named
study reused with other data or another space, and Keras Tuner's chief/worker mode.
"""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search import cluster
from search import run as search_run
from tests.fixtures import write_training_csv
from tests.servers import REPO, finish, private_dir, servers, skip_without_servers, wait_for, worker  # noqa: F401


def _args(servers, data, study, trials=2, epochs=1, *extra):
    return ["--space", "cnn", "--engine", "optuna", "--trials", str(trials), "--epochs", str(epochs),
            "--split", "random", "--no-presets", "--pruner", "none", "--data", str(data), "--study-name", study,
            "--storage", servers.storage, "--tracking-uri", servers.tracking_uri, *extra]


_STORAGES: dict = {}


def _storage(servers):
    """One storage per server for the test's own reads. A new RDBStorage per poll (wait_for polls every 0.2 s)
    kept its pooled connections open until a full garbage collection, so PostgreSQL's 100 could run out
    mid-test ("too many clients", raised as StorageInternalError); and a plain one fails on a read made while
    the database restarts, where open_rdb waits, as a worker does."""
    from search.rdb import open_rdb
    if servers.storage not in _STORAGES:
        _STORAGES[servers.storage] = open_rdb(servers.storage)
    return _STORAGES[servers.storage]


def _study(servers, name):
    return optuna.load_study(study_name=name, storage=_storage(servers))


def _trials(servers, name, *states):
    try:
        trials = _study(servers, name).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []
    return [t for t in trials if not states or t.state in states]


def _runs(servers, study):
    client = MlflowClient(tracking_uri=servers.tracking_uri)
    exp = client.get_experiment_by_name("cnn")
    return client, client.search_runs([exp.experiment_id],
                                      f"tags.fkp_role = 'trial' and tags.fkp_study = '{study}'", max_results=100)


def _finished(runs):
    """Trained trials' runs (a config over the space's parameter budget is refused at once, as `rejected`)."""
    return [r for r in runs if r.data.tags["fkp_status"] == "finished"]


def _running_linked(servers, name):
    """A trial that is training now: RUNNING in Optuna and already linked to its MLflow run."""
    running = [t for t in _trials(servers, name, TrialState.RUNNING) if "mlflow_run_id" in t.user_attrs]
    return running[0] if running else None


def test_a_search_on_postgresql_tracked_by_an_mlflow_server(servers, tiny_csv, tmp_path):
    search_run.main(_args(servers, tiny_csv, "pg-basic"))
    done = _trials(servers, "pg-basic", TrialState.COMPLETE)
    assert len(done) == 2
    client, runs = _runs(servers, "pg-basic")
    runs = _finished(runs)
    assert {r.info.run_id for r in runs} == {t.user_attrs["mlflow_run_id"] for t in done}
    for run in runs:
        assert run.info.status == "FINISHED" and "rmse" in run.data.metrics
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server, not a local path
        assert {"model.keras", "config.json", "metrics.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        got = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))
        assert json.loads(open(got).read())["rmse"] == pytest.approx(run.data.metrics["rmse"])


def test_cluster_up_is_idempotent_and_down_stops_both(capsys):
    skip_without_servers()
    base = private_dir("fkp-cluster-")
    state = base / "state"
    argv = ["--state-dir", str(state), "--pg-port", str(cluster.free_port()), "--mlflow-port", str(cluster.free_port())]
    try:
        cluster.main(["up", *argv])
        out = capsys.readouterr().out
        secret = cluster.Cluster(state).state["password"]
        assert f"--cluster {state.resolve() / 'credentials.json'}" in out and "--tracking-uri http://127.0.0.1:" in out
        assert secret not in out and "postgresql://fkp@127.0.0.1:" in out  # how to pass it, never the password
        assert (state / "credentials.json").stat().st_mode & 0o777 == 0o600
        cluster.main(["up", *argv])
        assert "already up" in capsys.readouterr().out
        with pytest.raises(SystemExit) as status:
            cluster.main(["status", *argv])
        assert status.value.code == 0
        c = cluster.Cluster(state)
        optuna.create_study(study_name="up", storage=c.storage)  # the URL it printed works
        mlflow_pid = c.state["mlflow_pid"]
    finally:
        cluster.main(["down", *argv])
    assert "cluster stopped" in capsys.readouterr().out
    c = cluster.Cluster(state)
    assert not c.pg_running() and not c.mlflow_answers()
    with pytest.raises(ProcessLookupError):
        os.killpg(mlflow_pid, 0)  # the server's whole process group is gone
    assert cluster.port_free("127.0.0.1", c.state["pg_port"]) and cluster.port_free("127.0.0.1", c.state["mlflow_port"])
    shutil.rmtree(base)


def test_workers_started_together_on_an_empty_database_all_open_it(servers, tmp_path):
    import psycopg
    with psycopg.connect(servers.db_url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE fresh")
    url = servers.db_url("fresh")
    code = f"from search.rdb import open_rdb; open_rdb({url!r}); print('opened')"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 and "opened" in out for p, out in zip(procs, outs)), outs  # none lost the race


def test_a_worker_started_while_the_database_is_down_waits_for_it(servers, tmp_path):
    """CI met this under load: a worker was still opening the storage when the chaos test restarted PostgreSQL,
    and 'Connection refused' ended it."""
    url = servers.db_url("optuna")
    code = f"from search.rdb import open_rdb; open_rdb({url!r}); print('opened')"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FKP_DB_RETRY_S": "120"}
    servers.stop_pg()
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(8)  # python and Optuna import in about 3 s: the worker meets the database down
        assert proc.poll() is None, proc.communicate()[0]
    finally:
        servers.start_pg()
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0 and "opened" in out, out
    assert "not answering" in out and "Connection refused" in out and "retrying for up to 120 s" in out


def test_a_connection_cut_after_its_pre_ping_is_retried_not_fatal(servers):
    """CI met this: PostgreSQL restarted between a pooled connection's pre-ping and its query, and the worker
    ended on that one storage call. Here the server really terminates the backend at that moment."""
    import psycopg
    from sqlalchemy import event

    from search.rdb import open_rdb
    with psycopg.connect(servers.db_url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE cut")
    storage = open_rdb(servers.db_url("cut"))
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "cut")
    cuts = []

    @event.listens_for(storage.engine, "checkout")
    def cut(dbapi_conn, record, proxy):  # after the pre-ping: the connection is known good, then it is killed
        if not cuts:
            pid = dbapi_conn.info.backend_pid
            with psycopg.connect(servers.db_url("postgres"), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            cuts.append(pid)

    assert storage.get_study_id_from_name("cut") == study_id
    assert cuts  # the cut did happen, and the call still answered
    cached = optuna.storages.get_storage(storage)  # as Optuna calls it: through its cache, with keywords
    trial_id = cached.create_new_trial(study_id)
    cuts.clear()
    cached.set_trial_state_values(trial_id, state=optuna.trial.TrialState.COMPLETE, values=[1.0])
    assert cuts and storage.get_trial(trial_id).state == optuna.trial.TrialState.COMPLETE
    assert pickle.loads(pickle.dumps(storage)).get_study_id_from_name("cut") == study_id


def test_a_worker_killed_mid_trial_is_failed_by_its_heartbeat_and_rerun(servers, tiny_csv, tmp_path, monkeypatch):
    study = "pg-kill"
    log = tmp_path / "killed.log"
    proc = worker(_args(servers, tiny_csv, study, 2, 3), tmp_path, log, FKP_HEARTBEAT_S=1)
    victim = wait_for(lambda: _running_linked(servers, study), "a trial to start", proc=proc, log=log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    victim = _study(servers, study).trials[victim.number]
    assert victim.state == TrialState.RUNNING, "the trial ended before the kill: nothing was tested"
    # As if the worker ran on another machine: only the heartbeat can tell it is gone.
    _storage(servers).set_trial_user_attr(victim._trial_id, "host", "another-machine")
    monkeypatch.setenv("FKP_HEARTBEAT_S", "1")
    monkeypatch.setenv("FKP_GRACE_S", "2")
    time.sleep(3)  # past the grace period since its last heartbeat
    search_run.main(_args(servers, tiny_csv, study, 2, 3))  # another worker, same command

    trials = _study(servers, study).trials
    assert trials[victim.number].state == TrialState.FAIL
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2  # the budget, not one more, not one lost
    assert any(t.params == victim.params for t in done)  # the killed trial's values ran again
    client, _ = _runs(servers, study)
    killed_run = client.get_run(victim.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    assert killed_run.data.tags["error"] == "process was killed during the trial"


def test_two_workers_share_four_trials_and_one_killed_mid_trial_is_restarted(servers, tiny_csv, tmp_path):
    """The issue's target as written: two workers on --trials 4, one SIGKILLed mid-trial and started again."""
    study, args = "pg-two-workers", _args(servers, tiny_csv, "pg-two-workers", 4, 3)
    env = {"FKP_HEARTBEAT_S": 1, "FKP_GRACE_S": 2}
    logs = {name: tmp_path / f"{name}.log" for name in ("steady", "doomed", "restarted")}
    steady = worker(args, tmp_path, logs["steady"], **env)
    doomed = worker(args, tmp_path, logs["doomed"], **env)
    victim = wait_for(lambda: next((t for t in _trials(servers, study, TrialState.RUNNING)
                                    if t.user_attrs.get("pid") == doomed.pid and "mlflow_run_id" in t.user_attrs), None),
                      "a trial of the second worker to start", proc=doomed, log=logs["doomed"])
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    assert (_study(servers, study).trials[victim.number].state == TrialState.RUNNING
            or "rejected" in _study(servers, study).trials[victim.number].user_attrs), "it ended before the kill"
    restarted = worker(args, tmp_path, logs["restarted"], **env)
    for name, proc in (("steady", steady), ("restarted", restarted)):
        out = finish(proc, logs[name])
        assert proc.returncode == 0, out[-3000:]

    trials = _trials(servers, study)
    assert [t.state for t in trials if t.state == TrialState.COMPLETE] == [TrialState.COMPLETE] * 4
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    client, _ = _runs(servers, study)
    assert_killed(trials[victim.number], client.get_run(victim.user_attrs["mlflow_run_id"]))


def assert_killed(trial, run):
    """A trial SIGKILLed mid-training is FAIL in Optuna and FAILED in MLflow. A config over the parameter budget
    is refused within a second of its run starting, so a kill aimed at it can land after that refusal: its run then
    rightly says "rejected" (KILLED), and Optuna has it PRUNED, or FAIL if the kill came before the tell."""
    if run.data.tags["fkp_status"] == "rejected":
        assert run.info.status == "KILLED" and trial.state in (TrialState.PRUNED, TrialState.FAIL)
    else:
        assert trial.state == TrialState.FAIL and run.info.status == "FAILED", (trial.state, run.info.status)


def test_the_database_going_away_mid_search_is_waited_for(servers, tiny_csv, tmp_path):
    study = "pg-restart"
    log = tmp_path / "worker.log"
    proc = worker(_args(servers, tiny_csv, study, 2, 2), tmp_path, log, FKP_HEARTBEAT_S=1)
    wait_for(lambda: _running_linked(servers, study), "a trial to start", proc=proc, log=log)
    servers.stop_pg()  # pg_ctl stop -m fast: every connection is cut
    time.sleep(3)
    servers.start_pg()
    out = finish(proc, log)
    assert proc.returncode == 0, out[-3000:]
    assert "unreachable" in out and "[optuna] database back after" in out  # it waited, then went on
    trials = _trials(servers, study)
    assert not [t for t in trials if t.state in (TrialState.FAIL, TrialState.RUNNING)], [
        (t.number, t.state, t.user_attrs) for t in trials]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2  # the budget: none lost, none counted twice
    _, runs = _runs(servers, study)
    assert sorted(r.info.run_id for r in _finished(runs)) == sorted(t.user_attrs["mlflow_run_id"] for t in done)


def test_the_tracking_server_going_away_mid_search_is_spooled_and_caught_up(servers, tiny_csv, tmp_path):
    from tracking.mlflow_tracker import Tracker
    study = "pg-spool"
    log = tmp_path / "worker.log"
    proc = worker(_args(servers, tiny_csv, study, 2, 2), tmp_path, log, MLFLOW_HTTP_REQUEST_MAX_RETRIES=0)
    try:
        wait_for(lambda: _running_linked(servers, study), "a trial to start", proc=proc, log=log)
        servers.stop_mlflow()
        out = finish(proc, log)
        done = _trials(servers, study, TrialState.COMPLETE)
        assert len(done) == 2 and all("rmse" in t.user_attrs for t in done)  # results reached Optuna
        assert "unavailable (no answer): logging to" in out
        assert "not yet logged to" in out  # said, at exit, what is still waiting
    finally:
        if not servers.mlflow_answers():
            servers.start_mlflow(log=lambda line: None)
    Tracker("cnn", servers.tracking_uri)  # the next start on this machine sends the spool
    client, runs = _runs(servers, study)
    assert "running" not in {r.data.tags["fkp_status"] for r in runs}
    runs = _finished(runs)
    assert sorted(r.info.run_id for r in runs if not r.data.tags.get("fkp_spooled_as")) == sorted(
        t.user_attrs["mlflow_run_id"] for t in done if not t.user_attrs["mlflow_run_id"].startswith("offline-"))
    assert len(runs) == 2 and all(r.info.status == "FINISHED" and "rmse" in r.data.metrics for r in runs)
    assert any(r.data.tags.get("fkp_spooled_as", "").startswith("offline-") for r in runs)  # started while away
    for run in runs:
        assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert not [p for p in (tmp_path / "mlruns" / "spool").glob("*/*")]


def test_a_named_study_refuses_other_data_and_another_space(servers, tiny_csv, tmp_path, capsys):
    search_run.main(_args(servers, tiny_csv, "pg-named", 1))
    other = write_training_csv(tmp_path / "other.csv", n=24, seed=1)
    for argv in (_args(servers, other, "pg-named", 1),
                 ["--space", "mobilenetv2", *_args(servers, tiny_csv, "pg-named", 1)[2:]]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as refused:
            search_run.main(argv)
        assert refused.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error: ") and "pg-named" in err[-1]
    assert len(_trials(servers, "pg-named")) == 1  # nothing ran on the wrong data or space


def test_keras_tuner_chief_and_a_worker_share_one_search(servers, tiny_csv, tmp_path):
    port = cluster.free_port()
    args = ["--space", "cnn", "--engine", "keras-tuner", "--trials", "2", "--epochs", "1", "--split", "random",
            "--no-presets", "--data", str(tiny_csv), "--study-name", "kt-dist", "--tracking-uri", servers.tracking_uri]
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port}
    chief = worker(args, tmp_path, tmp_path / "chief.log", KERASTUNER_TUNER_ID="chief", **env)
    tuner = worker(args, tmp_path, tmp_path / "tuner0.log", KERASTUNER_TUNER_ID="tuner0", **env)
    tuner_out = finish(tuner, tmp_path / "tuner0.log")
    chief_out = finish(chief, tmp_path / "chief.log")
    assert tuner.returncode == 0, tuner_out[-3000:]
    assert chief.returncode == 0, chief_out[-3000:]
    assert "[keras-tuner 2/2] trial #1" in tuner_out, tuner_out[-3000:]  # the worker ran both trials
    assert "trial #" not in chief_out  # the chief only served the oracle
    _, runs = _runs(servers, "kt-dist")
    assert sorted(r.data.tags["kt_trial_id"] for r in runs) == ["0", "1"]
    # Trained, or refused at once by the space's parameter budget (a random config can be too big).
    assert all(r.data.tags["fkp_status"] in ("finished", "rejected") for r in runs)


def _post(url, auth=None):
    import base64
    import urllib.error
    import urllib.request
    request = urllib.request.Request(url, data=b'{"name": "anonymous-was-here"}', method="POST",
                                     headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_no_one_in_without_credentials_and_no_secret_in_logs_or_errors(servers, tiny_csv, tmp_path, capsys):
    secrets = (servers.state["password"], servers.state["mlflow_password"])
    create = f"{servers.tracking_uri}/api/2.0/mlflow/experiments/create"
    assert _post(create) == 401
    assert _post(create, ("fkp", "wrong")) == 401
    # a worker with the wrong password: one line, exit 2, no password
    env = {"MLFLOW_TRACKING_PASSWORD": "wrong-password"}
    log = tmp_path / "wrong.log"
    proc = worker(_args(servers, tiny_csv, "auth-wrong"), tmp_path, log, **env)
    out = finish(proc, log)
    assert proc.returncode == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refused user 'fkp' (HTTP 401)" in errors[0] and "wrong-password" not in out
    # --cluster FILE alone: storage, tracking URI and MLflow user from the mode-600 file
    args = ["--space", "cnn", "--trials", "1", "--epochs", "1", "--split", "random", "--no-presets", "--pruner", "none",
            "--data", str(tiny_csv), "--study-name", "auth-file", "--cluster", str(servers.credentials_file)]
    log = tmp_path / "file.log"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "search.run", *args], cwd=tmp_path,
                            env={**bare, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    out = finish(proc, log)
    assert proc.returncode == 0, out
    assert len(_trials(servers, "auth-file", TrialState.COMPLETE)) == 1
    assert not any(s in out for s in secrets)
    client, runs = _runs(servers, "auth-file")
    search = client.search_runs([runs[0].info.experiment_id], "tags.fkp_role = 'search' and tags.fkp_study = 'auth-file'")
    for run in [*runs, *search]:
        logged = json.dumps({**run.data.params, **run.data.tags})
        assert not any(s in logged for s in secrets)
    assert not any(s in (servers.dir / "mlflow.log").read_text(errors="replace") for s in secrets)
    # bad input: a missing credentials file, a host this machine does not have
    for argv, message in ((["--cluster", str(tmp_path / "none.json")], "no such credentials file"),):
        with pytest.raises(SystemExit) as exit_:
            search_run.main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cluster.main(["up", "--state-dir", str(tmp_path / "x"), "--host", "203.0.113.9"])
    assert exit_.value.code == 2 and "not an address of this machine" in capsys.readouterr().err
