"""A small, library-neutral way to declare a search space.

A parameter may be conditional: `when=("blocks", (3, 4))` means it exists only when `blocks`
(declared earlier) takes one of those values, e.g. the filters of block 3.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Int:
    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False
    when: tuple | None = None


@dataclass(frozen=True)
class Float:
    name: str
    low: float
    high: float
    log: bool = False
    when: tuple | None = None


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple
    when: tuple | None = None


@dataclass(frozen=True)
class Fixed:
    name: str
    value: Any
    when: tuple | None = None


@dataclass(frozen=True)
class Space:
    name: str
    params: tuple
    fixed: dict = field(default_factory=dict)  # config entries that are not searched (e.g. model)
    presets: tuple = ()                         # hand-made configs: the manual engine runs them, Optuna starts from them
    max_params: int | None = None               # search.run's default --max-params
    quick_budget: dict = field(default_factory=dict)  # trials/epochs/timeout when search.run gets none of them

    @property
    def searched(self) -> set:
        """The names an engine samples: every parameter but the fixed ones."""
        return {p.name for p in self.params if not isinstance(p, Fixed)}

    def __post_init__(self):
        seen = set()
        for p in self.params:
            if p.name in seen:
                raise ValueError(f"space {self.name}: parameter {p.name!r} declared twice")
            if p.when and p.when[0] not in seen:
                raise ValueError(f"space {self.name}: {p.name!r} depends on {p.when[0]!r}, declared later or not at all")
            seen.add(p.name)


class Suggest(Protocol):
    """What an engine adapter provides: one call per parameter kind."""
    def int(self, p: Int) -> int: ...
    def float(self, p: Float) -> float: ...
    def categorical(self, p: Categorical) -> Any: ...
    def fixed(self, p: Fixed) -> Any: ...


def active(p, values: dict) -> bool:
    return p.when is None or values.get(p.when[0]) in p.when[1]


def sample(space: Space, suggest: Suggest) -> dict:
    """Walk the space in order, asking the engine for each active parameter; return a config."""
    values: dict = {}
    for p in space.params:
        if not active(p, values):
            continue
        kind = type(p).__name__.lower()
        values[p.name] = getattr(suggest, kind)(p)
    return {**space.fixed, **values}


def warm_starts(space) -> list[dict]:
    """The space's presets written in its own parameters, as trial values: what a search starts from (Optuna's
    warm starts, bench.replay, bench.workers)."""
    names = space.searched
    own = [preset for preset in space.presets if set(preset) <= names | set(space.fixed)
           and all(preset.get(k, v) == v for k, v in space.fixed.items())]  # {"model": "manual"} is another model
    return [values for values in ({k: v for k, v in p.items() if k in names} for p in own) if values]
