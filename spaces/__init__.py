"""Search spaces, written once and translated for each engine (see search/adapters.py).

To add a space: write spaces/<name>.py with a `SPACE` and add its module to `_registry` below.
"""
from spaces.base import Categorical, Fixed, Float, Int, Space, sample  # noqa: F401
from train.errors import UserError


def _registry():
    from spaces import cnn, mobilenetv2, nasnetmobile, paper
    return {s.SPACE.name: s.SPACE for s in (cnn, mobilenetv2, nasnetmobile, paper)}


def get(name: str) -> Space:
    spaces = _registry()
    if name not in spaces:
        raise UserError(f"unknown space {name!r} (choose from {', '.join(sorted(spaces))})")
    return spaces[name]


def names() -> list[str]:
    return sorted(_registry())
