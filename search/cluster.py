"""A PostgreSQL + MLflow server pair for one search on several workers.

python -m search.cluster up|down|status [--state-dir DIR] [--pg-port 5433] [--mlflow-port 5001] [--host 127.0.0.1]
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from search.rdb import redact
from train.errors import UserError, cli


def redact_url(url: str) -> str:
    return redact(url).replace(':***@', '@')

PG_BIN = Path(os.environ.get("FKP_PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_USER = "fkp"
MLFLOW_USER = "fkp"
DATABASES = ("optuna", "mlflow")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CREDENTIALS = "credentials.json"  # what a worker needs, secrets included: mode 600, copied to workers by hand


def default_state_dir() -> Path:
    from tracking import stores
    return stores.root() / "cluster"


def tool(name: str) -> str:
    """A PostgreSQL binary (initdb, pg_ctl, postgres) or the venv's mlflow, or a one-line error."""
    if name == "mlflow":
        found = Path(sys.executable).with_name("mlflow")
        path = str(found) if found.exists() else shutil.which("mlflow")
    else:
        path = str(PG_BIN / name) if (PG_BIN / name).exists() else shutil.which(name)
    if not path:
        where = "the venv or PATH" if name == "mlflow" else f"{PG_BIN} or PATH (set FKP_PG_BIN)"
        raise UserError(f"{name} not found in {where}: install "
                        + ("mlflow" if name == "mlflow" else "the PostgreSQL server (apt-get install postgresql)"))
    return path


def missing() -> list[str]:
    """The binaries this machine lacks (empty when a cluster can run here)."""
    out = []
    for name in ("initdb", "pg_ctl", "postgres", "mlflow"):
        try:
            tool(name)
        except UserError:
            out.append(name)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            out.append("a 'postgres' user (PostgreSQL refuses to run as root)")
        if not shutil.which("runuser"):
            out.append("runuser")
    return out


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str, log: Path | None = None) -> str:
    out = subprocess.run(_as_owner(cmd), capture_output=True, text=True)
    if out.returncode:
        text = log.read_text(errors="replace") if log and log.exists() else (out.stderr or out.stdout)
        last = text.strip().splitlines()
        raise UserError(f"{what} failed: {last[-1] if last else f'exit {out.returncode}'}"
                        + (f" (log: {log})" if log else ""))
    return out.stdout


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _pick_port(host: str, wanted: int, what: str, log) -> int:
    if wanted and port_free(host, wanted):
        return wanted
    port = free_port(host)
    if wanted:
        log(f"port {wanted} is in use: {what} on port {port}")
    return port


def _public(host: str) -> str:
    """The address other machines use: for a wildcard listen address, this machine's outward IP."""
    if host not in ("0.0.0.0", "::", "*"):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP: picks the outward interface, sends nothing
            return s.getsockname()[0]
        except OSError:
            return socket.gethostname()


def check_host(host: str) -> None:
    """One line for a --host this machine cannot listen on, before anything is started."""
    if host in ("0.0.0.0", "::", "*"):
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        raise UserError(f"--host {host}: not a name this machine can resolve") from None
    family, *_rest, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address[0], 0))
        except OSError:
            raise UserError(f"--host {host}: not an address of this machine") from None


def read_credentials(path) -> dict:
    """A worker's credentials file (`up` writes it): storage URL, tracking URI, MLflow user and password."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such credentials file (search.cluster up writes {CREDENTIALS} in its state "
                        "folder)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable credentials file ({type(exc).__name__})") from None
    if mode & 0o077:
        raise UserError(f"{path}: readable by others (mode {mode & 0o777:o}); chmod 600 it first")
    if not isinstance(data, dict) or "storage" not in data or "tracking_uri" not in data:
        raise UserError(f"{path}: a credentials file needs 'storage' and 'tracking_uri'")
    return data


def use_credentials(path) -> dict:
    """Read the file and hand its MLflow user to this process's clients (the environment wins if set)."""
    data = read_credentials(path)
    if data.get("mlflow_username"):
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", data["mlflow_username"])
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", data["mlflow_password"])
    return data


