"""What MLflow shows of a trial beyond metrics: its model as an MLflow Keras model and its data as a dataset.

Kept apart from the tracker because both go through MLflow's fluent API or its data classes, which
the client-only tracker otherwise never touches.
"""
from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

MODEL_NAME = "model"  # the logged model's name, so `runs:/<run id>/model` loads it


@lru_cache(maxsize=1)
def pip_requirements() -> tuple[str, ...]:
    """Pinned from what is installed: MLflow's own inference imports the model and costs 8-11 s a trial."""
    from importlib import metadata
    reqs = []
    for dist in ("keras", "tensorflow-cpu", "tensorflow", "numpy"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return tuple(reqs)


def signature(model):
    """float32 faces in, 30 keypoint coordinates out, from the model's own shapes (any batch size)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(shape):
        return Schema([TensorSpec(np.dtype(np.float32), (-1, *shape[1:]))])
    return ModelSignature(inputs=spec(tuple(model.input_shape)), outputs=spec(tuple(model.output_shape)))


@contextmanager
def fluent_uri(uri: str):
    """MLflow's fluent API reads one process-wide tracking URI, and setting it also sets the
    MLFLOW_TRACKING_URI variable (which tracking/stores.py reads): put both back afterwards."""
    import mlflow
    from mlflow.tracking._tracking_service import utils
    env, before = os.environ.get("MLFLOW_TRACKING_URI"), utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def log_keras_model(uri: str, run_id: str, model_path) -> float:
    """Log the trial's `.keras` file (no optimizer state) as an MLflow Keras model of run `run_id`.

    log_model needs an active fluent run: the trial's own run is resumed by id (its parent tag and
    name are untouched) and left when done; the tracker then closes it with the trial's status.
    Returns the seconds spent."""
    t0 = time.perf_counter()
    import keras
    import mlflow
    model = keras.models.load_model(model_path, compile=False)
    with fluent_uri(uri), mlflow.start_run(run_id=run_id, nested=True):
        mlflow.keras.log_model(model, name=MODEL_NAME, signature=signature(model),
                               pip_requirements=list(pip_requirements()))
    return time.perf_counter() - t0


def dataset(data):
    """The faces as an MLflow dataset named by their content hash. Digest and schema only: MLflow
    stores no copy of the images, and the object is cheap to log on every trial."""
    import mlflow.data
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    sha = getattr(data, "sha", None) or "unknown"
    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": two local sources, the same class
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(Path(data.path).resolve().as_uri())
    except Exception:  # a path MLflow has no source type for
        source = None
    return mlflow.data.from_numpy(data.images, source=source, targets=data.keypoints,
                                  name=f"faces-{sha[:12]}", digest=sha[:36])


def dataset_input(data, context: str = "training"):
    """A DatasetInput entity for MlflowClient.log_inputs."""
    from mlflow.entities import DatasetInput, InputTag
    return DatasetInput(dataset(data)._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
