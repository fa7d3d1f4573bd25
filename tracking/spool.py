"""When the MLflow tracking server stops answering: keep what the trials would have logged, send it later.

The trial's result always reaches its engine (the Optuna study has its own database). What MLflow
would have received goes, call by call and in order, to a spool folder per run under
`<store dir>/spool/` (artifacts copied there too), with one line saying so. The spool is sent as soon
as the server answers again, or when a search next starts on this machine with the same tracking URI.
A run started while the server was down gets an `offline-…` id until then; the MLflow run it becomes
carries that id as tag `fkp_spooled_as`.

Before giving up on a request MLflow's client retries it (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by
default: about 4 minutes), so a short server restart never reaches the spool.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import pickle
import shutil
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tracking import stores
from tracking.liveness import HOST, dead_here

# Client calls that change a run: these are spooled. Reads go straight to the server.
WRITES = {"create_run", "log_batch", "log_metric", "log_param", "set_tag", "delete_tag", "set_terminated",
          "update_run", "log_artifacts", "log_artifact", "log_inputs", "log_text", "log_dict"}
OFFLINE = "offline-"
PROBE_EVERY_S = 10.0


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def answers(uri: str, timeout: float = 3.0) -> bool:
    """Whether an HTTP tracking server answers at all (any reply below 500 counts)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except Exception:
        return False


def prepare(uri: str) -> None:
    """Before a tracker talks to a server: one line if it does not answer, and no per-run URL lines."""
    if not is_server(uri):
        return
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the progress lines say enough
    if not answers(uri):
        from train.errors import UserError
        raise UserError(f"MLflow tracking server {uri} does not answer: start it (python -m search.cluster up) "
                        "or pass another --tracking-uri")


def unavailable(exc, uri: str) -> bool:
    """Whether a failed call means "try later": no server, or a server error (e.g. its database restarting).
    A client error (a bad value, 4xx) is raised as usual."""
    from mlflow.exceptions import MlflowException
    if isinstance(exc, MlflowException) and exc.get_http_status_code() >= 500:
        return True
    return not answers(uri)


def wrap(client, uri: str):
    """The client a tracker should use: spooling for a tracking server, as it is for a local store."""
    return SpoolingClient(client, uri) if is_server(uri) else client


def _run_id_of(name, args, kwargs):
    if name == "create_run":
        return None
    return kwargs["run_id"] if "run_id" in kwargs else args[0]


def _with_run_id(args, kwargs, run_id):
    if "run_id" in kwargs:
        return args, {**kwargs, "run_id": run_id}
    return (run_id, *args[1:]), kwargs


