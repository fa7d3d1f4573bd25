"""The one trial function: config -> trained model -> RMSE, params, size, inference time.

Every engine (manual, Optuna, Keras Tuner) calls `run_trial`; none has a loop of its own.
"""
from __future__ import annotations

import dataclasses
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
from train.errors import Rejected, UserError  # noqa: F401  (Rejected: engines import it from here)
from train.fit_to_time import FitToTime
from train.impute import impute
from train.models import build, resolve, set_output_bias
from train.schedules import ONECYCLE_WARMUP, Replannable, learning_rate, optimizer
from train.split import split3

_prepared: "OrderedDict[tuple, tuple]" = OrderedDict()  # augmented training sets, reused across trials


class Pruned(Exception):
    """Raised by an epoch hook to stop an unpromising trial."""


class TrialFailed(RuntimeError):
    """The configuration trained but produced no usable model (e.g. the loss became NaN)."""


class TooSlow(Pruned):
    """A config whose measured speed would spend more of the search's time budget than one trial may
    (--max-trial-share): stopped, and never promoted."""


class StopTraining(Exception):
    """Raised by an epoch hook to end training now and measure the model as it is (e.g. --timeout)."""


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
    test_images: np.ndarray | None = field(default=None, repr=False)
    test_true: np.ndarray | None = field(default=None, repr=False)
    test_pred: np.ndarray | None = field(default=None, repr=False)


# What a trial's numbers depend on beyond its config, settings and data: bumped when training changes what a
# config scores, so a study or a final stage never mixes models of two versions in one ranking.
#   1: flips mirrored every label about x = 96
#   2: each label mirrored about its keypoint's measured axis (FLIP_AXES); online augmentation draws stateless
TRAINING_CODE = 2


@dataclass
class TrialSettings:
    """How every trial of a search is trained, whatever its hyperparameters."""
    epochs: int = 30
    patience: int = 5
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split: str = "group"
    seed: int = 0
    copies: int = 1
    max_params: int | None = None
    max_mmacs: float | None = None  # compute per image: the edge budget that, unlike seconds, travels
    # train on training + validation faces for exactly `epochs` (no early stopping, nothing to select on);
    # the test faces stay out, so the split and its test score are the search's own
    refit: bool = False
    # the seed of weights, augmentation and batch order; None: `seed`, which also draws the split. A final stage
    # retrains one config on other seeds over the same split, so the two must part.
    train_seed: int | None = None
    # False: the test faces are not scored (a final stage's selection runs: the test split is scored once, at its end)
    score_test: bool = True
    verbose: int = 0

    @property
    def weights_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed


def training_set(data, train_idx, cfg, settings: TrialSettings):
    key = (data.sha or id(data), len(data), hash(train_idx.tobytes()), cfg["imputation"], cfg["augment"],
           settings.copies, settings.weights_seed)
    if key not in _prepared:
        images = data.images[train_idx].astype(np.float32)
        x, y = impute(cfg["imputation"], images, data.keypoints[train_idx])
        x, y = augment(x, y, cfg["augment"], copies=settings.copies, seed=settings.weights_seed)
        # uint8 until a batch is drawn: a quarter of the memory, and the pipeline casts per batch
        _prepared[key] = (np.clip(np.rint(x), 0, 255).astype(np.uint8)[..., None], y.astype(np.float32))
        while len(_prepared) > 2:  # each set can be hundreds of MB
            _prepared.popitem(last=False)
    return _prepared[key]


def check_limits(model, settings: TrialSettings) -> tuple[int, float]:
    """A built model over --max-params or --max-mmacs is refused before any training: (params, MMACs) if not."""
    params = int(model.count_params())
    if settings.max_params and params > settings.max_params:
        raise Rejected(f"{params:,} parameters is over the budget of {settings.max_params:,}")
    compute = metrics.mmacs(model)
    if settings.max_mmacs and compute > settings.max_mmacs:
        raise Rejected(f"{compute:.1f}M multiply-accumulates per image is over the budget of {settings.max_mmacs:g}M")
    return params, compute


def refuse_unfit(config: dict, settings: TrialSettings) -> None:
    """Raise Rejected for a config whose model is impossible or over the budget: an engine calls it before it
    announces a trial, so a refused config is never said to start. Built without pretrained weights, which
    change neither its size nor its compute, so a transfer model's weights are not loaded twice."""
    cfg = resolve(config)
    check_limits(build({**cfg, "weights": None} if "weights" in cfg else cfg), own_settings(settings, cfg))


def own_settings(settings: TrialSettings, cfg: dict) -> TrialSettings:
    """A config may ask for its own weights (`repeat` k: the k-th rerun of one config, on the same split) and
    a lower epoch cap (`max_epochs`): a grid repeats its cheap cells over seeds and caps its costly rows."""
    repeat, cap = int(cfg.get("repeat", 0)), cfg.get("max_epochs")
    if repeat:
        settings = dataclasses.replace(settings, train_seed=settings.weights_seed + 1000 * repeat)
    if cap is not None:
        settings = dataclasses.replace(settings, epochs=max(1, min(settings.epochs, int(cap))))
    return settings


