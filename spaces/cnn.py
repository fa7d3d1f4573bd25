"""The core space: a compact custom CNN, its training and its treatment of missing labels."""
from spaces.base import Categorical, Fixed, Float, Int, Space

MAX_BLOCKS = 5

SPACE = Space(
    name="cnn",
    fixed={"model": "cnn"},
    params=(
        Fixed("stem_stride", 2),
        Int("blocks", 3, MAX_BLOCKS),
        *(Int(f"filters_{k}", 16, 128, step=16, when=("blocks", tuple(range(k, MAX_BLOCKS + 1))))
          for k in range(1, MAX_BLOCKS + 1)),
        Categorical("kernel_size", (3, 5)),
        Categorical("batch_norm", (True, False)),
        Float("dropout", 0.0, 0.4),
        Categorical("dense_units", (0, 64, 128)),
        Fixed("head", "gap"),
        Float("learning_rate", 3e-4, 3e-3, log=True),
        Categorical("batch_size", (32, 64)),
        Categorical("imputation", ("masked", "knn", "ffill", "none")),
        Categorical("augment", ("flip", "none", "flip,rotate,shift")),
    ),
    presets=({"model": "manual"}, {"model": "baseline"}),
)