class SpoolingClient:
    """An MlflowClient whose writes survive the server being away; everything else passes through."""

    def __init__(self, client, uri: str, root: Path | None = None):
        self._client, self._uri = client, uri
        self.dir = Path(root or stores.root() / "spool") / hashlib.sha1(uri.encode()).hexdigest()[:12]
        self.offline = False
        self._probed = 0.0
        self._told = False
        self._pending: set[str] = set()  # runs of this process whose calls wait in the spool
        self._real: dict[str, str] = {}  # offline id -> the MLflow run id it became
        sent = self.replay()
        if sent:
            print(f"[mlflow] sent {sent} run(s) spooled while {uri} was unreachable", flush=True)

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name in WRITES:
            return functools.partial(self._write, name)
        if callable(attr):
            return functools.partial(self._read, attr)
        return attr

    # ---- calls --------------------------------------------------------------------------
    def _read(self, method, *args, **kwargs):
        from mlflow.exceptions import MlflowException
        if self.offline and not self._back():
            raise MlflowException(f"MLflow tracking server {self._uri} is unreachable")
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if not unavailable(exc, self._uri):
                raise
            self._go_offline(exc)
            raise MlflowException(f"MLflow tracking server {self._uri} is unreachable") from None

    def _write(self, name, *args, **kwargs):
        if self.offline:
            self._back()
        run_id = _run_id_of(name, args, kwargs)
        if run_id in self._real:  # started offline, sent since
            run_id = self._real[run_id]
            args, kwargs = _with_run_id(args, kwargs, run_id)
        if not self.offline and run_id not in self._pending:
            try:
                return getattr(self._client, name)(*args, **kwargs)
            except Exception as exc:
                if not unavailable(exc, self._uri):
                    raise  # a real error, not an absent server
                self._go_offline(exc)
        return self._spool(name, run_id, args, kwargs)

    def _go_offline(self, exc) -> None:
        self.offline, self._probed = True, time.monotonic()
        if not self._told:
            atexit.register(self._report_left)
        self._told = True
        from mlflow.exceptions import MlflowException
        why = (f"HTTP {exc.get_http_status_code()}" if isinstance(exc, MlflowException) and answers(self._uri)
               else "no answer")
        print(f"[mlflow] tracking server {self._uri} unavailable ({why}): logging to {self.dir} until it "
              "answers again; trial results still reach the engine", flush=True)

    def _back(self, now: bool = False) -> bool:
        """Probe (at most every PROBE_EVERY_S); when the server answers, send the spool first."""
        if not now and time.monotonic() - self._probed < PROBE_EVERY_S:
            return False
        self._probed = time.monotonic()
        if not answers(self._uri):
            return False
        self.offline = False
        sent = self.replay()
        if not self.offline:
            print(f"[mlflow] tracking server {self._uri} is back: sent {sent} spooled run(s)", flush=True)
        return not self.offline

    def _report_left(self) -> None:
        if self.offline:
            self._back(now=True)
        if self._pending:
            print(f"[mlflow] {len(self._pending)} run(s) not yet logged to {self._uri}, kept in {self.dir}: they "
                  f"are sent when a search next starts here with --tracking-uri {self._uri}", flush=True)

    # ---- the spool: one folder per run, its calls in order ------------------------------
    def _folder(self, run_id: str) -> Path:
        folder = self.dir / run_id
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "owner").write_text(f"{HOST} {os.getpid()}")  # others leave it to this process while it lives
        return folder

    def _spool(self, name, run_id, args, kwargs):
        if name == "create_run":
            return self._spool_create(args, kwargs)
        folder = self._folder(run_id)
        if name in ("log_artifacts", "log_artifact"):  # the local files may be temporary: copy them
            local = kwargs.pop("local_dir", None) or kwargs.pop("local_path", None)
            local, rest = (Path(args[1]), args[2:]) if local is None else (Path(local), args[1:])
            copy = folder / "artifacts" / str(len(list(folder.glob("artifacts/*"))))
            if local.is_dir():
                shutil.copytree(local, copy)
            else:
                copy.mkdir(parents=True)
                copy = Path(shutil.copy2(local, copy / local.name))
            args = (run_id, str(copy.relative_to(folder)), *rest)
        with open(folder / "calls.pkl", "ab") as f:
            pickle.dump((name, args, kwargs), f)
        self._pending.add(run_id)
        return None

    def _spool_create(self, args, kwargs):
        from mlflow.entities import Run, RunData, RunInfo
        run_id = f"{OFFLINE}{uuid.uuid4().hex}"
        experiment_id = kwargs.pop("experiment_id", None) or args[0]
        kwargs.setdefault("start_time", int(time.time() * 1000))
        with open(self._folder(run_id) / "calls.pkl", "ab") as f:
            pickle.dump(("create_run", (experiment_id,), kwargs), f)
        self._pending.add(run_id)
        info = RunInfo(run_id, experiment_id, "offline", "RUNNING", kwargs["start_time"], None, "active",
                       run_name=kwargs.get("run_name"))
        return Run(info, RunData())

    def _owned_elsewhere(self, folder: Path) -> bool:
        try:
            host, pid = (folder / "owner").read_text().split()
        except (OSError, ValueError):
            return False
        if host != HOST:
            return True  # another machine's (a shared store dir): that machine sends it
        return int(pid) != os.getpid() and not dead_here(host, pid)

    def replay(self) -> int:
        """Send every spooled run of this URI (oldest first). Returns how many were sent."""
        if not self.dir.exists():
            return 0
        for claimed in self.dir.glob("*.sending-*"):  # a sender that died midway: free its claim
            if dead_here(HOST, claimed.name.rsplit("-", 1)[1]):
                claimed.rename(claimed.with_name(claimed.name.split(".sending-")[0]))
        sent = 0
        for folder in sorted((p for p in self.dir.iterdir() if p.is_dir() and ".sending-" not in p.name),
                             key=lambda p: p.stat().st_mtime):
            if self._owned_elsewhere(folder):
                continue  # a live process on this machine is still spooling it: it sends it itself
            claimed = folder.with_name(f"{folder.name}.sending-{os.getpid()}")
            try:
                folder.rename(claimed)  # atomic: two processes never send one run twice
            except OSError:
                continue
            try:
                self._send(claimed, folder.name)
            except Exception as exc:
                claimed.rename(folder)
                if unavailable(exc, self._uri):
                    self.offline, self._probed = True, time.monotonic()
                    return sent
                print(f"[mlflow] could not send spooled run {folder.name} ({type(exc).__name__}: "
                      f"{str(exc)[:160]}): kept in {folder}", flush=True)
                continue
            shutil.rmtree(claimed, ignore_errors=True)
            self._pending.discard(folder.name)
            sent += 1
        return sent

    def _send(self, folder: Path, key: str) -> None:
        state_file = folder / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {"done": 0, "run_id": None}
        if not key.startswith(OFFLINE):
            state["run_id"] = key
        calls = []
        with open(folder / "calls.pkl", "rb") as f:
            while True:
                try:
                    calls.append(pickle.load(f))
                except EOFError:
                    break
        for i, (name, args, kwargs) in enumerate(calls):
            if i < state["done"]:
                continue  # sent by an earlier, interrupted attempt
            if name == "create_run":
                tags = {**(kwargs.get("tags") or {}), "fkp_spooled_as": key}
                state["run_id"] = self._client.create_run(*args, **{**kwargs, "tags": tags}).info.run_id
            else:
                args, kwargs = _with_run_id(args, kwargs, state["run_id"])
                if name in ("log_artifacts", "log_artifact"):
                    args = (args[0], str(folder / args[1]), *args[2:])
                getattr(self._client, name)(*args, **kwargs)
            state["done"] = i + 1
            state_file.write_text(json.dumps(state))
        if key.startswith(OFFLINE):
            self._real[key] = state["run_id"]
