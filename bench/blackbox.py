"""A learning-curve table as a blackbox: what a config would have scored, and what it would have cost.

Syne Tune's blackbox repository, in small: the table (bench/curves.py) holds real curves of a pool of
configs; a config the pool lacks is answered by its nearest pool config (1-NN on the normalised
hyperparameters, as Syne Tune's surrogate option does), or by its nearest untried one (a tabular replay, as
Syne Tune's restricted configurations without duplicates). Nothing is extrapolated: a config whose curve
lacks a budget or an epoch is refused by name, unless the caller drops incomplete configs knowingly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spaces.base import Categorical, Fixed, Float, Int, active
from train.errors import UserError

INACTIVE = -0.5  # a parameter a config does not have sits this far outside [0, 1]


@dataclass
class Run:
    """One config trained at one budget."""
    val_rmse: list          # per epoch
    epoch_s: list           # per epoch
    final_val: float        # best epoch's weights, as the trial reports it
    test_rmse: float
    overhead_s: float       # build, data, measuring: the wall time outside the epochs
    status: str = "complete"

    @property
    def wall_s(self) -> float:
        return float(sum(self.epoch_s)) + self.overhead_s


def encode(space, config: dict) -> np.ndarray:
    out = []
    for p in space.params:
        if isinstance(p, Fixed):
            continue
        on = active(p, config) and p.name in config
        if isinstance(p, Categorical):
            out += [float(on and config[p.name] == c) for c in p.choices]
        elif isinstance(p, (Int, Float)):
            if not on:
                out.append(INACTIVE)
                continue
            lo, hi, x = float(p.low), float(p.high), float(config[p.name])
            if p.log:
                lo, hi, x = np.log(lo), np.log(hi), np.log(x)
            out.append((x - lo) / (hi - lo) if hi > lo else 0.0)
    return np.asarray(out, np.float32)


def outside(space, config: dict) -> str | None:
    """The first active parameter whose value the space no longer holds (a table of an older space): a sampler
    told it would refuse it, and a nearest-config answer would be measured against the wrong ranges."""
    for p in space.params:
        if isinstance(p, Fixed) or p.name not in config or not active(p, config):
            continue
        v = config[p.name]
        if isinstance(p, Categorical) and v not in p.choices or isinstance(p, (Int, Float)) and not p.low <= v <= p.high:
            held = list(p.choices) if isinstance(p, Categorical) else f"[{p.low}, {p.high}]"
            return f"{p.name}={v!r}, the space holds {held}"
    return None


class Blackbox:
    def __init__(self, space, meta: dict, rows: list[dict], source: str, complete_only: bool = False):
        self.space, self.meta, self.source = space, meta, source
        self.budgets = sorted(int(b) for b in meta["budgets"])
        by_config: dict[str, dict] = {}
        configs: dict[str, dict] = {}
        for row in rows:
            if row.get("status") == "rejected":
                continue
            configs[row["config_id"]] = row["config"]
            by_config.setdefault(row["config_id"], {})[int(row["budget"])] = row
        self.runs: dict[str, dict[int, Run]] = {}
        self.dropped: list[str] = []
        for cid, config in configs.items():
            if (off := outside(space, config)) is not None:
                raise UserError(f"{source}: config {cid}: {off}: a table of another version of space "
                                f"{meta.get('space')!r}")
        for cid, per_budget in by_config.items():
            problem = self._problem(cid, per_budget)
            if problem:
                if not complete_only:
                    raise UserError(f"{source}: {problem} (pass --complete-only to leave such configs out)")
                self.dropped.append(problem)
                continue
            self.runs[cid] = {b: self._run(per_budget[b]) for b in self.budgets}
        if not self.runs:
            raise UserError(f"{source}: no config has a complete curve at every budget {self.budgets}")
        self.ids = list(self.runs)
        self.configs = {cid: configs[cid] for cid in self.ids}
        self.presets = {cid: by_config[cid][self.budgets[-1]].get("preset") for cid in self.ids}
        self.matrix = np.stack([encode(space, self.configs[cid]) for cid in self.ids])

    def _problem(self, cid: str, per_budget: dict) -> str | None:
        for b in self.budgets:
            row = per_budget.get(b)
            if row is None:
                return f"config {cid} has no run at budget {b} epochs"
            if row["status"] == "failed":
                continue  # a real outcome: it costs its time and scores nothing
            if row["status"] != "complete":
                return f"config {cid} at budget {b}: status {row['status']!r}, not a whole curve"
            n, trained = len(row["val_rmse"]), int(row["epochs"])
            if n != trained or len(row["epoch_s"]) != trained:
                return (f"config {cid} at budget {b}: {trained} epochs trained but {n} validation values and "
                        f"{len(row['epoch_s'])} epoch times kept (missing epochs {min(n, len(row['epoch_s'])) + 1}"
                        f"-{trained})")
        return None

    @staticmethod
    def _run(row: dict) -> Run:
        if row["status"] == "failed":
            return Run([], [], float("nan"), float("nan"), float(row.get("wall_s", 0.0)), "failed")
        return Run(list(row["val_rmse"]), list(row["epoch_s"]), float(row["final_val_rmse"]),
                   float(row["test_rmse"]), max(float(row["wall_s"]) - float(sum(row["epoch_s"])), 0.0))

    def nearest(self, config: dict, among: list[str] | None = None) -> str:
        """`among`: only these pool configs (a tabular replay's untried ones); default, the whole pool."""
        rows = list(range(len(self.ids))) if among is None else [self.ids.index(cid) for cid in among]
        distance = ((self.matrix[rows] - encode(self.space, config)) ** 2).sum(axis=1)
        return self.ids[rows[int(np.argmin(distance))]]

    def params(self, cid: str) -> dict:
        """A pool config as a sampler's trial values: its own parameters, none of the space's fixed ones."""
        names = self.space.searched
        return {k: v for k, v in self.configs[cid].items() if k in names}

    def __len__(self) -> int:
        return len(self.runs)


def check_table(meta: dict | None, source: str, space_name: str, data_sha: str | None) -> None:
    """One line, before anything is replayed, when the table is of another space or other data."""
    if meta is None:
        raise UserError(f"{source}: no meta line: not a learning-curve table (python -m bench.curves writes them)")
    if meta.get("space") != space_name:
        raise UserError(f"{source}: a table of space {meta.get('space')!r}, not {space_name!r}")
    if data_sha and meta.get("data_sha") != data_sha:
        raise UserError(f"{source}: a table of data {str(meta.get('data_sha'))[:12]}, this data is {data_sha[:12]}")
