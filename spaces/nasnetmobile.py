"""NASNetMobile backbone (keras.applications) with a GAP + Dense(30) head."""
from spaces.base import Categorical, Fixed, Float, Space

SPACE = Space(
    name="nasnetmobile",
    fixed={"model": "nasnetmobile"},
    params=(
        Categorical("fine_tune", ("all", "frozen", "50")),
        Float("dropout", 0.0, 0.4),
        Float("learning_rate", 1e-4, 3e-3, log=True),
        Fixed("batch_size", 64),
        Fixed("imputation", "masked"),
        Categorical("augment", ("flip", "none")),
    ),
    presets=({"model": "nasnetmobile", "fine_tune": "all"}, {"model": "nasnetmobile", "fine_tune": "frozen"}),
)
