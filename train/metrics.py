"""The one metrics path: RMSE, parameter count, compute, model size and inference time.

Compute is millions of multiply-accumulates per image (MMACs) in the convolutions and dense layers:
unlike seconds it is the same on every machine, so it can be a search's budget.

Model size is the MB of the `.keras` file written by `save_model` (architecture + weights, no
optimizer state): the same file that is logged, exported and evaluated.
Inference time follows the paper's Equation 1 (seconds per 100 images), measured as one batched
call of a compiled function after warm-up, median of repeats; never per-image `predict()`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from train.keypoints import NAMES, SIZE

INFERENCE_BATCH = 100


def rmse(y_true, y_pred) -> float:
    """Root mean squared error in pixels over the labelled (non-NaN) cells."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    mask = np.isfinite(y_true)
    if not mask.any():
        return float("nan")
    return float(np.sqrt(np.mean((y_pred[mask] - y_true[mask]) ** 2)))


def mean_face_rmse(y_train, y_val) -> float:
    """The floor every model must beat: predict each keypoint's mean training position for every face."""
    mean = np.nanmean(np.asarray(y_train, np.float64), axis=0)
    return rmse(y_val, np.broadcast_to(mean, np.shape(y_val)))


def rmse_per_keypoint(y_true, y_pred) -> dict[str, float]:
    """RMSE of each keypoint over its labelled x and y cells (NaN where it has no label)."""
    return {name: rmse(y_true[:, 2 * k:2 * k + 2], y_pred[:, 2 * k:2 * k + 2]) for k, name in enumerate(NAMES)}


def mmacs(model) -> float:
    """Millions of multiply-accumulates for one image, counted from the layers' shapes."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if hasattr(layer, "layers"):  # a nested model, e.g. a Keras application's backbone
            total += mmacs(layer) * 1e6
        elif kind in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
            (_, h, w, c_out), c_in = layer.output.shape, layer.input.shape[-1]
            window = int(np.prod(layer.kernel_size))
            if kind == "Conv2D":
                total += h * w * window * c_in * c_out // layer.groups
            else:  # depthwise, then (separable) the pointwise 1x1
                total += h * w * window * c_in * getattr(layer, "depth_multiplier", 1)
                total += h * w * c_in * c_out if kind == "SeparableConv2D" else 0
        elif kind == "Dense":
            total += int(np.prod(layer.input.shape[1:])) * layer.units
    return total / 1e6


def save_model(model, path) -> float:
    """Save `model` without optimizer state as a `.keras` file; return its size in MB."""
    import keras
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Rebuilt from its config: clone_model would carry the compiled optimizer (and its slots) along.
    bare = keras.Model.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    tmp = path.with_name(path.stem + ".tmp.keras")
    bare.save(tmp)
    tmp.replace(path)
    return path.stat().st_size / 1e6


def predict(model, images, batch_size: int = 256) -> np.ndarray:
    x = np.asarray(images, np.float32).reshape(-1, SIZE, SIZE, 1)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def timing_repeats() -> int:
    """Repeats of each speed measurement, whose median is kept: FKP_TIMING_REPEATS (default 20). The test suite
    lowers it: it asserts no speed, and 60 calls per model were a quarter of a final stage's test."""
    from train.env import whole_number
    return whole_number("FKP_TIMING_REPEATS", 20)


def speed(batch_call, single_call, repeats: int | None = None, warmup: int = 3) -> tuple[float, float]:
    """(seconds per 100 images, single-image latency in ms) of a model behind two calls: one on a batch of
    INFERENCE_BATCH faces, one on a single face; each the median of its repeats after warm-up."""
    repeats = repeats or timing_repeats()
    for _ in range(min(warmup, repeats)):
        batch_call()
        single_call()
    return (_median_seconds(batch_call, repeats) * 100 / INFERENCE_BATCH,
            _median_seconds(single_call, repeats * 2) * 1000)


def inference_time(model, repeats: int | None = None, warmup: int = 3) -> dict[str, float]:
    """Seconds per 100 images (one batched call) and single-image latency in ms."""
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert  # a plain call: nothing for autograph to convert
    def forward(x):
        return model(x, training=False)

    call = tf.function(forward, reduce_retracing=True)
    rng = np.random.default_rng(0)
    batch = tf.constant(rng.uniform(0, 255, (INFERENCE_BATCH, SIZE, SIZE, 1)).astype(np.float32))
    single = batch[:1]
    per_100, latency = speed(lambda: call(batch).numpy(), lambda: call(single).numpy(), repeats, warmup)
    return {"inference_s_per_100": per_100, "latency_ms": latency, "inference_batch": INFERENCE_BATCH}
