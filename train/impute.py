"""Missing-label strategies. Each is fitted on the training split only.

none   - drop incomplete rows (the paper's "no imputation")
ffill  - forward fill down the file, as the paper (leading gaps back-filled)
knn    - scikit-learn KNNImputer on the 30 keypoint columns
masked - keep every row; the loss ignores missing cells
"""
import numpy as np
import pandas as pd

from train.errors import UserError

STRATEGIES = ("none", "ffill", "knn", "masked")


def impute(strategy: str, images: np.ndarray, keypoints: np.ndarray):
    """Return (images, keypoints) for training under `strategy`."""
    if strategy == "masked":
        return images, keypoints
    if strategy == "none":
        keep = np.isfinite(keypoints).all(axis=1)
        if not keep.any():
            raise UserError("imputation 'none' keeps only fully labelled rows, and the training split has none")
        return images[keep], keypoints[keep]
    if strategy == "ffill":
        filled = pd.DataFrame(keypoints).ffill().bfill().to_numpy(dtype=np.float32)
        return images, filled
    if strategy == "knn":
        from sklearn.impute import KNNImputer
        # keep_empty_features: a column with no label at all stays NaN (ignored by the loss)
        # rather than silently changing the output width.
        filled = KNNImputer(n_neighbors=5, keep_empty_features=True).fit_transform(keypoints)
        filled[:, ~np.isfinite(keypoints).any(axis=0)] = np.nan
        return images, filled.astype(np.float32)
    raise UserError(f"unknown imputation {strategy!r} (choose from {', '.join(STRATEGIES)})")
