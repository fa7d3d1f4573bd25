"""A final stage's --timeout: each training step gets a share of the time left, sized by what it costs.

The stage's steps are known before the first one trains (selection seeds, the ensemble's refits, the students),
and they differ in cost: a config's compute sets its epoch time, a refit also sees the validation faces, and a
distillation runs its teacher on every batch. So a step's slot is the time left times its cost over the cost of
every step still to train, and a step that ends early leaves its time to the rest. Within its slot a step's
schedule is fitted to the time (train/fit_to_time.py): it ends decayed, not cut.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

# Scoring the test split, flip TTA, the LiteRT export and MLflow after the last step: measured at 40-70 s for
# docs/best on 2 cores, kept out of the steps' time.
TAIL_S = 90.0


@dataclasses.dataclass(frozen=True)
class Planned:
    name: str
    cost: float  # in multiply-accumulates: only the ratios between steps matter


def train_cost(mmacs: float, faces: int, epochs: int, teacher_mmacs: float = 0.0) -> float:
    """A training step's compute: forward and backward (about 3 forward passes) of the model on every face and
    epoch, plus a forward pass of the teacher when it distils."""
    return faces * epochs * (3.0 * mmacs + teacher_mmacs)


def _now() -> float:
    return time.monotonic()


class StageBudget:
    def __init__(self, seconds: float, used: float = 0.0, tail: float = TAIL_S, clock=None):
        """`used`: what this stage's steps kept from an earlier run of it cost then, so a resumed stage goes on
        with the time it had left."""
        self.clock = clock or (lambda: _now())  # looked up at each call: a test's clock replaces _now
        self.deadline = self.clock() + seconds - used - tail

    def left(self) -> float:
        return self.deadline - self.clock()

    def slot(self, name: str, plan: list[Planned], done: Callable[[str], bool]) -> Callable[[], float]:
        """`seconds_left` for step `name`: its share of the time left among the steps of `plan` not yet done."""
        remaining, seen = [], set()
        for step in plan:
            if step.name not in seen and (step.name == name or not done(step.name)):
                seen.add(step.name)
                remaining.append(step)
        mine = next((s.cost for s in remaining if s.name == name), None)
        if mine is None:  # finalize trains a step its plan lacks: the plan and the stage have drifted apart
            raise RuntimeError(f"step {name} is not in the stage's plan ({', '.join(s.name for s in plan)})")
        total = sum(s.cost for s in remaining)
        now = self.clock()
        end = now + max(0.0, self.deadline - now) * (mine / total if total > 0 else 1.0)
        return lambda: end - self.clock()
