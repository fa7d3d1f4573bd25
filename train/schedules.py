"""Learning-rate schedules and optimizers; `Replannable` lets a schedule be re-planned mid-training
(train/fit_to_time.py does, when a trial's epochs will not fit in the time it has left)."""
from __future__ import annotations

import keras

from train.errors import UserError

SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_WARMUP = 0.3  # of the steps: the learning rate rises, so no early stopping before it ends


def learning_rate(cfg, total_steps: int):
    """The schedule is planned over the trial's full epoch budget; pruning or early stopping may cut it."""
    lr, name = float(cfg["learning_rate"]), cfg.get("schedule", "constant")
    if name == "constant":
        return lr
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total_steps, 1), alpha=0.01)
    if name == "onecycle":  # linear warm-up over the first 30% (ONECYCLE_WARMUP), then cosine down
        warm = max(int(ONECYCLE_WARMUP * total_steps), 1)
        return keras.optimizers.schedules.CosineDecay(lr / 20, decay_steps=max(total_steps - warm, 1), alpha=0.01,
                                                      warmup_target=lr, warmup_steps=warm)
    raise UserError(f"unknown schedule {name!r} (choose from {', '.join(SCHEDULES)})")


def optimizer(cfg, lr):
    """The config's optimizer at `lr`: a rate or a schedule (`learning_rate`, perhaps wrapped in `Replannable`)."""
    name = cfg["optimizer"]
    decay = float(cfg.get("weight_decay", 0.0))
    if name == "adam" and decay:
        name = "adamw"  # decoupled decay: Adam's L2 would be scaled away by its own normalisation
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=decay or 1e-4)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    raise UserError(f"unknown optimizer {name!r} (choose adam, adamw, rmsprop or sgd)")


@keras.saving.register_keras_serializable(package="fkp")
class Replannable(keras.optimizers.schedules.LearningRateSchedule):
    """`inner` read at a planned step: `base + (step - anchor) * rate`. Until `replan` is called that is the step
    itself (0 + step * 1.0, exact in float32), so an un-replanned trial trains exactly as without the wrapper."""

    def __init__(self, inner, total_steps: int, anchor: float = 0.0, base: float = 0.0, rate: float = 1.0):
        self.inner = inner if isinstance(inner, keras.optimizers.schedules.LearningRateSchedule) \
            else keras.optimizers.schedules.deserialize(inner)
        self.total_steps = int(total_steps)
        # variables, not Python numbers: the compiled train step reads them, so a re-plan needs no retrace
        self.anchor = keras.Variable(anchor, dtype="float32", trainable=False, name="plan_anchor")
        self.base = keras.Variable(base, dtype="float32", trainable=False, name="plan_base")
        self.rate = keras.Variable(rate, dtype="float32", trainable=False, name="plan_rate")

    def planned(self, step) -> float:
        return float(self.base.numpy()) + (float(step) - float(self.anchor.numpy())) * float(self.rate.numpy())

    def replan(self, at_step: int, end_step: int) -> None:
        """From `at_step` on, run what is left of the plan so that it ends at `end_step`. The rate is continuous at
        `at_step`: the schedule jumps nowhere, it only goes on faster (or slower)."""
        here = self.planned(at_step)
        self.anchor.assign(float(at_step))
        self.base.assign(here)
        self.rate.assign((self.total_steps - here) / max(end_step - at_step, 1))

    def __call__(self, step):
        planned = self.base + (keras.ops.cast(step, "float32") - self.anchor) * self.rate
        return self.inner(keras.ops.minimum(planned, float(self.total_steps)))

    def get_config(self):
        return {"inner": keras.optimizers.schedules.serialize(self.inner), "total_steps": self.total_steps,
                "anchor": float(self.anchor.numpy()), "base": float(self.base.numpy()),
                "rate": float(self.rate.numpy())}
