import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# speed is measured in bench/, never asserted here: 2 repeats, not 20, in every test and the workers it starts
os.environ.setdefault("FKP_TIMING_REPEATS", "2")

from tests.fixtures import write_training_csv  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache and stores: nothing touches the user's mlruns/ or ~/.cache."""
    monkeypatch.setenv("FKP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FKP_STORE_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    # a test that acts as a user (mlflow.set_tracking_uri) also sets MLFLOW_TRACKING_URI for the whole process:
    # the next test in this worker, whichever file it is in, would log to that test's store
    import sys
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
        sys.modules["mlflow"].set_registry_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture
def tiny_csv(tmp_path):
    return write_training_csv(tmp_path / "tiny.csv", n=24)
