"""bench section `workers`: the same N-trial search on 1 worker and on 2 workers sharing PostgreSQL.

Each worker is a `python -m search.run` process pinned to one core of its own, with one TensorFlow
thread (TF_NUM_INTRAOP_THREADS=1, TF_NUM_INTEROP_THREADS=1), so the ratio measures how the platform scales across processes (one
Optuna study on PostgreSQL, one MLflow server, one shared --trials budget), not TF's own threading.
It needs a free core per worker to mean anything.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train.errors import UserError

COUNTS = (1, 2)


def _one_thread_env(store: Path) -> dict:
    return {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2", "FKP_STORE_DIR": str(store)}


def _pin(core: int):
    return lambda: os.sched_setaffinity(0, {core})


def _equal_configs(trials: int) -> list[dict]:
    """N configs of one cost (EDGE at N learning rates): TPE's own draws differ in cost by 10x between runs,
    so the 1- and 2-worker searches would time different work."""
    from spaces.cnn import EDGE as edge
    return [{**edge, "learning_rate": edge["learning_rate"] * (1 + i / 10)} for i in range(trials)]


def _queue(storage: str, study: str, epochs: int, configs: list[dict]) -> None:
    from search.optuna_engine import OptunaEngine
    from spaces import get
    made = OptunaEngine(pruner="none", storage=storage, warm_start=False).open_study(study, get("cnn"), 0, epochs)
    for config in configs:
        made.enqueue_trial(config)


def bench_workers(data: str, trials: int, epochs: int, counts=COUNTS) -> dict:
    import optuna
    from optuna.trial import TrialState

    from search import cluster
    lacking = cluster.missing()
    if lacking:
        raise UserError(f"bench workers needs a PostgreSQL server and mlflow: missing {', '.join(lacking)}")
    base = Path(tempfile.mkdtemp(prefix="fkp-bench-workers-"))
    base.chmod(0o755)  # PostgreSQL runs as its own user and must enter it
    servers = cluster.Cluster(base / "state")
    out = {"trials": trials, "epochs": epochs, "cores": os.cpu_count(), "by_workers": {}}
    try:
        servers.up(pg_port=cluster.free_port(), mlflow_port=cluster.free_port(),
                   log=lambda line: print(f"bench: {line}", flush=True))
        for n in counts:
            study = f"bench-workers-{n}"
            cmd = [sys.executable, "-m", "search.run", "--space", "cnn", "--engine", "optuna", "--trials", str(trials),
                   "--epochs", str(epochs), "--data", str(data), "--study-name", study, "--pruner", "none",
                   "--cluster", str(servers.credentials_file)]  # never a password on a command line (ps shows it)
            _queue(servers.storage, study, epochs, _equal_configs(trials))
            print(f"bench: {trials} trials on {n} worker(s)", flush=True)
            logs = [base / f"{study}-{i}.log" for i in range(n)]
            t0 = time.perf_counter()
            procs = []
            for i, log in enumerate(logs):
                with open(log, "wb") as f:
                    # tf.data keeps threads of its own: unpinned, "one thread" borrows the idle core
                    procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                                  env=_one_thread_env(base / "store"),
                                                  preexec_fn=_pin(i % (os.cpu_count() or 1))))
            codes = [p.wait() for p in procs]
            wall = time.perf_counter() - t0
            if any(codes):
                bad = codes.index(next(c for c in codes if c))
                tail = logs[bad].read_text(errors="replace").strip().splitlines()[-1:]
                raise UserError(f"bench workers: a worker of {n} exited {codes[bad]}: {tail[0] if tail else ''}")
            done = optuna.load_study(study_name=study, storage=servers.storage).get_trials(
                deepcopy=False, states=(TrialState.COMPLETE,))
            configs = {tuple(sorted(t.params.items())) for t in done}
            out["by_workers"][str(n)] = {"wall_s": wall, "complete": len(done), "s_per_trial": wall / max(len(done), 1),
                                         "repeated_configs": len(done) - len(configs)}
        walls = {n: r["wall_s"] for n, r in out["by_workers"].items()}
        out["speedup"] = walls[str(counts[0])] / walls[str(counts[-1])]
    finally:
        servers.down(log=lambda line: None)
        shutil.rmtree(base, ignore_errors=True)
    return out


def render(r: dict) -> list[str]:
    lines = ["", "## Workers", "",
             f"The same Optuna search ({r['trials']} trials × {r['epochs']} epochs, no pruning; the trials are the "
             "EDGE preset at as many learning rates, queued with `enqueue_trial` so both runs do the same work) on 1 and on 2 "
             "`python -m search.run` processes sharing one study on PostgreSQL and one MLflow server "
             f"(`search.cluster`), each pinned to a core of its own with one TensorFlow thread, on {r['cores']} cores "
             "(the servers unpinned). Speed-up = wall time "
             "on 1 worker / wall time on N.", "",
             "| workers | wall s | trials complete | wall s per trial | repeated configs | speed-up |",
             "|---|---|---|---|---|---|"]
    first = None
    for n, w in r["by_workers"].items():
        first = first or w["wall_s"]
        lines.append(f"| {n} | {w['wall_s']:.0f} | {w['complete']} | {w['s_per_trial']:.1f} | "
                     f"{w['repeated_configs']} | {first / w['wall_s']:.2f}× |")
    return lines
