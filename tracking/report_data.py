"""What the reports are made of, read from MLflow (and Optuna, and the paper's published tables).

Nothing here draws or formats: report_figures.py draws, report_render.py writes Markdown and HTML.
"""
from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from spaces.paper import COLUMNS, ROWS

PAPER_FIGURES = Path(__file__).resolve().parent / "paper_figures"  # copied from shared/paper (see its README)
SMALL_PARAMS = 250_000  # the edge-device budget our users aim for


def finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def study_names(text: str) -> list[str]:
    """A --study comma list, in its order, each name once."""
    return list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))


# ---- the paper's grid ------------------------------------------------------------------------
def cells(tracker, study: str) -> dict:
    """(model, column) -> the cell over its seeds: mean metrics, and `seeds`, one entry per repeat (the latest
    finished run of each), with its budget and how its training ended (see `ending`), and the `study` it came from.

    `study` may be a comma list: a later study's cell replaces the same (model, column) cell of an earlier one,
    whole (all its seeds), e.g. a row run again at a higher epoch cap, which is another study (see search.identity)."""
    out = {}
    for name in study_names(study):
        out.update({key: {**cell, "study": name} for key, cell in _study_cells(tracker, name).items()})
    return out


def _study_cells(tracker, study: str) -> dict:
    runs, parents = {}, {}
    for run in sorted(tracker.trials(study=study), key=lambda r: r.info.start_time):
        p, tags = run.data.params, run.data.tags
        if run.info.status != "FINISHED" or "cell_model" not in p:
            continue
        max_epochs = tags.get("max_epochs")
        if max_epochs is None:  # runs logged before trials carried their budget: the search run has it
            parent = tags.get("mlflow.parentRunId")
            if parent not in parents:
                parents[parent] = tracker.client.get_run(parent).data.params.get("epochs") if parent else None
            max_epochs = parents[parent]
        if p.get("max_epochs"):  # a capped row: its own cap, when below the study's
            max_epochs = min(int(float(p["max_epochs"])), int(float(max_epochs or p["max_epochs"])))
        if tags.get("schedule_fit_to_time"):  # its schedule was re-planned to end there: it ran its whole budget
            max_epochs = int(tags["schedule_fit_to_time"])
        runs[(p["cell_model"], p["cell_column"], int(p.get("repeat", 0)))] = {
            **run.data.metrics, "run_id": run.info.run_id, "max_epochs": max_epochs, "patience": tags.get("patience"),
            "timed_out": "stopped_by_timeout" in tags, "retimed": tags.get("retimed_at"),
            "retime_rounds": tags.get("retime_rounds")}
    out: dict = {}
    for (model, col, _), run in sorted(runs.items()):
        out.setdefault((model, col), []).append(run)
    return {key: _over_seeds(seeds) for key, seeds in out.items()}


def _over_seeds(seeds: list[dict]) -> dict:
    """Means of the numeric metrics over the seeds that have them; the first seed's run id and budget; every seed
    kept under `seeds`."""
    cell = {**seeds[0], "seeds": seeds, "n_seeds": len(seeds)}
    for key in {k for s in seeds for k, v in s.items() if finite(v)}:
        values = [s[key] for s in seeds if finite(s.get(key))]
        cell[key] = sum(values) / len(values)
    return cell


def spread(cell: dict, key: str = "test_rmse") -> float | None:
    """Max minus min over the cell's seeds (None with one seed)."""
    values = [s[key] for s in cell.get("seeds", []) if finite(s.get(key))]
    return max(values) - min(values) if len(values) > 1 else None


def score_key(grid) -> str:
    """test RMSE (faces no early stopping saw) where every cell has one; else validation RMSE."""
    return "test_rmse" if grid and all(finite(c.get("test_rmse")) for c in grid.values()) else "rmse"


PLATEAU = 0.01  # a run that used its whole budget counts as converged if its last 5 epochs gained under 1%


def ending(curve: list[float], max_epochs, timed_out: bool = False) -> str:
    """How a run's training ended, from its validation curve: 'stopped early' (early stopping fired before the
    cap), 'plateau' (ran to the cap, but its best of the last 5 epochs is within 1% of its best before them),
    'still improving', or 'cut by --timeout'."""
    if not curve:
        return "unknown"
    if timed_out:
        return "cut by --timeout"
    if max_epochs is not None and len(curve) < int(float(max_epochs)):
        return "stopped early"
    if len(curve) <= 5:
        return "still improving"
    before, last = min(curve[:-5]), min(curve[-5:])
    return "plateau" if last >= before * (1 - PLATEAU) else "still improving"