def _private_write(path: Path, text: str) -> None:
    """Secrets: mode 600 from the first byte, written whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.waitpid(pgid, os.WNOHANG)  # reap it when it is our own child
        except ChildProcessError:
            pass
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


class Cluster:
    """The state folder: pg/data (PostgreSQL's files), artifacts/, mlflow.log and cluster.json."""

    def __init__(self, state_dir: Path | str | None = None):
        self.dir = Path(state_dir or default_state_dir()).resolve()
        self.pg_dir = self.dir / "pg"
        self.data = self.pg_dir / "data"
        self.state_file = self.dir / "cluster.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    # ---- URLs ---------------------------------------------------------------------------
    def db_url(self, db: str, driver: str = "postgresql") -> str:
        s = self.state
        return f"{driver}://{DB_USER}:{s['password']}@{_public(s['host'])}:{s['pg_port']}/{db}"

    @property
    def storage(self) -> str:
        return self.db_url("optuna")

    @property
    def tracking_uri(self) -> str:
        return f"http://{_public(self.state['host'])}:{self.state['mlflow_port']}"

    @property
    def credentials_file(self) -> Path:
        return self.dir / CREDENTIALS

    @property
    def auth(self) -> bool:
        return bool(self.state.get("mlflow_password"))

    def _save(self) -> None:
        # it holds the passwords: private from the first byte, written whole or not at all
        _private_write(self.state_file, json.dumps(self.state, indent=2))
        if "password" in self.state and "mlflow_port" in self.state:
            creds = {"storage": self.storage, "tracking_uri": self.tracking_uri}
            if self.auth:
                creds.update(mlflow_username=MLFLOW_USER, mlflow_password=self.state["mlflow_password"])
            _private_write(self.credentials_file, json.dumps(creds, indent=2))

    # ---- PostgreSQL ---------------------------------------------------------------------
    def pg_running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return subprocess.run(_as_owner([tool("pg_ctl"), "status", "-D", str(self.data)]),
                              capture_output=True).returncode == 0

    def _init_pg(self, host: str, port: int, log) -> None:
        self.pg_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.pg_dir, owner.pw_uid, owner.pw_gid)
            if subprocess.run(_as_owner(["test", "-w", str(self.pg_dir)])).returncode:
                raise UserError(f"the postgres user cannot reach {self.pg_dir} (a parent folder is private): "
                                "choose a --state-dir under a folder others can enter")
        self.pg_dir.chmod(0o700)
        password = secrets.token_urlsafe(18)
        pwfile = self.pg_dir / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        log(f"initdb {self.data}")
        try:
            _run([tool("initdb"), "-D", str(self.data), "-U", DB_USER, "-E", "UTF8", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}"], "initdb")
        finally:
            pwfile.unlink()
        listen = "*" if host in ("0.0.0.0", "::", "*") else host
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\n# search.cluster\nport = {port}\nlisten_addresses = '{listen}'\n"
                       "unix_socket_directories = ''\n")
        if listen == "*":
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
        self.state.update(password=password, pg_port=port)

    def start_pg(self) -> None:
        log = self.pg_dir / "postgres.log"
        _run([tool("pg_ctl"), "start", "-D", str(self.data), "-l", str(log), "-w", "-t", "120"], "starting PostgreSQL", log)

    def stop_pg(self) -> None:
        if self.pg_running():
            _run([tool("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60"], "stopping PostgreSQL")

    def restart_pg(self) -> None:
        log = self.pg_dir / "postgres.log"
        _run([tool("pg_ctl"), "restart", "-D", str(self.data), "-l", str(log), "-m", "fast", "-w", "-t", "120"],
             "restarting PostgreSQL", log)

    def _create_databases(self) -> None:
        import psycopg
        with psycopg.connect(self.db_url("postgres"), autocommit=True, connect_timeout=10) as conn:
            for db in DATABASES:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                    conn.execute(f'CREATE DATABASE "{db}"')

    # ---- MLflow server --------------------------------------------------------------------
    def mlflow_pid(self) -> int | None:
        pid = self.state.get("mlflow_pid")
        if not pid:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def mlflow_answers(self) -> bool:
        if "mlflow_port" not in self.state:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.state['mlflow_port']}/health"
                                        if self.state["host"] in ("0.0.0.0", "::", "*")
                                        else f"{self.tracking_uri}/health", timeout=3) as r:
                return r.status == 200
        except Exception:
            return False

    def start_mlflow(self, log=print, timeout: float = 300) -> None:
        artifacts = self.dir / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        host = self.state["host"]
        # the database password goes in the environment (PGPASSWORD), not on a command line `ps` shows
        backend = f"postgresql+psycopg://{DB_USER}@{_public(host)}:{self.state['pg_port']}/mlflow"
        cmd = [tool("mlflow"), "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(artifacts), "--serve-artifacts",
               "--host", host, "--port", str(self.state["mlflow_port"]), "--workers", "1"]
        if host in ("0.0.0.0", "::", "*"):
            cmd += ["--allowed-hosts", "*"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PGPASSWORD": self.state["password"]}
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._auth_config())
            # CSRF protection of the auth app's forms needs one key that outlives restarts
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = self.state.setdefault("flask_secret", secrets.token_urlsafe(24))
        with open(self.dir / "mlflow.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)  # its own process group: `down` stops all of it
        self.state["mlflow_pid"] = proc.pid
        self._save()
        t0 = next_note = time.monotonic()
        while not self.mlflow_answers():
            if proc.poll() is not None:
                lines = (self.dir / "mlflow.log").read_text(errors="replace").strip().splitlines()
                said = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)] or lines
                raise UserError(f"mlflow server exited ({proc.returncode}): {said[-1] if said else ''} "
                                f"(log: {self.dir / 'mlflow.log'})")
            if time.monotonic() - t0 > timeout:
                self.stop_mlflow()
                raise UserError(f"mlflow server did not answer in {timeout:.0f} s (log: {self.dir / 'mlflow.log'})")
            if time.monotonic() >= next_note:
                log(f"waiting for the MLflow server on port {self.state['mlflow_port']} "
                    f"({time.monotonic() - t0:.0f} s; first start migrates its database)")
                next_note += 10
            time.sleep(0.5)

    def _auth_config(self) -> Path:
        """MLflow's basic-auth ini: an admin made on first start, signed-in users may read, anonymous get 401."""
        path = self.dir / "mlflow_auth.ini"
        _private_write(path, "[mlflow]\ndefault_permission = READ\n"
                             f"database_uri = sqlite:///{self.dir / 'mlflow_auth.db'}\n"
                             f"admin_username = {MLFLOW_USER}\nadmin_password = {self.state['mlflow_password']}\n"
                             "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                             "grant_default_workspace_access = false\n"
                             # without a cache every request pays a PBKDF2 hash of the password
                             "auth_cache_ttl_seconds = 60\n")
        return path

    def stop_mlflow(self) -> None:
        """Terminate the server's whole process group (gunicorn/uvicorn workers included)."""
        pid = self.mlflow_pid()
        if pid:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                if _wait_gone(pid, wait):
                    break
        self.state.pop("mlflow_pid", None)
        if self.state_file.exists():
            self._save()

    # ---- the commands -----------------------------------------------------------------------
    def up(self, pg_port: int = 5433, mlflow_port: int = 5001, host: str = "127.0.0.1", log=print,
           auth: bool | None = None) -> None:
        """auth: MLflow's basic-auth with generated credentials; by default on unless the host is loopback."""
        check_host(host)
        lacking = missing()
        if lacking:
            raise UserError(f"cannot start a cluster here: missing {', '.join(lacking)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.pg_running() and self.mlflow_answers():
            log(f"cluster already up ({self.dir})")
            return
        self.state.setdefault("host", host)
        if (host not in LOOPBACK if auth is None else auth) and not self.auth:
            self.state["mlflow_password"] = secrets.token_urlsafe(18)
            self.stop_mlflow()  # an open server from before restarts with authentication
        if not (self.data / "PG_VERSION").exists():
            self._init_pg(self.state["host"], _pick_port(host, pg_port, "PostgreSQL", log), log)
            self._save()
        elif "password" not in self.state:
            raise UserError(f"{self.state_file} is missing but {self.data} exists: remove {self.dir} to start over")
        if not self.pg_running():
            log(f"starting PostgreSQL on port {self.state['pg_port']}")
            self.start_pg()
        self._create_databases()
        if not self.mlflow_answers():
            self.stop_mlflow()  # a server that stopped answering
            self.state["mlflow_port"] = _pick_port(host, self.state.get("mlflow_port", mlflow_port),
                                                   "the MLflow server", log)
            log(f"starting the MLflow server on port {self.state['mlflow_port']}")
            self.start_mlflow(log)
        self._save()

    def down(self, log=print) -> None:
        if not self.state_file.exists():
            log(f"no cluster in {self.dir}")
            return
        self.stop_mlflow()
        self.stop_pg()
        log(f"cluster stopped; its data stays in {self.dir} (`up` starts it again)")

    def describe(self) -> str:
        """How to pass the credentials, never the secrets: they stay in the mode-600 file."""
        lines = [f"  --cluster {self.credentials_file}",
                 f"  (copy that file, mode 600, to each worker machine; or pass --storage "
                 f"'{redact_url(self.storage)}' with PGPASSWORD set, and --tracking-uri {self.tracking_uri}"
                 + (" with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD set" if self.auth else "") + ")",
                 f"  MLflow UI at {self.tracking_uri}" + (" (sign in as user fkp, password in that file)" if self.auth
                                                           else " (open to anyone who can reach it)")]
        return "\n".join(lines)


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m search.cluster", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("up", "down", "status"))
    ap.add_argument("--state-dir", default=None, help="default: mlruns/cluster")
    ap.add_argument("--pg-port", type=int, default=5433, help="(0 or taken: a free one; kept once chosen)")
    ap.add_argument("--mlflow-port", type=int, default=5001, help="(0 or taken: a free one)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address both servers listen on (0.0.0.0: reachable from other machines)")
    ap.add_argument("--auth", choices=("auto", "on", "off"), default="auto",
                    help="MLflow basic-auth with generated credentials (auto: on unless --host is loopback)")
    return ap.parse_args(argv)


@cli
def main(argv=None):
    args = parse(argv)
    cluster = Cluster(args.state_dir)

    def log(line):
        print(line, flush=True)

    if args.command == "up":
        cluster.up(args.pg_port, args.mlflow_port, args.host, log, {"auto": None, "on": True, "off": False}[args.auth])
        print("Pass these to every `python -m search.run` worker:\n" + cluster.describe())
    elif args.command == "down":
        cluster.down(log)
    else:
        if not cluster.state_file.exists():
            print(f"no cluster in {cluster.dir}")
            raise SystemExit(1)
        pg, ml = cluster.pg_running(), cluster.mlflow_answers()
        print(f"PostgreSQL (port {cluster.state.get('pg_port')}): {'up' if pg else 'down'}")
        print(f"MLflow server (port {cluster.state.get('mlflow_port')}): {'up' if ml else 'down'}")
        if pg and ml:
            print(cluster.describe())
        raise SystemExit(0 if pg and ml else 1)


if __name__ == "__main__":
    main()
