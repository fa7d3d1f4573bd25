"""Keypoint models built from one plain, JSON-serialisable config dict.

Every model takes raw 96x96x1 grey levels (0-255) and returns 30 coordinates in pixels, so a
saved model is usable without any outside pre- or post-processing.
"""
from __future__ import annotations

import os

import keras
from keras import layers

from train.errors import Rejected, UserError
from train.keypoints import COLUMNS, FLIP_X, SIZE

TRAINING_DEFAULTS = {
    "learning_rate": 1e-3, "batch_size": 64, "optimizer": "adam",
    "imputation": "masked", "augment": "flip",
    # the recipe of issue 11, off unless a config or space turns it on (the paper's presets predate it)
    "schedule": "constant", "weight_decay": 0.0, "output_bias": "zero", "aug_strength": 0.0, "aug_flip": False,
}
CNN_DEFAULTS = {
    "stem_stride": 2, "blocks": 3, "kernel_size": 3, "convs_per_block": 1, "batch_norm": True, "dropout": 0.1,
    "pooling": "max", "head": "gap", "dense_units": 128, "activation": "relu", "conv": "plain",
}
HEADS = ("gap", "flatten", "strided", "heatmap")
STRIDED_TARGET = 3  # `strided` head: stride-2 convolutions until the map is about this wide
APP_DEFAULTS = {"alpha": 1.0, "input_size": 96, "weights": None, "fine_tune": "all", "dropout": 0.2}

# The paper's two hand-made CNNs, rebuilt to its published parameter counts
# (baseline 1,890,366; manually optimised 235,834).
PRESETS = {
    "baseline": {
        "arch": "cnn", "stem_stride": 1, "blocks": 3, "filters_1": 32, "filters_2": 64, "filters_3": 128,
        "kernel_size": 3, "convs_per_block": 1, "batch_norm": False, "dropout": 0.0,
        "pooling": "max", "head": "flatten", "dense_units": 97, "activation": "relu",
    },
    "manual": {
        "arch": "cnn", "blocks": 4, "filters_1": 32, "filters_2": 48, "filters_3": 96, "filters_4": 192,
        "kernel_size": 3, "convs_per_block": 1, "batch_norm": True, "dropout": 0.1,
        "pooling": "max", "head": "gap", "dense_units": 64, "activation": "relu",
    },
}
APPLICATIONS = {"mobilenetv2", "nasnetmobile"}
MODELS = ("cnn", *PRESETS, *sorted(APPLICATIONS))


def resolve(config: dict) -> dict:
    """Fill a partial config with its preset and defaults; the result fully describes the trial."""
    config = dict(config)
    model = config.setdefault("model", "cnn")
    if model in PRESETS:
        base = {**CNN_DEFAULTS, **PRESETS[model]}
    elif model == "cnn":
        base = {**CNN_DEFAULTS, "arch": "cnn"}
    elif model in APPLICATIONS:
        base = {**APP_DEFAULTS, "arch": model}
    else:
        raise UserError(f"unknown model {model!r} (choose from {', '.join(MODELS)})")
    full = {**TRAINING_DEFAULTS, **base, **config}
    if full["arch"] == "cnn":
        for k in range(1, int(full["blocks"]) + 1):
            full.setdefault(f"filters_{k}", min(32 * 2 ** (k - 1), 256))
        for k in range(int(full["blocks"]) + 1, 16):
            full.pop(f"filters_{k}", None)  # filters of blocks that do not exist are not hyperparameters
    return full


def build(config: dict) -> keras.Model:
    cfg = resolve(config)
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    if cfg["arch"] == "cnn":
        features = _cnn(cfg, inputs)
    else:
        features = _application(cfg, inputs)
    if cfg["arch"] == "cnn" and cfg["head"] == "heatmap":
        return keras.Model(inputs, features, name=str(cfg["model"]))  # already pixels
    if cfg.get("dropout"):
        features = layers.Dropout(float(cfg["dropout"]))(features)
    raw = layers.Dense(len(COLUMNS), name="keypoints_unit")(features)
    # Learn in units of half an image around its centre, report in pixels.
    outputs = layers.Rescaling(SIZE / 2, offset=SIZE / 2, name="keypoints_px")(raw)
    return keras.Model(inputs, outputs, name=str(cfg["model"]))


def _conv(cfg, x, filters, stride=1, first=False):
    """Conv (or depthwise-separable conv, MobileNet's saving) + BatchNorm + activation."""
    separable = cfg["conv"] == "separable" and not first  # a 1-channel input gains nothing from it
    if cfg["conv"] not in ("plain", "separable"):
        raise UserError(f"unknown conv {cfg['conv']!r} (choose plain or separable)")
    make = layers.SeparableConv2D if separable else layers.Conv2D
    x = make(int(filters), int(cfg["kernel_size"]), strides=stride, padding="same", use_bias=not cfg["batch_norm"])(x)
    if cfg["batch_norm"]:
        # Short searches never let the default 0.99 momentum settle its statistics.
        x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.Activation(cfg["activation"])(x)