def roughness(curve: list[float]) -> float | None:
    """How much of its descent a validation curve gives back in upticks: the sum of its epoch-to-epoch rises over
    its drop from the first epoch to its best (0: it never rose). The paper's "trains more smoothly", as a number."""
    if not curve:
        return None
    # up to the best epoch: a run that stopped early always ends with `patience` epochs of no gain
    curve = curve[:curve.index(min(curve)) + 1]
    drop = curve[0] - curve[-1]
    if drop <= 0:
        return None
    return sum(max(b - a, 0.0) for a, b in zip(curve, curve[1:])) / drop


def curves(tracker, grid) -> dict:
    """(model, column) -> each seed's validation curve, from the runs' logged `val_rmse` history."""
    return {key: [[h.value for h in sorted(tracker.client.get_metric_history(s["run_id"], "val_rmse"),
                                           key=lambda h: h.step)] for s in cell["seeds"]]
            for key, cell in grid.items()}


def grid_columns(grid) -> list[str]:
    """The grid's columns that have at least one finished cell (a grid run before a column existed lacks it)."""
    return [c for c in COLUMNS if any(col == c for _, col in grid)]


def grid_models(grid) -> list[str]:
    """Rows in the paper's order, whatever order the cells ran in."""
    present = {model for model, _ in grid}
    return [m for m in ROWS if m in present] + sorted(present - set(ROWS))


def row_cells(grid, model) -> list[dict]:
    """A row's finished cells, in column order."""
    return [grid[(model, c)] for c in grid_columns(grid) if (model, c) in grid]


def grid_value(grid, model, col, key):
    cell = grid.get((model, col))
    return cell.get(key) if cell else None


def mean_face(cells_or_rows) -> float | None:
    values = [c["mean_face_rmse"] for c in cells_or_rows if finite(c.get("mean_face_rmse"))]
    return values[0] if values else None  # one split for the whole study, so one value


def exported(folder) -> dict:
    """An exported model folder's metrics and config (what --export-best and search.finalize write)."""
    import json
    folder = Path(folder)
    try:
        return {"folder": str(folder), "metrics": json.loads((folder / "metrics.json").read_text()),
                "config": json.loads((folder / "config.json").read_text())}
    except (OSError, ValueError) as exc:
        from train.errors import UserError
        raise UserError(f"{folder}: not an exported model folder (needs metrics.json and config.json): {exc}")


# ---- the paper's published figures -----------------------------------------------------------
# Our grid rows -> the paper's row names in its tables.
PAPER_TABLE1 = {"baseline": ("baseline_cnn",), "manual": ("manual_cnn",),
                "kt-tuned": ("keras_tuned_cnn_no_imputation", "keras_tuned_cnn_ffill", "keras_tuned_cnn_knn",
                             "keras_tuned_cnn_augmentation"),
                "mobilenetv2-frozen": ("mobilenetv2",), "mobilenetv2-all": ("mobilenetv2",),
                "nasnetmobile-frozen": ("nasnetmobile",), "nasnetmobile-all": ("nasnetmobile",)}
PAPER_TABLE23 = {"baseline": "baseline_cnn", "manual": "manual_cnn", "kt-tuned": "keras_tuned_cnn",
                 "mobilenetv2-frozen": "mobilenetv2_frozen", "mobilenetv2-all": "mobilenetv2_fine_tuned",
                 "nasnetmobile-frozen": "nasnetmobile_frozen", "nasnetmobile-all": "nasnetmobile_fine_tuned"}
PAPER_STRATEGIES = ("none", "ffill", "knn", "augment")


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@dataclass
class Published:
    params: dict = field(default_factory=dict)     # paper row -> (params, size MB)
    rmse_grade: dict = field(default_factory=dict)  # paper row -> {strategy: grade}
    inference: dict = field(default_factory=dict)  # paper row -> {strategy: s/100 images}
    prior: list = field(default_factory=list)      # [{work, architecture, rmse}]

    def table1(self, model: str):
        """(params, size MB) of our row's counterpart: a (low, high) pair when the paper has one per strategy."""
        found = [self.params[name] for name in PAPER_TABLE1.get(model, ()) if name in self.params]
        if not found:
            return None
        return found[0] if len(found) == 1 else (min(found), max(found))

    def grade(self, model: str, strategy: str) -> str | None:
        return self.rmse_grade.get(PAPER_TABLE23.get(model, ""), {}).get(strategy) or None

    def seconds(self, model: str) -> dict:
        return self.inference.get(PAPER_TABLE23.get(model, ""), {})


def published(folder: Path = PAPER_FIGURES) -> Published:
    folder = Path(folder)
    out = Published()
    if not folder.is_dir():
        return out
    for row in _read(folder / "table1_params_size.csv"):
        out.params[row["model"]] = (int(row["params"]), float(row["size_mb"]))
    for row in _read(folder / "table2_rmse_effect.csv"):
        out.rmse_grade[row["model"]] = {k: v for k, v in row.items() if k != "model" and v}
    for row in _read(folder / "table3_inference_s_per_100.csv"):
        out.inference[row["model"]] = {k: float(v) for k, v in row.items() if k != "model" and v}
    out.prior = [{**row, "rmse": float(row["rmse"])} for row in _read(folder / "prior_rmse.csv")]
    return out


