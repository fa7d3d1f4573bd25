"""Where things live by default: everything embedded under ./mlruns, one flag away from a server."""
import os
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


def dashboard_command(storage_url: str) -> str:
    if storage_url.startswith("sqlite:///"):
        return f"optuna-dashboard {storage_url} --host 127.0.0.1 --port 8081"
    return f"optuna-dashboard '{storage_url}' --host 127.0.0.1 --port 8081"


def mlflow_ui_command(uri: str) -> str:
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {uri} "
            f"--host 127.0.0.1 --port 5000 --workers 1")
