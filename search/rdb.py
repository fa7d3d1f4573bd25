"""Optuna's RDB storage for workers on several machines: a heartbeat, and reconnection when the database
restarts.

FKP_HEARTBEAT_S (default 30) and FKP_GRACE_S (120): how often a running trial records that it is alive,
and how long after its last heartbeat another worker fails it and queues its values again.
FKP_DB_RETRY_S (60): how long a storage call waits for the database to come back before the worker
stops with one line (its running trial is then failed and re-run by the next worker, as for a kill).
"""
from __future__ import annotations

import os
import re
import threading
import time

from train.errors import UserError


class StorageUnreachable(UserError):
    """The database did not come back in FKP_DB_RETRY_S seconds."""


def seconds(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{name}={raw!r}: expected a whole number of seconds, at least 1")
    return value


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def open_rdb(url: str):
    """RDBStorage with a heartbeat (trials of a dead worker are failed and retried), connections
    checked before use (pool_pre_ping) and a bounded wait for a database that is restarting."""
    import random

    from optuna.exceptions import StorageInternalError
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
    deadline = time.monotonic() + seconds("FKP_DB_RETRY_S", 60)
    while True:
        try:
            storage = RDBStorage(url, heartbeat_interval=seconds("FKP_HEARTBEAT_S", 30),
                                 grace_period=seconds("FKP_GRACE_S", 120),
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                                 engine_kwargs={"pool_pre_ping": True})
            break
        except (IntegrityError, ProgrammingError, OperationalError, StorageInternalError) as exc:
            # Workers started together on an empty database race to create Optuna's tables (PostgreSQL:
            # "duplicate key ... pg_type_typname_nsp_index"); the tables exist once one has won. A database
            # restarting while a worker opens it breaks the commit (Optuna: "An exception is raised during
            # the commit"): the same bounded wait as for a database that goes away mid-search.
            if time.monotonic() > deadline or (isinstance(exc, OperationalError) and not _restarting(exc)):
                raise  # a wrong password or an address with no server: the caller says so in one line, now
            time.sleep(0.2 + random.random())
    if not url.startswith("sqlite"):
        retry_connections(storage.engine, url, seconds("FKP_DB_RETRY_S", 60))
    return storage


RESTARTING = ("shutting down", "starting up", "in recovery mode", "terminating connection",
              "server closed the connection unexpectedly")


def _restarting(exc) -> bool:
    return any(phrase in str(exc) for phrase in RESTARTING)


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
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
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