# ---- searches of a space: engines side by side -----------------------------------------------
BUDGET_TAGS = ("data_sha", "split", "max_epochs", "patience", "max_params")


@dataclass
class Search:
    """One (study, engine) search run and its trials in the order they started."""
    run_id: str
    study: str
    engine: str
    seed: str
    budget: dict
    trials: list = field(default_factory=list)
    storage: str | None = None  # the Optuna storage URL an Optuna search logged

    @property
    def finished(self) -> list[dict]:
        return [t for t in self.trials if t["status"] == "finished" and finite(t.get("rmse"))]


def _trial_row(run) -> dict:
    m, t, p = run.data.metrics, run.data.tags, run.data.params
    end = run.info.end_time or run.info.start_time
    return {"run_id": run.info.run_id, "engine": t.get("fkp_engine", "?"), "study": t.get("fkp_study", ""),
            "trial": t.get("fkp_trial", ""), "status": t.get("fkp_status", "running"), "model": p.get("model", ""),
            "start": run.info.start_time / 1000, "duration_s": max(0.0, (end - run.info.start_time) / 1000),
            **{k: m.get(k) for k in ("rmse", "test_rmse", "params", "size_mb", "inference_s_per_100", "latency_ms",
                                     "mean_face_rmse", "mean_face_test_rmse", "epochs")},
            "hyperparameters": p, "tags": t}


def searches(tracker, studies: list[str] | None = None) -> list[Search]:
    """Every search run of the given studies (default: the newest study and its repeats, see below)."""
    parents = tracker.client.search_runs([tracker.experiment_id], "tags.fkp_role = 'search'",
                                         order_by=["attributes.start_time ASC"], max_results=5000)
    parents = [p for p in parents if "cell_model" not in p.data.params]
    trials = tracker.trials()
    by_parent: dict = {}
    for run in trials:
        by_parent.setdefault(run.data.tags.get("mlflow.parentRunId"), []).append(run)
    out = []
    for parent in parents:
        tags, params = parent.data.tags, parent.data.params
        runs = sorted(by_parent.get(parent.info.run_id, []), key=lambda r: r.info.start_time)
        first = runs[0].data.tags if runs else {}
        budget = {k: first.get(k, tags.get(k)) for k in BUDGET_TAGS}
        budget["epochs"] = budget.pop("max_epochs") or params.get("epochs")
        budget["data_sha"] = budget["data_sha"] or params.get("data_sha")
        budget["trials"] = params.get("trials")
        out.append(Search(parent.info.run_id, tags.get("fkp_study", ""), tags.get("fkp_engine", "?"),
                          first.get("seed") or params.get("seed", "?"), budget, [_trial_row(r) for r in runs],
                          params.get("storage")))
    if studies:
        return [s for s in out if s.study in studies]
    if not out:
        return []
    # Default: the newest study, and every study run on the same data and budget with another seed
    # (repeats), so engines are compared on the same space and budget.
    newest = max(out, key=lambda s: s.trials[-1]["start"] if s.trials else 0)
    return [s for s in out if s.budget == newest.budget]


def budgets(found: list[Search]) -> list[tuple[dict, list[Search]]]:
    groups: list = []
    for s in found:
        for budget, members in groups:
            if budget == s.budget:
                members.append(s)
                break
        else:
            groups.append((s.budget, [s]))
    return groups


def has_test(found: list[Search]) -> bool:
    return any(finite(t.get("test_rmse")) for s in found for t in s.finished)


def best_so_far(search: Search, use_test: bool) -> list[tuple[int, float, float]]:
    """(trials spent, seconds spent in trials, score of the incumbent) after each trial.

    The incumbent is the trial with the lowest validation RMSE so far (what the engine would pick); its
    score is its test RMSE when the store has one, else its validation RMSE. Trials cut off by Ctrl-C or a
    killed process do not count; seconds add trial durations, so pauses between resumes do not count."""
    points, best, spent, count = [], None, 0.0, 0
    for t in search.trials:
        if t["status"] in ("killed", "running"):
            continue
        count += 1
        spent += t["duration_s"]
        if t["status"] == "finished" and finite(t.get("rmse")) and (best is None or t["rmse"] < best["rmse"]):
            if not use_test or finite(t.get("test_rmse")):
                best = t
        if best is not None:
            points.append((count, spent, best["test_rmse"] if use_test else best["rmse"]))
    return points


