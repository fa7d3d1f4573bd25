"""Edge export: LiteRT (TFLite) files in float32, float16 and dynamic-range int8, measured the
same way as the Keras model (batched call of 100 after warm-up, median of repeats)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from train.errors import UserError
from train.keypoints import SIZE
from train.metrics import INFERENCE_BATCH, speed

FORMATS = ("fp32", "fp16", "int8")


def convert(model, fmt: str) -> bytes:
    import tensorflow as tf
    if fmt not in FORMATS:
        raise UserError(f"unknown LiteRT format {fmt!r} (choose from {', '.join(FORMATS)})")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt in ("fp16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    with contextlib.redirect_stdout(io.StringIO()):  # the converter lists every traced tensor
        return converter.convert()


class Runner:
    """A LiteRT interpreter (ai-edge-litert; tf.lite.Interpreter is deprecated) for one batch size."""

    def __init__(self, content: bytes, batch: int, threads: int | None = None):
        import os

        from ai_edge_litert.interpreter import Interpreter
        # The interpreter defaults to one thread; TensorFlow uses every core, and so should we
        # when comparing the two (measured: int8 0.052 -> 0.027 s/100 on 2 cores).
        self.interpreter = Interpreter(model_content=content, num_threads=threads or os.cpu_count())
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.interpreter.resize_tensor_input(self.input, [batch, SIZE, SIZE, 1])
        self.interpreter.allocate_tensors()
        self.batch = batch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)


def predict(content: bytes, images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, np.float32).reshape(-1, SIZE, SIZE, 1)
    run = Runner(content, INFERENCE_BATCH)
    out = []
    for start in range(0, len(x), INFERENCE_BATCH):
        chunk = x[start:start + INFERENCE_BATCH]
        pad = INFERENCE_BATCH - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, SIZE, SIZE, 1), np.float32)])
        out.append(run(chunk)[:INFERENCE_BATCH - pad])
    return np.concatenate(out)


def timing(content: bytes, repeats: int | None = None, warmup: int = 3) -> dict[str, float]:
    x = np.random.default_rng(0).uniform(0, 255, (INFERENCE_BATCH, SIZE, SIZE, 1)).astype(np.float32)
    batch, single = Runner(content, INFERENCE_BATCH), Runner(content, 1)
    per_100, latency = speed(lambda: batch(x), lambda: single(x[:1]), repeats, warmup)
    return {"s_per_100": per_100, "latency_ms": latency}


def export(model, folder, formats, images=None, y_true=None) -> dict[str, dict]:
    """Write model_<fmt>.tflite files; return size, speed and (given labelled faces) RMSE per format."""
    from train.metrics import predict as keras_predict
    from train.metrics import rmse
    folder = Path(folder)
    keras_rmse = rmse(y_true, keras_predict(model, images)) if images is not None else None
    report = {}
    for fmt in formats:
        content = convert(model, fmt)
        path = folder / f"model_{fmt}.tflite"
        path.write_bytes(content)
        entry = {"file": path.name, "size_mb": len(content) / 1e6, **timing(content)}
        if images is not None:
            entry["rmse"] = rmse(y_true, predict(content, images))
            entry["rmse_change"] = entry["rmse"] - keras_rmse
        report[fmt] = entry
    return report
