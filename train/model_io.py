"""Load a keypoint model of any kind the project writes, behind one batched `predict`.

A model may be a folder holding `model.keras` (train.fit --out, leaderboard --export-best) or an
MLflow model (`MLmodel`), a `.keras` file, a `.tflite` file (run with LiteRT, as train/litert.py
does), or an MLflow URI (`runs:/<run_id>/<path>`, `models:/NAME@alias`) that resolves to any of
these. Shapes are checked right after loading, so a model that does not map one 96x96x1 grey image
to 30 values is refused before a single face is predicted.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from train.errors import UserError, first_line
from train.keypoints import COLUMNS, SIZE

BATCH = 256           # images per call; the last batch is padded so the model is traced once
PROGRESS_EVERY = 10   # batches between progress lines on large inputs
MLFLOW_SCHEMES = ("runs:/", "models:/")
KINDS_HINT = "a folder with model.keras or MLmodel, a .keras or .tflite file, or a runs:/ or models:/ URI"


@dataclass
class Model:
    kind: str                                   # "keras", "mlflow keras" or "litert", for messages
    source: str                                 # what the user named
    run: Callable[[np.ndarray], np.ndarray]     # (BATCH, 96, 96, 1) float32 -> (BATCH, 30)


def load(spec: str, tracking_uri: str | None = None) -> Model:
    """Load, check shapes and warm up (trace) the model named by `spec`."""
    if spec.startswith(MLFLOW_SCHEMES):
        with tempfile.TemporaryDirectory(prefix="fkp-model-") as tmp:
            return _load_local(_download(spec, tracking_uri, tmp), spec)
    return _load_local(Path(spec), spec)


def keras_model(folder):
    """The Keras model itself in a folder holding model.keras: what LiteRT conversion starts from."""
    import keras
    _register_custom_objects()
    path = Path(folder) / "model.keras"
    if not path.exists():
        raise UserError(f"{folder}: no model.keras here (train.fit --out or leaderboard --export-best writes one)")
    return keras.models.load_model(path, compile=False)


def predict(model: Model, images: np.ndarray, log: Callable[[str], None] | None = None) -> np.ndarray:
    """Keypoints in pixels of the 96x96 image, (n, 30), from (n, 96, 96) grey levels."""
    n = len(images)
    out = np.empty((n, len(COLUMNS)), np.float32)
    batches = -(-n // BATCH)
    for b, start in enumerate(range(0, n, BATCH), 1):
        chunk = np.asarray(images[start:start + BATCH], np.float32).reshape(-1, SIZE, SIZE, 1)
        pad = BATCH - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, SIZE, SIZE, 1), np.float32)])
        out[start:start + BATCH - pad] = model.run(chunk)[:BATCH - pad]
        if log and batches > PROGRESS_EVERY and b % PROGRESS_EVERY == 0:
            log(f"predicted {start + BATCH - pad}/{n} faces")
    return out


# ---- resolving what the user named ------------------------------------------------------------
def _download(uri: str, tracking_uri: str | None, dst: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    from tracking import stores
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its bars would bury ours
    uri_store = stores.mlflow_uri(tracking_uri)
    mlflow.set_tracking_uri(uri_store)
    mlflow.set_registry_uri(uri_store)  # models:/ resolves through the registry, not the tracking store
    if re.fullmatch(r"runs:/[^/]+", uri):
        uri += "/"  # the run's root (where trials log model.keras); MLflow refuses the bare form
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst, tracking_uri=uri_store))
    except MlflowException as exc:
        raise UserError(f"{uri}: {first_line(exc.message)} (store {uri_store})") from None


def _load_local(path: Path, label: str) -> Model:
    if path.is_dir():
        # A trial's run root and an exported folder hold model.keras; a logged MLflow model, MLmodel.
        if (path / "model.keras").is_file():
            return _keras(path / "model.keras", label)
        if (path / "MLmodel").is_file():
            return _mlflow_keras(path, label)
        raise UserError(f"{label}: no model.keras or MLmodel in this folder (expected {KINDS_HINT})")
    if not path.exists():
        raise UserError(f"{label}: no such file or folder (expected {KINDS_HINT})")
    if path.suffix == ".tflite":
        return _litert(path, label)
    if path.suffix == ".keras":
        return _keras(path, label)
    raise UserError(f"{label}: not a model file (expected {KINDS_HINT})")


def _register_custom_objects() -> None:
    import train.losses  # noqa: F401  (custom loss/metric a saved model may name)
    import train.models  # noqa: F401  (custom layers, e.g. the heatmap head)


def _keras(path: Path, label: str) -> Model:
    import keras
    _register_custom_objects()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # a damaged zip, a foreign file, an unknown layer: all one line
        raise UserError(f"{label}: cannot load as a Keras model ({type(exc).__name__}: {first_line(exc)})") from None
    return _checked_keras(model, "keras", label)


def _mlflow_keras(path: Path, label: str) -> Model:
    import mlflow.keras
    _register_custom_objects()
    try:
        model = mlflow.keras.load_model(str(path))
    except Exception as exc:
        raise UserError(f"{label}: cannot load as an MLflow Keras model ({type(exc).__name__}: {first_line(exc)})") from None
    return _checked_keras(model, "mlflow keras", label)


def _checked_keras(model, kind: str, label: str) -> Model:
    try:
        shapes = (tuple(model.input_shape), tuple(model.output_shape))
    except (AttributeError, TypeError, ValueError):
        raise UserError(f"{label}: not a Keras model with one input and one output") from None
    _check_shapes(shapes[0], shapes[1], label)
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert  # a plain call: nothing for autograph to convert
    def forward(x):
        return model(x, training=False)

    # One compiled function on fixed-size batches: model.predict() rebuilds its data pipeline per
    # call, and per-image calls are ~25x slower (STACK.md).
    call = tf.function(forward)
    return _warmed(Model(kind, label, lambda x: np.asarray(call(tf.constant(x)))))


def _litert(path: Path, label: str) -> Model:
    from ai_edge_litert.interpreter import Interpreter

    from train import litert
    content = path.read_bytes()
    try:
        probe = Interpreter(model_content=content)
        inputs, outputs = probe.get_input_details(), probe.get_output_details()
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{label}: cannot load as a LiteRT model ({first_line(exc)})") from None
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"{label}: has {len(inputs)} inputs and {len(outputs)} outputs; expected one of each")
    _check_shapes(tuple(inputs[0]["shape_signature"]), tuple(outputs[0]["shape_signature"]), label)
    try:
        runner = litert.Runner(content, BATCH)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{label}: cannot run a batch of {BATCH} ({first_line(exc)})") from None
    return _warmed(Model("litert", label, runner))


def _check_shapes(inp: tuple, out: tuple, label: str) -> None:
    """Batch dimension free; an unknown (None / -1) dimension is accepted and settled by the warm-up."""
    def fits(shape, want):
        return len(shape) == len(want) and all(d in (None, -1) or d == w for d, w in zip(shape[1:], want[1:]))
    if not fits(inp, (None, SIZE, SIZE, 1)):
        raise UserError(f"{label}: takes input of shape {_shape(inp)}, not {SIZE}x{SIZE}x1 grey images")
    if not fits(out, (None, len(COLUMNS))):
        raise UserError(f"{label}: returns shape {_shape(out)}, not {len(COLUMNS)} keypoint coordinates")


def _warmed(model: Model) -> Model:
    """Run one zero batch: traces the function (so predict times the steady state) and proves the shape."""
    try:
        y = np.asarray(model.run(np.zeros((BATCH, SIZE, SIZE, 1), np.float32)))
    except Exception as exc:
        raise UserError(f"{model.source}: fails on a batch of {SIZE}x{SIZE}x1 images "
                        f"({type(exc).__name__}: {first_line(exc)})") from None
    if y.shape != (BATCH, len(COLUMNS)):
        raise UserError(f"{model.source}: returns shape {_shape(y.shape)}, not {len(COLUMNS)} keypoint coordinates")
    return model


def _shape(shape) -> str:
    return "(" + ", ".join(["batch"] + ["?" if d in (None, -1) else str(d) for d in shape[1:]]) + ")"
