"""Optuna's RDB storage for workers on several machines: a heartbeat, and reconnection when the database
restarts.

FKP_HEARTBEAT_S (default 30) and FKP_GRACE_S (120): how often a running trial records that it is alive,
and how long after its last heartbeat another worker fails it and queues its values again.
FKP_DB_RETRY_S (60): how long a storage call, or a worker opening the storage, waits for the database to come
back (or up) before the worker stops with one line (its running trial is then failed and re-run by the next
worker, as for a kill).
"""
from __future__ import annotations

import re
import threading
import time

from train.env import whole_number
from train.errors import UserError


class StorageUnreachable(UserError):
    """The database did not come back in FKP_DB_RETRY_S seconds."""


def seconds(name: str, default: int) -> int:
    return whole_number(name, default, "seconds")


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def open_rdb(url: str):
    """RDBStorage with a heartbeat (trials of a dead worker are failed and retried), connections
    checked before use (pool_pre_ping) and a bounded wait for a database that is restarting."""
    import random

    from optuna.exceptions import StorageInternalError
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
    deadline, told = time.monotonic() + seconds("FKP_DB_RETRY_S", 60), False
    while True:
        try:
            storage = _retrying_rdb_class()(
                url, heartbeat_interval=seconds("FKP_HEARTBEAT_S", 30), grace_period=seconds("FKP_GRACE_S", 120),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                # SQLite: two workers on one file wait for each other's write lock (Python's default is 5 s)
                engine_kwargs={"pool_pre_ping": True, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                                                         else {})})
            break
        except (IntegrityError, ProgrammingError, OperationalError, StorageInternalError) as exc:
            # Workers started together on an empty database race to create Optuna's tables (PostgreSQL:
            # "duplicate key ... pg_type_typname_nsp_index"); the tables exist once one has won. A database
            # restarting while a worker opens it breaks the commit (Optuna: "An exception is raised during
            # the commit"): the same bounded wait as for a database that goes away mid-search.
            # A refused connection is also a database restarting (CI met a worker that started in that window),
            # or not up yet: waited for, and said so, like a restart mid-search. A wrong password is not.
            waits = _restarting(exc) or "Connection refused" in str(exc)
            if time.monotonic() > deadline or (isinstance(exc, OperationalError) and not waits):
                raise  # a wrong password, or no server within the wait: the caller says so in one line
            if waits and not told:
                print(f"[optuna] database {redact(url)} not answering ({_first_line(exc)}): retrying for up to "
                      f"{seconds('FKP_DB_RETRY_S', 60)} s", flush=True)
                told = True
            time.sleep(0.2 + random.random())
    if not url.startswith("sqlite"):
        retry_connections(storage.engine, url, seconds("FKP_DB_RETRY_S", 60))
    return storage


RESTARTING = ("shutting down", "starting up", "in recovery mode", "terminating connection",
              "server closed the connection unexpectedly", "Connection reset by peer", "EOF detected")


def _first_line(exc) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def _restarting(exc) -> bool:
    return any(phrase in str(exc) for phrase in RESTARTING)