def run_trial(config: dict, data, settings: TrialSettings | None = None,
              on_epoch: Callable[[int, dict], None] | None = None, out_dir=None, teacher=None,
              distil_alpha: float = 0.5, seconds_left: Callable[[], float] | None = None,
              on_replan: Callable[[int], None] | None = None) -> TrialResult:
    """Train `config` on `data` and measure it. `on_epoch(epoch, logs)` may raise `Pruned`.
    `teacher`: a Keras model whose predictions on each augmented batch are soft targets (distillation).
    `seconds_left`: the time the trial may still train; when its epochs will not fit, the schedule is shortened
    to end in it (`train/fit_to_time.py`), and `on_replan(epochs)` hears the new epoch count."""
    cfg = resolve(config)
    settings = own_settings(settings or TrialSettings(), cfg)
    if not data.labelled:
        raise UserError(f"{data.path}: has no keypoint labels to train on")
    train_idx, val_idx, test_idx = split3(data, settings.val_fraction, settings.test_fraction, settings.split,
                                          settings.seed)
    if settings.refit:
        train_idx = np.sort(np.concatenate([train_idx, val_idx]))
    keras.utils.set_random_seed(settings.weights_seed)
    model = build(cfg)
    params, compute = check_limits(model, settings)
    x_train, y_train = training_set(data, train_idx, cfg, settings)
    x_val = data.images[val_idx].astype(np.float32)[..., None]
    y_val = data.keypoints[val_idx]
    if cfg.get("output_bias") == "mean":
        set_output_bias(model, np.nanmean(y_train, axis=0))

    from train.losses import DistilLoss, MaskedRMSE, masked_mse
    from train.online_augment import dataset
    batch = int(cfg["batch_size"])
    steps = -(-len(x_train) // batch)
    loss = masked_mse if teacher is None else DistilLoss(distil_alpha)
    total_steps = steps * settings.epochs
    lr = learning_rate(cfg, total_steps)
    if seconds_left is not None and not isinstance(lr, float):  # a constant rate has nothing to shorten
        lr = Replannable(lr, total_steps)
    model.compile(optimizer=optimizer(cfg, lr), loss=loss, metrics=[MaskedRMSE()],
                  jit_compile=bool(cfg.get("jit_compile", False)))
    train_ds = dataset(x_train, y_train, batch, float(cfg.get("aug_strength", 0.0)), bool(cfg.get("aug_flip", False)),
                       settings.weights_seed, teacher=teacher)
    hook = _EpochHook(on_epoch)
    callbacks = [hook, keras.callbacks.TerminateOnNaN()]
    if seconds_left is not None:
        callbacks.append(FitToTime(seconds_left, lr if isinstance(lr, Replannable) else None, settings.epochs,
                                   on_replan))
    watch = {}
    if not settings.refit:
        # one-cycle's rising learning rate makes validation worse by design: judging a run before its warm-up
        # ends stopped EDGE_FAST at epoch 16 of 75 (2.29 px) in the quick start
        warm = int(ONECYCLE_WARMUP * settings.epochs) if cfg.get("schedule") == "onecycle" else 0
        callbacks.append(keras.callbacks.EarlyStopping("val_rmse", mode="min", patience=settings.patience,
                                                       restore_best_weights=True, start_from_epoch=warm))
        watch = dict(validation_data=(x_val, y_val), validation_batch_size=256)
    t0 = time.perf_counter()
    model.fit(train_ds, epochs=settings.epochs, callbacks=callbacks, verbose=settings.verbose, shuffle=False,
              **watch)  # the pipeline reshuffles itself
    train_s = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hook.history.items()}
    history["epoch_s"] = [float(v) for v in hook.epoch_s]  # learning-curve tables (bench.curves) replay seconds too
    if not history.get("loss") or any(not math.isfinite(v) for v in history["loss"]):
        raise TrialFailed(f"loss became NaN or infinite at epoch {len(history.get('loss', []))}")

    t_measure = time.perf_counter()
    val_pred = metrics.predict(model, x_val)
    if not settings.score_test:
        test_idx = test_idx[:0]
    x_test, y_test = data.images[test_idx], data.keypoints[test_idx]
    test_pred = metrics.predict(model, x_test) if len(test_idx) else np.empty((0, y_val.shape[1]), np.float32)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="fkp-trial-"))
    model_path = out / "model.keras"
    y_fit = data.keypoints[train_idx]
    result = {
        # after a refit the validation faces were trained on: no honest validation score is left
        "rmse": float("nan") if settings.refit else metrics.rmse(y_val, val_pred),
        "test_rmse": metrics.rmse(y_test, test_pred) if len(test_idx) else float("nan"),
        "mean_face_rmse": metrics.mean_face_rmse(y_fit, y_val),
        "mean_face_test_rmse": metrics.mean_face_rmse(y_fit, y_test),
        "params": params,
        "mmacs": compute,
        "size_mb": metrics.save_model(model, model_path),
        **metrics.inference_time(model),
        "train_s": train_s,
        "epochs": len(history["loss"]),
        # steady-state speed: the first epoch also pays for tracing the graph
        "train_images_per_s": len(x_train) / min(hook.epoch_s[1:] or hook.epoch_s),
        "train_images": int(len(x_train)),
        "val_images": int(len(x_val)),
        "test_images": int(len(x_test)),
        "test_rmse_per_keypoint": metrics.rmse_per_keypoint(y_test, test_pred),
    }
    result["measure_s"] = time.perf_counter() - t_measure
    return TrialResult(cfg, result, history, model, model_path, x_val[..., 0], y_val, val_pred,
                       x_test, y_test, test_pred)


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
            try:
                # the epoch's own seconds, without what the hook does (tracking, storage): a speed limit reads it
                self.on_epoch(epoch, {**logs, "epoch_s": self.epoch_s[-1]})
            except StopTraining:
                self.model.stop_training = True