def pareto(rows: list[dict], keys=("test_rmse", "inference_s_per_100", "params")) -> list[bool]:
    """True where no other row is at least as good on every key and better on one."""
    flags = []
    for r in rows:
        dominated = any(all(o[k] <= r[k] for k in keys) and any(o[k] < r[k] for k in keys) for o in rows)
        flags.append(not dominated)
    return flags


def importances(found: list[Search]) -> tuple[dict, str]:
    """Hyperparameter importances for validation RMSE from the Optuna studies among `found` (Optuna's
    default evaluator; averaged over repeats), or an empty dict and the reason there are none."""
    opt = [s for s in found if s.engine == "optuna"]
    if not opt:
        return {}, "no Optuna search in this study, so no importances (they come from an Optuna study)"
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done: dict = {}
    reasons = []
    for s in opt:
        try:
            study = optuna.load_study(study_name=s.study, storage=s.storage)
        except Exception as exc:
            reasons.append(f"Optuna study {s.study!r} could not be opened ({type(exc).__name__})")
            continue
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if len(study.directions) != 1 or len(complete) < 2:
            reasons.append(f"Optuna study {s.study!r} has {len(complete)} complete trial(s)"
                           + ("" if len(study.directions) == 1 else " and several objectives"))
            continue
        try:
            with warnings.catch_warnings():  # "fewer than 2 trials in some regime": said in the report instead
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study)
            for name, value in found.items():
                done.setdefault(name, []).append(value)
        except Exception as exc:
            reasons.append(f"importances of {s.study!r} failed: {type(exc).__name__}: {exc}"[:200])
    if not done:
        return {}, "; ".join(reasons) or "no importances"
    means = {k: sum(v) / len(v) for k, v in done.items()}
    return dict(sorted(means.items(), key=lambda kv: -kv[1])), ""


# ---- the worst-predicted faces ---------------------------------------------------------------
@dataclass
class Faces:
    images: object
    true: object
    pred: object
    rmse: list
    source: str  # what they are, in words


def worst_faces(tracker, trial: dict, n: int = 6) -> tuple[Faces | None, str]:
    """The test faces the best trial's model predicts worst, recomputed from its logged model on the
    test split it was scored on. Returns (faces, "") or (None, why not)."""
    import numpy as np
    tags = trial["tags"]
    parent = tracker.client.get_run(tags["mlflow.parentRunId"]).data.params if tags.get("mlflow.parentRunId") else {}
    path = parent.get("data")
    if not path or not Path(path).exists():
        return None, f"the data file the study trained on ({path or 'unknown'}) is not here"
    try:
        from train import data as data_mod
        from train.split import split3
    except ImportError as exc:
        return None, f"this checkout cannot rebuild the test split ({exc})"
    data = data_mod.load(path)
    if tags.get("data_sha") and tags["data_sha"] != data.sha:
        return None, f"{path} changed since the study ran (hash {data.sha[:12]}, study {tags['data_sha'][:12]})"
    method, fractions = _split_of(tags, parent)
    if fractions is None:
        return None, "the trial did not record its test split"
    _, _, test_idx = split3(data, fractions[0], fractions[1], method, int(tags.get("seed", parent.get("seed", 0))))
    if not len(test_idx):
        return None, "the test split is empty"
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fkp-report-") as tmp:
        local = tracker.client.download_artifacts(trial["run_id"], "model.keras", tmp)
        model = _load(local)
        from train import metrics
        images, true = data.images[test_idx], data.keypoints[test_idx]
        pred = metrics.predict(model, images)
    err = np.where(np.isfinite(true), (pred - np.nan_to_num(true)) ** 2, np.nan)
    per_face = np.sqrt(np.nanmean(err, axis=1))
    order = [i for i in np.argsort(-np.nan_to_num(per_face, nan=-1.0)) if np.isfinite(per_face[i])][:n]
    return Faces(images[order], true[order], pred[order], [float(per_face[i]) for i in order],
                 f"The {len(order)} worst of {len(test_idx)} test faces for {trial['engine']} trial "
                 f"{trial['trial']} (the best by validation RMSE), recomputed from its logged model"), ""


def _load(path):
    import keras

    import train.losses  # noqa: F401  (registers the custom loss and metric)
    import train.models  # noqa: F401  (registers custom layers: the heatmap head's soft-argmax)
    return keras.models.load_model(path, compile=False)


def _split_of(tags: dict, parent: dict):
    """('group', (val, test)) from the trial's `split` tag ("group:val=0.15,test=0.15")."""
    text = tags.get("split")
    if text and ":" in text:
        method, rest = text.split(":", 1)
        values = dict(part.split("=") for part in rest.split(",") if "=" in part)
        if "val" in values and "test" in values:
            return method, (float(values["val"]), float(values["test"]))
    return parent.get("split", "group"), None
