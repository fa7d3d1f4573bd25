"""MobileNetV2 backbone (keras.applications) with a GAP + Dense(30) head."""
from spaces.base import Categorical, Fixed, Float, Space

SPACE = Space(
    name="mobilenetv2",
    fixed={"model": "mobilenetv2"},
    params=(
        Categorical("alpha", (0.35, 0.5, 0.75, 1.0)),
        Categorical("input_size", (96, 128)),
        Categorical("fine_tune", ("all", "frozen", "30")),
        Float("dropout", 0.0, 0.4),
        Float("learning_rate", 1e-4, 3e-3, log=True),
        Fixed("batch_size", 64),
        Fixed("imputation", "masked"),
        Categorical("augment", ("flip", "none")),
    ),
    presets=({"model": "mobilenetv2", "fine_tune": "all"}, {"model": "mobilenetv2", "fine_tune": "frozen"}),
)
