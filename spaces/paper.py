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
SMALL_ROWS = ("baseline", "manual", "kt-tuned")  # the CNNs the paper trains from scratch: repeated over seeds
MASKED_COLUMNS = tuple(c for c in COLUMNS if c not in PAPER_COLUMNS)
TUNED = "kt-tuned"  # the row whose config comes from a Keras Tuner search, not from this file
ROWS = ("baseline", "manual", TUNED, *(m for m in MODELS if m not in ("baseline", "manual")))


def cells(tuned_cnn: dict | None = None, rows=None, seeds: int = 1, columns=None,
          transfer_epochs: int | None = None) -> list[dict]:
    """Every (row, column) cell, rows in the paper's order; the tuned row only when its config is given.

    `seeds`: repeats of each small-CNN cell with other weights (`repeat`, see train.trial), so a cell's spread can be told
    from the gap between cells; repeat 0 keeps the cell's plain config, so grids run before seeds keep their
    cells. `transfer_epochs`: a lower epoch cap (`max_epochs`) for the MobileNetV2 and NASNetMobile rows, which
    train ten times slower than the small CNNs on a CPU."""
    models = {name: tuned_cnn if name == TUNED else MODELS[name] for name in ROWS
              if (rows is None or name in rows) and (name != TUNED or tuned_cnn is not None)}
    out = []
    for name, config in models.items():
        small = name in SMALL_ROWS
        extra = {} if small or not transfer_epochs else {"max_epochs": transfer_epochs}
        for col, column in COLUMNS.items():
            if columns is not None and col not in columns:
                continue
            for k in range(seeds if small else 1):
                out.append({**config, **column, **extra, "cell_model": name, "cell_column": col,
                            **({"repeat": k} if k else {})})
    return out


def space(tuned_cnn: dict | None = None, rows=None, **kw) -> Space:
    return Space(name="paper", params=(), presets=tuple(cells(tuned_cnn, rows, **kw)))


SPACE = space()
