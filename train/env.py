"""Settings read from the environment (FKP_*), each refused in one line when it is not what it must be."""
from __future__ import annotations

import os

from train.errors import UserError


def whole_number(name: str, default: int, unit: str = "") -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{name}={raw!r}: expected a whole number{' of ' + unit if unit else ''}, at least 1")
    return value
