"""The one trial function: config -> trained model -> RMSE, params, size, inference time.

Every engine (manual, Optuna, Keras Tuner) calls `run_trial`; none has a loop of its own.
"""
from __future__ import annotations

import math
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from train import metrics
from train.augment import augment
from train.errors import UserError
from train.impute import impute
from train.models import build, resolve
from train.split import split

_prepared: "OrderedDict[tuple, tuple]" = OrderedDict()  # augmented training sets, reused across trials


class Pruned(Exception):
    """Raised by an epoch hook to stop an unpromising trial."""


class TrialFailed(RuntimeError):
    """The configuration trained but produced no usable model (e.g. the loss became NaN)."""


@dataclass
class TrialResult:
    config: dict
    metrics: dict
    history: dict
    model: object
    model_path: Path
    val_images: np.ndarray = field(repr=False)
    val_true: np.ndarray = field(repr=False)
    val_pred: np.ndarray = field(repr=False)


@dataclass
class TrialSettings:
    """How every trial of a search is trained, whatever its hyperparameters."""
    epochs: int = 30
    patience: int = 5
    val_fraction: float = 0.15
    split: str = "group"
    seed: int = 0
    copies: int = 1
    verbose: int = 0


def training_set(data, train_idx, cfg, settings: TrialSettings):
    key = (data.sha or id(data), len(data), hash(train_idx.tobytes()), cfg["imputation"], cfg["augment"],
           settings.copies, settings.seed)
    if key not in _prepared:
        images = data.images[train_idx].astype(np.float32)
        x, y = impute(cfg["imputation"], images, data.keypoints[train_idx])
        x, y = augment(x, y, cfg["augment"], copies=settings.copies, seed=settings.seed)
        _prepared[key] = (x[..., None], y.astype(np.float32))
        while len(_prepared) > 2:  # each set can be hundreds of MB
            _prepared.popitem(last=False)
    return _prepared[key]


def _optimizer(cfg):
    lr = float(cfg["learning_rate"])
    name = cfg["optimizer"]
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    raise UserError(f"unknown optimizer {name!r} (choose adam, adamw, rmsprop or sgd)")


def run_trial(config: dict, data, settings: TrialSettings | None = None,
              on_epoch: Callable[[int, dict], None] | None = None, out_dir=None) -> TrialResult:
    """Train `config` on `data` and measure it. `on_epoch(epoch, logs)` may raise `Pruned`."""
    settings = settings or TrialSettings()
    cfg = resolve(config)
    if not data.labelled:
        raise UserError(f"{data.path}: has no keypoint labels to train on")
    train_idx, val_idx = split(data, settings.val_fraction, settings.split, settings.seed)
    x_train, y_train = training_set(data, train_idx, cfg, settings)
    x_val = data.images[val_idx].astype(np.float32)[..., None]
    y_val = data.keypoints[val_idx]

    keras.utils.set_random_seed(settings.seed)
    from train.losses import MaskedRMSE, masked_mse
    model = build(cfg)
    model.compile(optimizer=_optimizer(cfg), loss=masked_mse, metrics=[MaskedRMSE()])
    hook = _EpochHook(on_epoch)
    callbacks = [hook, keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.EarlyStopping("val_rmse", mode="min", patience=settings.patience,
                                               restore_best_weights=True)]
    t0 = time.perf_counter()
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=settings.epochs,
              batch_size=int(cfg["batch_size"]), callbacks=callbacks, verbose=settings.verbose, shuffle=True)
    train_s = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hook.history.items()}
    if not history.get("loss") or any(not math.isfinite(v) for v in history["loss"]):
        raise TrialFailed(f"loss became NaN or infinite at epoch {len(history.get('loss', []))}")

    t_measure = time.perf_counter()
    val_pred = metrics.predict(model, x_val)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="fkp-trial-"))
    model_path = out / "model.keras"
    result = {
        "rmse": metrics.rmse(y_val, val_pred),
        "mean_face_rmse": metrics.mean_face_rmse(data.keypoints[train_idx], y_val),
        "params": int(model.count_params()),
        "size_mb": metrics.save_model(model, model_path),
        **metrics.inference_time(model),
        "train_s": train_s,
        "epochs": len(history["loss"]),
        # steady-state speed: the first epoch also pays for tracing the graph
        "train_images_per_s": len(x_train) / min(hook.epoch_s[1:] or hook.epoch_s),
        "train_images": int(len(x_train)),
        "val_images": int(len(x_val)),
    }
    result["measure_s"] = time.perf_counter() - t_measure
    return TrialResult(cfg, result, history, model, model_path, x_val[..., 0], y_val, val_pred)


class _EpochHook(keras.callbacks.Callback):
    """Records the curves and hands each epoch to the engine (progress, pruning)."""

    def __init__(self, on_epoch):
        super().__init__()
        self.on_epoch = on_epoch
        self.history: dict[str, list] = {"loss": [], "val_rmse": [], "rmse": []}
        self.epoch_s: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_s.append(time.perf_counter() - self._t0)
        logs = logs or {}
        for key in self.history:
            if key in logs:
                self.history[key].append(float(logs[key]))
        if self.on_epoch is not None:
            self.on_epoch(epoch, dict(logs))
