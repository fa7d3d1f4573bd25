"""Manual engine: the space's presets plus any configs the user passes (JSON or YAML).

Each config runs once per study and training budget; a journal under mlruns/manual/ remembers
finished ones so a re-run resumes instead of repeating them, while the same command with another
--epochs (or other data) trains them again rather than reporting stale results.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from search.engine import Engine
from search.progress import kind_of
from tracking import stores
from train.errors import UserError
from train.trial import Rejected


def config_key(config: dict, budget: dict | None = None) -> str:
    """Same config, same data and same training budget -> same key."""
    keyed = {**config, "__budget__": budget} if budget else config
    return hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ManualEngine(Engine):
    name = "manual"

    @classmethod
    def from_args(cls, args) -> "ManualEngine":
        from train.fit import load_config
        configs = []
        for path in args.config or []:
            loaded = load_config(path)
            configs += loaded if isinstance(loaded, list) else [loaded]
        return cls(configs, include_presets=not args.no_presets)

    def __init__(self, configs=None, include_presets: bool = True, directory=None):
        self.extra = list(configs or [])
        self.include_presets = include_presets
        self.directory = Path(directory) if directory else stores.manual_dir()

    def describe(self) -> dict:
        return {"configs": len(self.extra), "presets": self.include_presets}

    def configs(self, space) -> list[dict]:
        configs = (list(space.presets) if self.include_presets else []) + self.extra
        for i, c in enumerate(configs):
            if not isinstance(c, dict):
                raise UserError(f"manual config {i + 1} is not a mapping of hyperparameters: {c!r}")
        return configs

    def journal(self, study: str) -> Path:
        return self.directory / f"{study}.jsonl"

    def done(self, study: str) -> set[str]:
        """Keys of configs that finished (or were refused by a constraint); failed ones run again."""
        path = self.journal(study)
        if not path.exists():
            return set()
        keys = set()
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                if entry.get("status", "finished") in ("finished", "rejected"):
                    keys.add(entry["key"])
            except (ValueError, KeyError, AttributeError):
                continue  # a line cut off by a kill is simply not a finished config
        return keys

    def _record(self, study: str, key: str, status: str, config: dict) -> None:
        path = self.journal(study)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps({"key": key, "status": status, "config": config}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def run(self, space, runner, budget) -> None:
        configs = self.configs(space)[:budget.trials] if budget.trials else self.configs(space)
        done = self.done(budget.study)
        budget_key = runner.budget_key
        full = [(i, {**space.fixed, **c}) for i, c in enumerate(configs)]
        todo = [(i, c, key) for i, c in full if (key := config_key(c, budget_key)) not in done]
        runner.progress.plan_kinds([kind_of(c) for _, c, _ in todo])
        if not todo:
            print(f"[manual] all {len(configs)} configs of study {budget.study!r} already ran", flush=True)
        for number, config, key in todo:
            if budget.expired():
                print("[manual] --timeout reached: the remaining configs did not start", flush=True)
                return
            try:
                runner("manual", number, config, refs={"manual_key": key})
            except KeyboardInterrupt:
                raise
            except Rejected:
                self._record(budget.study, key, "rejected", config)
                continue
            except Exception:
                self._record(budget.study, key, "failed", config)
                continue  # a failed config is recorded and the rest still run
            self._record(budget.study, key, "finished", config)
