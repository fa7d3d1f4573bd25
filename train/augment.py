"""Offline augmentation of the training split: geometric ops move keypoints exactly with pixels.

Coordinates: keypoint (x, y) is (column, row) on the pixel grid of train/keypoints.py. A horizontal
flip mirrors the image about FLIP_X but each label about its keypoint's own axis, FLIP_AXES: the
labels are not mirror-symmetric (train/keypoints.py). A keypoint that a transform pushes outside the
image becomes missing (NaN): the masked loss then ignores it instead of teaching the model an
impossible position.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from train.errors import UserError
from train.keypoints import FLIP_AXES, FLIP_PERMUTATION, FLIP_X, SIZE

OPS = ("flip", "rotate", "shift", "brightness", "noise")
DEFAULT_RANGES = {"rotate": 15.0, "shift": 8.0, "brightness": 0.3, "noise": 8.0}
CENTRE = (SIZE - 1) / 2.0  # in pixel indices
PIXEL_CENTRE = (FLIP_X - (SIZE - 1)) / 2


def parse_ops(spec) -> list[str]:
    if spec in (None, "", "none", False):
        return []
    ops = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise UserError(f"unknown augmentation {unknown[0]!r} (choose from {', '.join(OPS)})")
    return ops


def label_mirror() -> tuple[np.ndarray, np.ndarray]:
    """Per column, (sign, offset): a mirrored face's labels are keypoints[:, FLIP_PERMUTATION] * sign + offset,
    that is x -> FLIP_AXES[k] - x and y kept. The one definition that flip, online flip and flip TTA share."""
    sign = np.tile(np.float32([-1.0, 1.0]), len(FLIP_AXES))
    offset = np.zeros(2 * len(FLIP_AXES), np.float32)
    offset[0::2] = FLIP_AXES
    return sign, offset


def flip(images, keypoints):
    sign, offset = label_mirror()
    return images[:, :, ::-1].copy(), keypoints[:, FLIP_PERMUTATION] * sign + offset


def flip_label_shift() -> np.ndarray:
    """Per column, how far a flipped label lies from the pixel grid's mirror of it (x only): a swapped keypoint
    moved by minus this, then mirrored about FLIP_X, lands where `flip` puts it."""
    shift = label_mirror()[1]
    shift[0::2] -= FLIP_X
    return shift


def affine(image, keypoints, matrix, offset):
    """Warp one image by x' = M x + t (x = (col, row)) and move its keypoints the same way."""
    inv = np.linalg.inv(matrix)
    # ndimage works in (row, col) and maps output -> input coordinates.
    swap = np.array([[0, 1], [1, 0]])
    m_rc = swap @ inv @ swap
    t_rc = swap @ (-inv @ offset)
    warped = ndimage.affine_transform(image, m_rc, offset=t_rc, order=1, mode="nearest")
    # keypoints put pixel i's centre at i + PIXEL_CENTRE; the warp above works in pixel indices
    pts = (keypoints.reshape(-1, 2) - PIXEL_CENTRE) @ matrix.T + offset + PIXEL_CENTRE
    return warped, _drop_outside(pts.reshape(-1))


def _drop_outside(kp):
    pts = kp.reshape(-1, 2).copy()
    outside = ((pts < 0) | (pts > SIZE - 1)).any(axis=1)
    pts[outside] = np.nan
    return pts.reshape(-1)


def rotation(angle_deg):
    a = np.deg2rad(angle_deg)
    m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = np.array([CENTRE, CENTRE])
    return m, c - m @ c


def augment(images, keypoints, ops, copies: int = 1, ranges=None, seed: int = 0):
    """Return originals plus, for each op, `copies` transformed copies (flip: one copy)."""
    ops = parse_ops(ops)
    if copies < 1:
        raise UserError("augmentation copies must be at least 1")
    r = {**DEFAULT_RANGES, **(ranges or {})}
    rng = np.random.default_rng(seed)
    out_img, out_kp = [images], [keypoints]
    for op in ops:
        for _ in range(1 if op == "flip" else copies):
            if op == "flip":
                im, kp = flip(images, keypoints)
            elif op in ("rotate", "shift"):
                im = np.empty_like(images)
                kp = np.empty_like(keypoints)
                for i in range(len(images)):
                    if op == "rotate":
                        m, t = rotation(rng.uniform(-r["rotate"], r["rotate"]))
                    else:
                        m, t = np.eye(2), rng.uniform(-r["shift"], r["shift"], size=2)
                    im[i], kp[i] = affine(images[i], keypoints[i], m, t)
            elif op == "brightness":
                factor = rng.uniform(1 - r["brightness"], 1 + r["brightness"], size=(len(images), 1, 1))
                im, kp = np.clip(images * factor, 0, 255).astype(images.dtype), keypoints.copy()
            else:  # noise
                im = np.clip(images + rng.normal(0, r["noise"], images.shape), 0, 255).astype(images.dtype)
                kp = keypoints.copy()
            out_img.append(im)
            out_kp.append(kp)
    return np.concatenate(out_img), np.concatenate(out_kp)
