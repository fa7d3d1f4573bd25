"""Train / validation / test splits that keep near-identical faces on one side.

Kaggle-style files carry no person id, and frames of one video are near-duplicates: a random
split scores a model on faces it has effectively seen. The default `group` split clusters faces
by appearance (PCA of a downscaled face, then k-means) and assigns whole clusters to one side.
This is an approximation of a person-disjoint split, not a guarantee: two clusters can still hold
the same person under different lighting or pose.

Validation drives early stopping, pruning and every engine's selection. Test is never shown to
an engine: it is scored once per finished trial, so its figure is an honest estimate of how the
selected model does on people it has not seen. The split is a pure function of the file's content
hash, the seed and the two fractions.
"""
from __future__ import annotations

import numpy as np

from train.errors import UserError

_groups_cache: dict[tuple, np.ndarray] = {}


def appearance_groups(images: np.ndarray, seed: int = 0, faces_per_group: int = 8) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n = len(images)
    small = images.reshape(n, 48, 2, 48, 2).mean(axis=(2, 4)).reshape(n, -1).astype(np.float32)
    small -= small.mean(axis=1, keepdims=True)
    small /= small.std(axis=1, keepdims=True) + 1e-6
    features = PCA(n_components=min(32, n - 1), random_state=seed).fit_transform(small)
    k = max(2, n // faces_per_group)
    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(features)


def _check(n, val_fraction, test_fraction, path):
    if not 0 < val_fraction < 1:
        raise UserError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise UserError(f"test fraction must be in [0, 1) and leave room for training, got {test_fraction}")
    if n < 6:
        raise UserError(f"{path}: {n} rows is too few to split into training, validation and test")


def split3(data, val_fraction: float = 0.15, test_fraction: float = 0.15, method: str = "group", seed: int = 0):
    """Return (train_index, val_index, test_index), sorted and disjoint."""
    n = len(data)
    _check(n, val_fraction, test_fraction, data.path)
    rng = np.random.default_rng(seed)
    if method == "random" or n < 20:
        groups = np.arange(n)
    elif method == "group":
        key = (data.sha or id(data), n, seed)
        if key not in _groups_cache:
            _groups_cache[key] = appearance_groups(data.images, seed)
        groups = _groups_cache[key]
    else:
        raise UserError(f"unknown split method {method!r} (choose group or random)")
    order = rng.permutation(groups.max() + 1)
    sizes = np.bincount(groups, minlength=len(order))
    side = np.zeros(len(order), np.int8)  # 0 train, 1 val, 2 test, by cluster
    total, at = 0, 0
    # Whole clusters until each held-out side reaches its share: test first, then validation.
    for label, fraction in ((2, test_fraction), (1, val_fraction)):
        target, total = max(1, round(n * fraction)) if fraction else 0, 0
        while at < len(order) and total < target:
            side[order[at]] = label
            total += sizes[order[at]]
            at += 1
    where = side[groups]
    return np.flatnonzero(where == 0), np.flatnonzero(where == 1), np.flatnonzero(where == 2)


def split(data, val_fraction: float = 0.15, method: str = "group", seed: int = 0):
    """(train_index, val_index) with no test side: for tools that only need two parts."""
    train, val, _ = split3(data, val_fraction, 0.0, method, seed)
    return train, val