def _restarting_chain(exc) -> bool:
    """Optuna wraps a commit's driver error in StorageInternalError: the restart shows in its cause."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, StorageUnreachable):
            return False  # the connection wait below already gave the database its time: stop now
        if _restarting(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


# Every storage call Optuna makes, directly or through its _CachedStorage: a pooled connection can pass its
# pre-ping and then be cut by a database restart mid-query, and that one call would end the worker.
RETRIED = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
           "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
           "get_study_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial", "set_trial_param",
           "_set_trial_param", "get_trial_param", "get_trial_id_from_study_id_trial_number", "get_best_trial",
           "_get_best_trial_id", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
           "set_trial_system_attr", "get_trial", "get_all_trials", "_get_trials", "record_heartbeat",
           "_get_stale_trial_ids")
_RETRYING = []
_depth = threading.local()  # only the outermost call retries: get_all_trials calls _get_trials, and so on


def _retry(name: str, method):
    import functools
    import inspect
    signature = inspect.signature(method)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if getattr(_depth, "n", 0):
            return method(self, *args, **kwargs)
        deadline = None
        while True:
            _depth.n = 1
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                if not _restarting_chain(exc):
                    raise
                deadline = deadline or time.monotonic() + seconds("FKP_DB_RETRY_S", 60)
                if time.monotonic() > deadline:
                    raise
                if name == "set_trial_state_values":
                    bound = signature.bind(self, *args, **kwargs).arguments
                    if _landed(self, bound["trial_id"], bound["state"]):
                        return True
            finally:
                _depth.n = 0
            time.sleep(0.5)
    return call


def _landed(storage, trial_id, state) -> bool:
    """A cut commit that had landed: the trial already ended in the state its owner was writing. Only COMPLETE and
    PRUNED: RUNNING (taking a queued trial) and FAIL (a stale trial) are written by any worker, and Optuna's own
    answer to a second writer (False, or UpdateFinishedTrialError) is the right one there."""
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState
    if state not in (TrialState.COMPLETE, TrialState.PRUNED):
        return False
    try:
        return RDBStorage.get_trial(storage, trial_id).state == state
    except Exception:
        return False


def _retrying_rdb_class():
    """RDBStorage whose calls wait out a database restart (FKP_DB_RETRY_S) instead of failing.

    A retried write whose commit did land before the cut (rare: the server must finish the commit and then drop
    the connection before answering) is written again. Attributes, intermediate values, heartbeats and params
    (Optuna ignores the duplicate key) come out the same; a trial's end is checked (`_landed`); a new trial would be
    made twice, the extra one left RUNNING without a heartbeat (Optuna's own retries of a commit share that risk)."""
    if not _RETRYING:
        from optuna.storages import RDBStorage
        methods = {name: _retry(name, getattr(RDBStorage, name)) for name in RETRIED if hasattr(RDBStorage, name)}

        def __setstate__(self, state):  # an unpickled copy makes a new engine: give it the connection wait again
            RDBStorage.__setstate__(self, state)
            if not self.url.startswith("sqlite"):
                retry_connections(self.engine, self.url, seconds("FKP_DB_RETRY_S", 60))

        _RETRYING.append(type("RetryingRDBStorage", (RDBStorage,),
                              {"__module__": __name__, "__setstate__": __setstate__, **methods}))
    return _RETRYING[0]


def __getattr__(name):  # pickle finds the class by name, and it is made on first use (Optuna is imported late)
    if name == "RetryingRDBStorage":
        return _retrying_rdb_class()
    raise AttributeError(name)


def retry_connections(engine, url: str, limit: int) -> None:
    """Every new connection waits up to `limit` s for the database; after that the process gives up."""
    from sqlalchemy import event
    shown = redact(url)
    gave_up = threading.Event()

    @event.listens_for(engine, "do_connect")
    def connect(dialect, conn_rec, cargs, cparams):
        if dialect.name == "postgresql":
            cparams.setdefault("connect_timeout", 10)
        t0 = time.monotonic()
        told = False
        while True:
            try:
                conn = dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                waited = time.monotonic() - t0
                reason = _first_line(exc)
                if gave_up.is_set() or waited >= limit:
                    gave_up.set()
                    raise StorageUnreachable(
                        f"Optuna storage {shown} unreachable for {limit} s ({reason}): stopping; finished "
                        "trials are saved, and the same command resumes (FKP_DB_RETRY_S sets the wait)") from None
                if not told:
                    print(f"[optuna] database {shown} unreachable ({reason}): retrying for up to {limit} s",
                          flush=True)
                    told = True
                time.sleep(min(1.0, max(limit - waited, 0.05)))
                continue
            if told:
                print(f"[optuna] database back after {time.monotonic() - t0:.0f} s", flush=True)
            return conn

    _quiet_heartbeat_threads()


def _quiet_heartbeat_threads() -> None:
    """Optuna's heartbeat thread dies on the same error the main thread reports in one line."""
    previous = threading.excepthook
    if getattr(previous, "_fkp", False):
        return

    def hook(args):
        if not isinstance(args.exc_value, StorageUnreachable):
            previous(args)

    hook._fkp = True
    threading.excepthook = hook
