"""Train/validation splits that keep near-identical faces on one side.

Kaggle-style files carry no person id, and frames of one video are near-duplicates: a random
split scores a model on faces it has effectively seen. The default `group` split clusters faces
by appearance and assigns whole clusters to one side (approximately person-disjoint).
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


def split(data, val_fraction: float = 0.15, method: str = "group", seed: int = 0):
    """Return (train_index, val_index), deterministic for a given file content and seed."""
    n = len(data)
    if not 0 < val_fraction < 1:
        raise UserError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    if n < 4:
        raise UserError(f"{data.path}: {n} rows is too few to split into training and validation")
    rng = np.random.default_rng(seed)
    if method == "random" or n < 20:
        order = rng.permutation(n)
        n_val = max(1, int(round(n * val_fraction)))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    if method != "group":
        raise UserError(f"unknown split method {method!r} (choose group or random)")
    key = (data.sha or id(data), n, seed)
    if key not in _groups_cache:
        _groups_cache[key] = appearance_groups(data.images, seed)
    groups = _groups_cache[key]
    order = rng.permutation(groups.max() + 1)
    sizes = np.bincount(groups, minlength=len(order))
    target = n * val_fraction
    chosen, total = [], 0
    for g in order:  # whole clusters until the validation side reaches its share
        if total >= target:
            break
        chosen.append(g)
        total += sizes[g]
    val = np.isin(groups, chosen)
    return np.flatnonzero(~val), np.flatnonzero(val)
