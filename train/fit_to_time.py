"""Fit a trial's learning-rate schedule into the time a search's --timeout leaves it.

A decaying schedule is planned over the trial's full epoch budget. A trial the clock cuts stops mid-schedule,
its learning rate still high: on a machine with 9-s epochs the quick start's preset stopped at epoch 39 of 75
and scored 1.622 px, against 1.371 for its full schedule.
"""
from __future__ import annotations

import math

import keras

from train.schedules import Replannable


class FitToTime(keras.callbacks.Callback):
    """From the third epoch on, when the epochs left will not fit in `seconds_left()`, re-plan the schedule to
    end with the last epoch that fits, and stop training there. From the second, when not even the next epoch
    fits, or no time is left, training stops now: cut, not decayed, as the time is too short to plan.

    The pace is what `seconds_left()` lost per epoch since the first ended (the first also builds the graph), so
    tracking between epochs counts, and one slow epoch weighs only its share (the slower of the last two epochs,
    tried first, planned the quick start's preset 2 of its 7 minutes short). The end moves both ways as the pace
    changes, later only by 2 epochs or more so that a pace on the edge does not flip it every epoch. `reserve`
    epochs' worth of time is kept for scoring, saving and logging after training."""

    def __init__(self, seconds_left, schedule: Replannable | None, epochs: int, on_replan=None,
                 reserve: float = 1.0):
        super().__init__()
        self.seconds_left, self.schedule = seconds_left, schedule
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
        pace = (self.first_left - left) / (done - 1) if done > 1 else 0.0
        if left <= 0 or left < pace:  # the next epoch would end past the time: this one is the last
            self._move_end(done, done)
            return
        if done < 3 or self.schedule is None:
            return  # one epoch's pace is too rough to re-plan on, or a constant rate has nothing to re-plan
        fit = max(1, math.floor(left / pace - self.reserve)) if pace > 0 else self.epochs  # 1: fits, not the reserve
        end = min(self.epochs, done + fit)
        if end == self.end or self.end < end < self.end + 2:
            return
        self._move_end(done, end)

    def _move_end(self, done: int, end: int) -> None:
        self.end = end
        if end > done:
            step = int(self.model.optimizer.iterations.numpy())
            self.schedule.replan(step, step + (end - done) * (step // done))
        else:
            self.model.stop_training = True
        if self.on_replan:
            self.on_replan(end)
