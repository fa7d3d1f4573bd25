"""Where things live by default: everything embedded under ./mlruns, one flag away from a server."""
import os
import sys
from pathlib import Path

ROOT = Path("mlruns")


def root() -> Path:
    return Path(os.environ.get("FKP_STORE_DIR", ROOT)).resolve()


def mlflow_uri(explicit: str | None = None) -> str:
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root() / 'mlflow.db'}"


def artifact_root() -> str:
    return (root() / "artifacts").as_uri()


def optuna_url(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    root().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root() / 'optuna.db'}"


def keras_tuner_dir() -> Path:
    return root() / "keras_tuner"


def manual_dir() -> Path:
    return root() / "manual"


def optuna_artifact_dir() -> Path:
    """Trial artifacts (learning curve, predictions) that optuna-dashboard shows: tracking/dashboard.py."""
    return root() / "optuna_artifacts"


def tool(name: str) -> str:
    """A console script as a command that works as printed: the one beside the running interpreter
    (`.venv/bin/mlflow` from the repository root) when it is there, so no venv needs activating."""
    here = Path(sys.executable).parent / name  # not resolved: a venv's python is a link out of the venv
    if not here.exists():
        return name
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def dashboard_command(storage_url: str) -> str:
    """Never with the database password: a server URL is printed without it, the password to come from
    PGPASSWORD (or the cluster's credentials file)."""
    import re
    bare = re.sub(r"://([^:/@]+):[^@]*@", r"://\1@", storage_url)
    quoted = storage_url if storage_url.startswith("sqlite:///") else f"'{bare}'"
    prefix = "PGPASSWORD=<from the cluster's credentials file> " if bare != storage_url else ""
    return (f"{prefix}{tool('optuna-dashboard')} {quoted} --artifact-dir {optuna_artifact_dir()} "
            f"--host 127.0.0.1 --port 8081")


def mlflow_ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"MLflow UI: {uri} (the tracking server serves it)"
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {tool('mlflow')} ui --backend-store-uri {uri} "
            f"--host 127.0.0.1 --port 5000 --workers 1")
