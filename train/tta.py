"""Test-time augmentation: a model's prediction averaged with its prediction on the mirrored face, mapped back.

It doubles the compute per face, so no edge budget gets it for free: the final stage measures it beside the
shipped model and never ships it.
"""
from __future__ import annotations

import numpy as np

from train.augment import label_mirror
from train.keypoints import FLIP_PERMUTATION


def flip_average(model):
    """One Keras model: mean of model(x) and the mirrored model(flip(x)), mapped back as train.augment.flip maps
    labels (columns swapped left/right, x -> FLIP_AXES[k] - x)."""
    import keras
    from keras import ops
    inp = keras.Input(model.input_shape[1:], name="image")
    plain = model(inp, training=False)
    mirrored = model(ops.flip(inp, axis=2), training=False)
    sign, offset = label_mirror()
    back = ops.take(mirrored, np.asarray(FLIP_PERMUTATION), axis=-1) * sign + offset
    return keras.Model(inp, (plain + back) / 2.0, name="flip_tta")
