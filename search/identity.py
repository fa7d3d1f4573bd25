"""A study's identity: the data it trains on, how that data is split, and the training budget.

Two searches with the same identity can share a study (resume, or run as parallel workers); any
other pair must not, or the leaderboard would rank results of different data or budgets together.
The default study name carries the identity's digest, so other data or another budget starts a
new study; a name given with --study-name is checked against what it was made with.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from train.errors import UserError, check_training_code

TAG = "fkp_key"
NOT_COMPARABLE = "its scores are not comparable; choose another --study-name"


@dataclasses.dataclass(frozen=True)
class StudyKey:
    data_sha: str
    split: str
    val_fraction: float
    test_fraction: float
    seed: int
    epochs: int
    patience: int
    copies: int
    max_params: int | None
    max_mmacs: float | None = None
    code: int = 1  # train.trial.TRAINING_CODE: the training code's version

    @classmethod
    def of(cls, data, settings) -> "StudyKey":
        from train.trial import TRAINING_CODE
        return cls(data.sha, settings.split, settings.val_fraction, settings.test_fraction, settings.seed,
                   settings.epochs, settings.patience, settings.copies, settings.max_params, settings.max_mmacs,
                   TRAINING_CODE)

    def digest(self) -> str:
        keyed = dataclasses.asdict(self)
        if keyed["max_mmacs"] is None:  # studies made before the compute budget keep their names
            del keyed["max_mmacs"]
        if keyed["code"] == 1:  # and those made before the training code had a version
            del keyed["code"]
        return hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:8]

    def describe(self) -> str:
        return (f"data {self.data_sha[:12]}, split {self.split} {self.val_fraction:g}/{self.test_fraction:g} "
                f"seed {self.seed}, {self.epochs} epochs (patience {self.patience})"
                + (f", ≤{self.max_params:,} params" if self.max_params else "")
                + (f", ≤{self.max_mmacs:g}M MACs" if self.max_mmacs else ""))

    def tags(self) -> dict:
        """What every MLflow run of the study carries, so any run says what it was measured on."""
        return {TAG: self.digest(), "data_sha": self.data_sha,
                "split": f"{self.split}:val={self.val_fraction:g},test={self.test_fraction:g}",
                "seed": self.seed, "max_epochs": self.epochs, "patience": self.patience,
                "max_params": self.max_params or "none", "max_mmacs": self.max_mmacs or "none",
                "training_code": self.code}

    def name(self, space: str, explicit: str | None) -> str:
        return explicit or f"{space}-{self.digest()}"

    def check(self, tracker, study: str) -> None:
        """Refuse, in one line, to continue `study` if it was made on other data, split or budget."""
        for run in tracker.searches(study):
            tags = run.data.tags
            if tags.get(TAG) == self.digest():
                continue
            if TAG not in tags:
                raise UserError(f"study {study!r} was made before studies were keyed on their data and budget: "
                                "its results are not comparable; choose another --study-name")
            check_training_code(f"study {study!r}", tags.get("training_code", 1), self.code, NOT_COMPARABLE)
            if tags.get("data_sha") and tags["data_sha"] != self.data_sha:
                raise UserError(f"study {study!r} was made on data {tags['data_sha'][:12]}, this data is "
                                f"{self.data_sha[:12]}: choose another --study-name")
            raise UserError(f"study {study!r} was made with split {tags.get('split')}, {tags.get('max_epochs')} "
                            f"epochs, patience {tags.get('patience')}, max params {tags.get('max_params')}; this "
                            f"run has {self.describe()}: choose another --study-name")

    def check_attrs(self, study: str, attrs: dict, space: str) -> dict:
        """The same check against an engine's own store (e.g. an Optuna study's user attributes)."""
        # Set in this order, one attribute at a time: a worker starting beside the study's creator may see the
        # code without the key, never the key without the code. A study older than the code's version has no
        # code attribute and fails on its key below (the MLflow check, run first, names the code).
        mine = {"training_code": self.code, TAG: self.digest(), "data_sha": self.data_sha, "space": space}
        if "training_code" in attrs:
            check_training_code(f"study {study!r}", attrs["training_code"], self.code, NOT_COMPARABLE)
        if attrs.get("space", space) != space:
            raise UserError(f"study {study!r} searches space {attrs['space']!r}, not {space!r}: "
                            "choose another --study-name")
        if attrs.get("data_sha", self.data_sha) != self.data_sha:
            raise UserError(f"study {study!r} was made on data {attrs['data_sha'][:12]}, this data is "
                            f"{self.data_sha[:12]}: choose another --study-name")
        if attrs.get(TAG, self.digest()) != self.digest():
            raise UserError(f"study {study!r} was made with another split or training budget (key "
                            f"{attrs[TAG]}, this run {self.digest()}: {self.describe()}): choose another --study-name")
        return mine
