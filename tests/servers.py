"""A real PostgreSQL and a real `mlflow server`, once per test session, for the tests of workers.

They are started the way `python -m search.cluster up` starts them, in a temporary folder, on free
ports. Tests that use them skip, naming what is missing, only when this machine lacks the binaries.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from search import cluster

REPO = Path(__file__).resolve().parent.parent


def _quiet(line):
    pass


def skip_without_servers():
    lacking = cluster.missing()
    if lacking:
        pytest.skip(f"no PostgreSQL / MLflow server on this machine: missing {', '.join(lacking)}")


def private_dir(prefix: str) -> Path:
    """A temp folder the postgres user can enter (pytest's tmp_path sits under a private folder)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def servers():
    """With MLflow's authentication on, as on a shared host: every client of the tests and every worker
    signs in from the environment, as a user of the cluster would."""
    skip_without_servers()
    base = private_dir("fkp-servers-")
    c = cluster.Cluster(base / "state")
    try:
        c.up(pg_port=cluster.free_port(), mlflow_port=cluster.free_port(), log=_quiet, auth=True)
        os.environ["MLFLOW_TRACKING_USERNAME"] = cluster.MLFLOW_USER
        os.environ["MLFLOW_TRACKING_PASSWORD"] = c.state["mlflow_password"]
        yield c
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        c.down(log=_quiet)
        shutil.rmtree(base, ignore_errors=True)


def worker(args, cwd, log: Path, **env) -> subprocess.Popen:
    """`python -m search.run ARGS` as a separate process (a worker), its output in `log`."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
                "TMPDIR": str(cwd),  # what a killed worker leaves behind stays in the test's folder
                **{k: str(v) for k, v in env.items()}}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-W", "ignore", "-m", "search.run", *args], cwd=cwd,
                                env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, what: str, timeout: float = 300, proc: subprocess.Popen | None = None, log=None):
    """Poll until predicate() is truthy; fail (with the worker's log) if the worker ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = Path(log).read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"the worker ended (exit {proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise AssertionError(f"the worker did not end:\n{log.read_text(errors='replace')[-3000:]}") from None
    return log.read_text(errors="replace")
