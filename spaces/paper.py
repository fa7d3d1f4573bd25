"""The paper's study as a grid of manual configurations: model x missing labels x augmentation.

Columns follow the paper (no imputation, forward fill, KNN, offline augmentation of the
complete rows) plus ours (masked loss; with flip; with the paper's augmentation). The
Keras-Tuner-tuned CNN is the best trial of a short Keras Tuner search of the `cnn` space on the
same data.
"""
from spaces.base import Space

MODELS = {
    "baseline": {"model": "baseline"},
    "manual": {"model": "manual"},
    "mobilenetv2-frozen": {"model": "mobilenetv2", "fine_tune": "frozen"},
    "mobilenetv2-all": {"model": "mobilenetv2", "fine_tune": "all"},
    "nasnetmobile-frozen": {"model": "nasnetmobile", "fine_tune": "frozen"},
    "nasnetmobile-all": {"model": "nasnetmobile", "fine_tune": "all"},
}
COLUMNS = {
    "none": {"imputation": "none", "augment": "none"},
    "ffill": {"imputation": "ffill", "augment": "none"},
    "knn": {"imputation": "knn", "augment": "none"},
    "augment": {"imputation": "none", "augment": "rotate,brightness,shift,noise"},
    "masked": {"imputation": "masked", "augment": "none"},
    "masked+flip": {"imputation": "masked", "augment": "flip"},
    # the paper's augmentation on every row: differs from `augment` only in keeping incomplete rows
    "masked+augment": {"imputation": "masked", "augment": "rotate,brightness,shift,noise"},
}
PAPER_COLUMNS = ("none", "ffill", "knn", "augment")
MASKED_COLUMNS = tuple(c for c in COLUMNS if c not in PAPER_COLUMNS)
TUNED = "kt-tuned"  # the row whose config comes from a Keras Tuner search, not from this file
ROWS = ("baseline", "manual", TUNED, *(m for m in MODELS if m not in ("baseline", "manual")))


def cells(tuned_cnn: dict | None = None, rows=None) -> list[dict]:
    """Every (row, column) cell, rows in the paper's order; the tuned row only when its config is given."""
    models = {name: tuned_cnn if name == TUNED else MODELS[name] for name in ROWS
              if (rows is None or name in rows) and (name != TUNED or tuned_cnn is not None)}
    return [{**config, **column, "cell_model": name, "cell_column": col}
            for name, config in models.items() for col, column in COLUMNS.items()]


def space(tuned_cnn: dict | None = None, rows=None) -> Space:
    return Space(name="paper", params=(), presets=tuple(cells(tuned_cnn, rows)))


SPACE = space()
