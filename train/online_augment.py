"""Online augmentation: every epoch draws new transforms for every face, keypoint-true.

One affine warp per image does flip, rotation, scale and shift together, and moves the keypoints
with exactly the same matrix; left/right keypoints swap names under a flip. A keypoint pushed out
of the image becomes missing (NaN), so the masked loss ignores it. Brightness and contrast change
grey levels only. `strength` in [0, 1] scales every range at once: one hyperparameter for the
engines instead of five.
"""
from __future__ import annotations

import numpy as np

from train.augment import CENTRE, PIXEL_CENTRE, flip_label_shift  # one definition of the pixel grid
from train.keypoints import FLIP_PERMUTATION, SIZE

MAX_RANGES = {"rotate_deg": 20.0, "shift_px": 10.0, "scale": 0.12, "brightness": 0.25, "contrast": 0.35}


def augment_batch(images, keypoints, strength: float, flip: bool, seed):
    """images (b, 96, 96, 1) float32 0-255, keypoints (b, 30) px with NaN -> the same, transformed.

    `seed` (2 ints) fixes every draw. Stateless draws keep a run reproducible: stateful ones inside a
    parallel map hand their numbers to whichever batch a thread reaches first, and a distilled student's
    retrain moved by 0.014 px."""
    import tensorflow as tf
    b = tf.shape(images)[0]
    r = {k: v * float(strength) for k, v in MAX_RANGES.items()}
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)))

    def uniform(low, high):
        return tf.random.stateless_uniform((b,), next(seeds), low, high)

    angle = uniform(-r["rotate_deg"], r["rotate_deg"]) * (np.pi / 180)
    scale = 1.0 + uniform(-r["scale"], r["scale"])
    tx, ty = uniform(-r["shift_px"], r["shift_px"]), uniform(-r["shift_px"], r["shift_px"])
    mirrored = uniform(0.0, 1.0) < 0.5 if flip else tf.zeros((b,), tf.bool)
    f = tf.where(mirrored, -1.0, 1.0)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    # Forward map in pixel indices, about the image centre: p' = c + A (p - c) + t, A = s R F.
    a00, a01, a10, a11 = cos * f, -sin, sin * f, cos
    c = CENTRE
    b0 = c + tx - (a00 * c + a01 * c)
    b1 = c + ty - (a10 * c + a11 * c)
    # The warp asks, for each output pixel, where to read from: the inverse map.
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    j0 = -(i00 * b0 + i01 * b1)
    j1 = -(i10 * b0 + i11 * b1)
    zeros = tf.zeros_like(i00)
    transforms = tf.stack([i00, i01, j0, i10, i11, j1, zeros, zeros], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.constant([SIZE, SIZE]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")

    # A mirrored face's labels are swapped left/right and pre-shifted so that the geometric mirror below
    # lands each on its keypoint's own flip axis, as train.augment.flip does.
    swapped = tf.gather(keypoints, FLIP_PERMUTATION, axis=1) - flip_label_shift()
    kp = tf.where(mirrored[:, None], swapped, keypoints)
    x = kp[:, 0::2] - PIXEL_CENTRE
    y = kp[:, 1::2] - PIXEL_CENTRE
    nx = a00[:, None] * x + a01[:, None] * y + b0[:, None] + PIXEL_CENTRE
    ny = a10[:, None] * x + a11[:, None] * y + b1[:, None] + PIXEL_CENTRE
    outside = (nx < 0) | (nx > SIZE - 1) | (ny < 0) | (ny > SIZE - 1)
    nan = tf.fill(tf.shape(nx), float("nan"))
    nx, ny = tf.where(outside, nan, nx), tf.where(outside, nan, ny)
    moved = tf.reshape(tf.stack([nx, ny], axis=2), (b, 30))

    mean = tf.reduce_mean(warped, axis=(1, 2, 3), keepdims=True)
    contrast = 1.0 + uniform(-r["contrast"], r["contrast"])[:, None, None, None]
    bright = uniform(-r["brightness"], r["brightness"])[:, None, None, None] * 255.0
    toned = tf.clip_by_value((warped - mean) * contrast + mean + bright, 0.0, 255.0)
    return toned, moved


def dataset(x, y, batch_size: int, strength: float, flip: bool, seed: int, teacher=None):
    """A shuffled, batched tf.data pipeline that redraws the augmentation every epoch. With a `teacher`, each
    batch's targets are its labels (NaN where missing) followed by the teacher's predictions on the very
    images the student sees, augmentations included."""
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if strength > 0 or flip:
        # one seed pair per batch from a sequential stream that is redrawn every epoch, so the parallel map
        # below may finish batches in any order and still give each batch the same draws
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda ab, s: augment_batch(tf.cast(ab[0], tf.float32), ab[1], strength, flip, s),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), b))
    if teacher is not None:
        ds = ds.map(lambda a, b: (a, tf.concat([b, tf.cast(teacher(a, training=False), b.dtype)], -1)))
    return ds.prefetch(tf.data.AUTOTUNE)
