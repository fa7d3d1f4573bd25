"""Tiny Kaggle-format files for tests: synthetic faces whose keypoints are bright dots."""
import gzip
from pathlib import Path

import numpy as np

from train.keypoints import COLUMNS, SIZE


def faces(n: int = 24, seed: int = 0, missing: float = 0.5):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, SIZE, SIZE)).astype(np.uint8)
    kp = np.empty((n, len(COLUMNS)), np.float32)
    for i in range(n):
        cx, cy = rng.uniform(40, 56, size=2)
        base = np.array([[cx + dx, cy + dy] for dx, dy in
                         [(15, -10), (-15, -10), (8, -10), (22, -10), (-8, -10), (-22, -10), (7, -20), (24, -20),
                          (-7, -20), (-24, -20), (0, 5), (12, 22), (-12, 22), (0, 18), (0, 26)]])
        kp[i] = base.ravel()
        for x, y in base.round().astype(int):
            images[i, y, x] = 255
    partial = rng.random(n) < missing
    # Kaggle's pattern: partial rows keep only eye centres, nose tip and bottom lip.
    keep = [c for c in COLUMNS if c.startswith(("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom"))]
    drop = [j for j, c in enumerate(COLUMNS) if c not in keep]
    kp[np.ix_(partial, drop)] = np.nan
    return images, kp


def write_training_csv(path, n: int = 24, seed: int = 0, missing: float = 0.5, images=None, kp=None,
                       newline: str = "\n") -> Path:
    if images is None:
        images, kp = faces(n, seed, missing)
    lines = [",".join(COLUMNS + ["Image"])]
    for img, row in zip(images, kp):
        cells = ["" if np.isnan(v) else f"{v:.4f}" for v in row]
        lines.append(",".join(cells + [" ".join(map(str, img.ravel().tolist()))]))
    text = newline.join(lines) + newline
    path = Path(path)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, newline="")
    return path


def train_tiny_instead(monkeypatch, runner_mod, tiny: dict, wrap=None):
    """Train `tiny` in place of every sampled config (cheap), and check that same config before the trial
    starts (search/runner.py refuses configs it cannot build): the sampled config is never trained."""
    real, check = runner_mod.run_trial, runner_mod.refuse_unfit
    monkeypatch.setattr(runner_mod, "refuse_unfit", lambda config, *a, **k: check({**config, **tiny}, *a, **k))
    train = lambda config, *a, **k: real({**config, **tiny}, *a, **k)  # noqa: E731
    monkeypatch.setattr(runner_mod, "run_trial", wrap(train) if wrap else train)


def build_study(root: Path, *search_args: str):
    """A real random-search study 's' of 40 faces in stores under `root`, for a module's tests to copy: module
    fixtures run outside conftest's `isolated`, so the stores are pointed here for the build only."""
    import pytest

    from search import run as search_run
    patch = pytest.MonkeyPatch()
    patch.setenv("FKP_STORE_DIR", str(root / "mlruns"))
    patch.setenv("FKP_CACHE_DIR", str(root / "cache"))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    patch.chdir(root)
    try:
        data = write_training_csv(root / "d.csv", n=40)
        search_run.main(["--space", "cnn", "--data", str(data), "--split", "random", "--no-presets", "--study-name",
                         "s", "--max-params", "60000", "--sampler", "random", "--pruner", "none", *search_args])
    finally:
        patch.undo()
    return root, data