def _cnn(cfg, inputs):
    act = cfg["activation"]
    x = layers.Rescaling(1 / 255.0)(inputs)
    blocks = int(cfg["blocks"])
    for k in range(1, blocks + 1):
        for c in range(int(cfg["convs_per_block"])):
            # A strided stem quarters the cost of every later layer at no parameter cost:
            # on a CPU that is the difference between minutes and an hour per search.
            stride = int(cfg["stem_stride"]) if (k, c) == (1, 0) else 1
            x = _conv(cfg, x, cfg[f"filters_{k}"], stride, first=(k, c) == (1, 0))
        pool = layers.MaxPooling2D if cfg["pooling"] == "max" else layers.AveragePooling2D
        x = pool(2)(x)
    head = cfg["head"]
    if head == "heatmap":
        return _soft_argmax(x)
    if head == "strided":
        # Where features are is the answer in keypoint regression: keep a small map, not an average.
        while x.shape[1] > STRIDED_TARGET:
            x = _conv(cfg, x, cfg[f"filters_{blocks}"], stride=2)
        head = "flatten"
    if head == "gap":
        x = layers.GlobalAveragePooling2D()(x)
    elif head == "flatten":
        x = layers.Flatten()(x)
    else:
        raise UserError(f"unknown head {cfg['head']!r} (choose from {', '.join(HEADS)})")
    if int(cfg["dense_units"]):
        x = layers.Dense(int(cfg["dense_units"]), activation=act)(x)
    return x


def _soft_argmax(x):
    """One heatmap per keypoint; its softmax-weighted mean position is the keypoint, in pixels."""
    n, size = len(COLUMNS) // 2, int(x.shape[1])
    if size < 6:
        raise Rejected(f"a heatmap head needs a map of at least 6x6, this one is {size}x{size} (fewer blocks)")
    maps = layers.Conv2D(n, 1, name="heatmaps")(x)
    return SoftArgmax(size, name="keypoints_px")(maps)


@keras.saving.register_keras_serializable(package="fkp")
class SoftArgmax(layers.Layer):
    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def call(self, maps):
        from keras import ops
        b = ops.shape(maps)[0]
        k = maps.shape[-1]
        flat = ops.reshape(ops.transpose(maps, (0, 3, 1, 2)), (b, k, self.size * self.size))
        weights = ops.softmax(flat, axis=-1)
        # cell centres in keypoint coordinates (pixel i's centre at i + PIXEL_CENTRE)
        centres = (ops.arange(self.size, dtype="float32") + 0.5) * (SIZE / self.size) - 0.5 + (FLIP_X - SIZE + 1) / 2
        gx = ops.tile(centres, (self.size,))          # column of each flattened cell
        gy = ops.repeat(centres, self.size)           # row of each flattened cell
        xs = ops.sum(weights * gx, axis=-1)
        ys = ops.sum(weights * gy, axis=-1)
        return ops.reshape(ops.stack([xs, ys], axis=-1), (b, 2 * k))  # x, y per keypoint, as COLUMNS

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def set_output_bias(model, mean_face) -> bool:
    """Start the output at the mean training face, so training learns offsets from it, not the face itself."""
    import numpy as np
    try:
        dense = model.get_layer("keypoints_unit")
    except ValueError:
        return False  # heads that output pixels directly (heatmaps) have no output bias
    kernel, bias = dense.get_weights()
    mean = np.nan_to_num(np.asarray(mean_face, np.float32), nan=SIZE / 2)
    # A freshly initialised kernel alone moves the output by tens of pixels: shrink it, or the
    # mean-face start is lost under that noise.
    dense.set_weights([kernel * 0.01, (mean - SIZE / 2) / (SIZE / 2)])
    return True


def _application(cfg, inputs):
    size = int(cfg["input_size"])
    if size < 32:
        raise UserError(f"{cfg['arch']}: input_size must be at least 32, got {size}")
    weights = cfg["weights"]
    if weights not in (None, "imagenet") and not os.path.exists(str(weights)):
        raise UserError(f"weights file not found: {weights}")
    # Grey -> 3 channels in [-1, 1], the range both backbones were trained on.
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    if size != SIZE:
        x = layers.Resizing(size, size)(x)
    x = layers.Concatenate()([x, x, x])
    load = None if weights in (None, "imagenet") else weights
    kwargs = dict(input_shape=(size, size, 3), include_top=False, pooling="avg",
                  weights="imagenet" if weights == "imagenet" else None)
    if cfg["arch"] == "mobilenetv2":
        base = keras.applications.MobileNetV2(alpha=float(cfg["alpha"]), **kwargs)
    else:
        base = keras.applications.NASNetMobile(**kwargs)
    if load:
        base.load_weights(load, skip_mismatch=True)
    _set_trainable(base, cfg["fine_tune"])
    return base(x, training=False if cfg["fine_tune"] == "frozen" else None)


def _set_trainable(base, fine_tune):
    if fine_tune == "frozen":
        base.trainable = False
    elif fine_tune == "all":
        base.trainable = True
    else:
        n = int(fine_tune)
        base.trainable = True
        for layer in base.layers[:-n] if n > 0 else base.layers:
            layer.trainable = False
