"""Learning-rate schedules and optimizers, and the re-plan that fits a schedule into the time a trial has left.

A decaying schedule is planned over the trial's full epoch budget. When a search's --timeout would cut a trial
before that budget ends, the trial would stop mid-schedule, its learning rate still high (on a machine with 9-s
epochs the quick start's preset stopped at epoch 39 of 75: 1.622 px instead of 1.371). `FitToTime` measures the
epochs, and when they will not all fit, re-plans the rest of the schedule to end, decayed, in the time left.
"""
from __future__ import annotations

import math

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


class FitToTime(keras.callbacks.Callback):
    """At the end of each epoch from the third on, when the epochs left will not fit in `seconds_left()` at the
    measured pace, re-plan the schedule to end with the last epoch that fits, and stop training there.

    The pace is read off the clock itself: what `seconds_left()` lost per epoch since the end of the first
    (which also builds the graph), so the tracking and display between epochs count too, and one slow epoch
    weighs no more than its share (the slower of the last two epochs, tried first, stopped the quick start's
    preset at epoch 39 with 2 of its 7 minutes unused). Each epoch re-plans from where the schedule is, so a
    pace that changes moves the end both ways without a jump in the rate; the end moves later only by 2 epochs
    or more, so a pace at the edge does not flip the plan every epoch. `reserve` epochs' worth of time is kept
    for what follows training (scoring, saving, logging)."""

    def __init__(self, seconds_left, schedule: Replannable | None, steps_per_epoch: int, epochs: int,
                 on_replan=None, reserve: float = 1.0):
        super().__init__()
        self.seconds_left, self.schedule, self.steps = seconds_left, schedule, steps_per_epoch
        self.epochs = self.end = epochs  # the budget, and the epoch count training now ends at
        self.on_replan, self.reserve = on_replan, reserve
        self.first_left = None  # seconds left at the end of the first epoch

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done >= self.end:
            self.model.stop_training = True
            return
        left = self.seconds_left()
        if done == 1:
            self.first_left = left
        if done < 3 or self.schedule is None or self.first_left is None:
            return
        pace = (self.first_left - left) / (done - 1)
        fit = math.floor(left / pace - self.reserve) if pace > 0 else self.epochs
        end = min(self.epochs, done + fit)
        if fit <= 0 or end == self.end or self.end < end < self.end + 2:
            return  # nothing fits (the search's own timeout stops it now), or the plan stands
        self.end = end
        self.schedule.replan(done * self.steps, end * self.steps)
        if self.on_replan:
            self.on_replan(end)
