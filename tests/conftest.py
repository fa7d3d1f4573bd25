import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.fixtures import write_training_csv  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache and stores: nothing touches the user's mlruns/ or ~/.cache."""
    monkeypatch.setenv("FKP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FKP_STORE_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_csv(tmp_path):
    return write_training_csv(tmp_path / "tiny.csv", n=24)
