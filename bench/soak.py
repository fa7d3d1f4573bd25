"""python -m bench.soak: a long search on the cluster with a fault at random every few minutes.

Two workers (one core and one TensorFlow thread each) share one Optuna study on PostgreSQL, tracked by an
MLflow server with authentication, on the shared data, for --minutes. Every U(--gap-min, --gap-max)
seconds one fault is drawn from a seeded generator: a worker SIGKILLed mid-trial (and restarted), a
PostgreSQL restart, or an MLflow server outage of 10-40 s. Then it counts what was lost:

    python -m bench.soak --minutes 30 --seed 0
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train.errors import UserError, cli

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FAULTS = ("kill-worker", "restart-postgresql", "mlflow-outage")


def _worker(i: int, args: list[str], folder: Path, creds: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", FKP_HEARTBEAT_S="5", FKP_GRACE_S="20",
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    log = open(folder / f"worker-{i}.log", "ab")
    cores = os.sched_getaffinity(0)
    core = sorted(cores)[i % len(cores)]
    return subprocess.Popen([sys.executable, "-W", "ignore", "-m", "search.run", *args, "--cluster", str(creds)],
                            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {core}))


def soak(data: str, minutes: float, seed: int, gap: tuple[float, float], epochs: int, workers: int = 2) -> dict:
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from search import cluster
    lacking = cluster.missing()
    if lacking:
        raise UserError(f"cannot soak here: missing {', '.join(lacking)}")
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="fkp-soak-"))
    base.chmod(0o755)
    servers = cluster.Cluster(base / "state")
    servers.up(pg_port=cluster.free_port(), mlflow_port=cluster.free_port(), log=lambda line: None, auth=True)
    study = f"soak-{seed}"
    seconds = minutes * 60
    args = ["--space", "cnn", "--no-presets", "--trials", "100000", "--epochs", str(epochs), "--timeout",
            str(seconds), "--data", str(Path(data).resolve()), "--study-name", study, "--seed", str(seed)]
    faults: dict[str, int] = {k: 0 for k in FAULTS}
    events, procs, t0 = [], {}, time.monotonic()
    try:
        for i in range(workers):
            procs[i] = _worker(i, args, base, servers.credentials_file)
        while time.monotonic() - t0 < seconds - gap[0]:
            time.sleep(rng.uniform(*gap))
            if time.monotonic() - t0 >= seconds - 30:
                break
            kind = rng.choice(FAULTS)
            at = time.monotonic() - t0
            if kind == "kill-worker":
                i = rng.randrange(workers)
                if procs[i].poll() is None:
                    os.killpg(procs[i].pid, signal.SIGKILL)
                    procs[i].wait()
                procs[i] = _worker(i, args, base, servers.credentials_file)
            elif kind == "restart-postgresql":
                servers.restart_pg()
            else:
                servers.stop_mlflow()
                time.sleep(rng.uniform(10, 40))
                servers.start_mlflow(log=lambda line: None)
            faults[kind] += 1
            events.append((round(at), kind))
            print(f"[soak] {at / 60:.1f} min: {kind}", flush=True)
        exits = {}
        for i, proc in procs.items():
            try:
                exits[i] = proc.wait(timeout=seconds + 900 - (time.monotonic() - t0))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                exits[i] = "hung: killed"
        wall = time.monotonic() - t0
        os.environ["MLFLOW_TRACKING_USERNAME"] = cluster.MLFLOW_USER
        os.environ["MLFLOW_TRACKING_PASSWORD"] = servers.state["mlflow_password"]
        from tracking.mlflow_tracker import Tracker
        Tracker("cnn", servers.tracking_uri)  # sends what an outage left in the spool, as a next start would
        trials = optuna.load_study(study_name=study, storage=servers.storage).get_trials(deepcopy=False)
        client = MlflowClient(tracking_uri=servers.tracking_uri)
        exp = client.get_experiment_by_name("cnn")
        runs = client.search_runs([exp.experiment_id], f"tags.fkp_study = '{study}'", max_results=5000)
        failed = [t for t in trials if t.state == TrialState.FAIL]
        lost_s = sum(((t.datetime_complete or t.datetime_start) - t.datetime_start).total_seconds()
                     for t in failed if t.datetime_start)
        retried = {t.user_attrs.get("retry_of") for t in trials} | {t.system_attrs.get("failed_trial") for t in trials}
        finished_configs = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
        spool = [p for p in (base / "mlruns" / "spool").glob("*/*")] if (base / "mlruns").exists() else []
        return {
            "minutes": minutes, "seed": seed, "wall_s": wall, "workers": workers, "epochs": epochs,
            "faults": faults, "events": events,
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed_attempts": len(failed), "rerun": len([t for t in failed if t.number in retried]),
            "lost_trials": len([t for t in failed if t.number not in retried and "error" not in t.user_attrs
                                and "over_budget" not in t.user_attrs]),  # over budget: never begun
            "lost_s": lost_s, "lost_share": lost_s / (wall * workers),
            "running_trials": sum(t.state == TrialState.RUNNING for t in trials),
            "running_runs": sum(r.info.status == "RUNNING" for r in runs),
            "repeated_configs": len(finished_configs) - len(set(finished_configs)),
            "spooled_left": len(spool), "worker_exits": exits,
        }
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        servers.down(log=lambda line: None)
        shutil.rmtree(base, ignore_errors=True)


def markdown(r: dict) -> str:
    hand = []
    if r["running_trials"] or r["running_runs"]:
        hand.append(f"{r['running_trials']} trials and {r['running_runs']} MLflow runs left RUNNING")
    if any(code not in (0,) for code in r["worker_exits"].values()):
        hand.append(f"worker exits {r['worker_exits']}")
    if r["spooled_left"]:
        hand.append(f"{r['spooled_left']} spooled runs not sent")
    faults = ", ".join(f"{k} {v}" for k, v in r["faults"].items())
    return "\n".join([
        "## Soak: a long search under repeated faults", "",
        f"{r['workers']} workers (a core and one TensorFlow thread each) on one study, PostgreSQL and an MLflow "
        f"server with authentication, on the shared data, `--epochs {r['epochs']}` with the default rungs, "
        f"for {r['minutes']:g} minutes; a fault every few minutes drawn from seed {r['seed']}.", "",
        "| measure | value |", "|---|---|",
        f"| wall time | {r['wall_s'] / 60:.1f} min |",
        f"| trials finished (complete / stopped at a rung) | {r['complete']} / {r['pruned']} |",
        f"| faults injected | {sum(r['faults'].values())} ({faults}) |",
        f"| attempts lost to faults / re-run | {r['failed_attempts']} / {r['rerun']} |",
        f"| trials lost (never re-run) | {r['lost_trials']} |",
        f"| time lost to faults (killed attempts' training, share of worker time) | {r['lost_s']:.0f} s "
        f"({100 * r['lost_share']:.1f}%) |",
        f"| trials / MLflow runs left RUNNING | {r['running_trials']} / {r['running_runs']} |",
        f"| configs finished twice | {r['repeated_configs']} |",
        f"| needed a person's hand | {'; '.join(hand) or 'nothing'} |"])


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/training.csv.gz")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gap-min", type=float, default=90, help="seconds between faults, at least")
    ap.add_argument("--gap-max", type=float, default=180, help="seconds between faults, at most")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        raise UserError(f"{args.data}: no such file")
    result = soak(args.data, args.minutes, args.seed, (args.gap_min, args.gap_max), args.epochs)
    md = markdown(result)
    print(md)
    if not args.no_results:
        from bench.sections import update
        update("soak", md)


if __name__ == "__main__":
    main()
