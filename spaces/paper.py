"""The paper's study as a grid of manual configurations: model x missing labels x augmentation.

Columns follow the paper (no imputation, forward fill, KNN, offline augmentation of the
complete rows) plus ours (masked loss, masked loss with flip). The Keras-Tuner-tuned CNN is the
best trial of a short Keras Tuner search of the `cnn` space on the same data.
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
}
PAPER_COLUMNS = ("none", "ffill", "knn", "augment")


def cells(tuned_cnn: dict | None = None) -> list[dict]:
    models = dict(MODELS)
    if tuned_cnn is not None:
        models = {"baseline": MODELS["baseline"], "manual": MODELS["manual"], "kt-tuned": tuned_cnn,
                  **{k: v for k, v in MODELS.items() if k not in ("baseline", "manual")}}
    return [{**config, **column, "cell_model": name, "cell_column": col}
            for name, config in models.items() for col, column in COLUMNS.items()]


def space(tuned_cnn: dict | None = None) -> Space:
    return Space(name="paper", params=(), presets=tuple(cells(tuned_cnn)))


SPACE = space()
