"""python -m search.finalize: from a study's best trials to the one model to ship.

    python -m search.finalize --study NAME [--top-k 3 --seeds 2 --ensemble 3 --distil] --out docs/best

1. select: the study's top-k configs by validation RMSE (finished full-budget trials of any engine, read
   from MLflow), each retrained on `--seeds - 1` more weight seeds over the study's own split and settings
   (none for one candidate with a decaying schedule: nothing to choose); the config with the lowest mean
   validation RMSE is chosen. The test faces are not scored.
2. refit: the chosen config on training + validation faces. Epochs: the mean epoch at which its selection
   runs reached their best validation RMSE, times train/(train + validation) faces, so the refit makes
   as many optimizer steps as they did (Goodfellow et al., Deep Learning, 7.8); its schedule is planned
   over exactly those epochs.
3. ensemble (`--ensemble N`): refits of the N configs with the lowest mean validation RMSE; past the top-k,
   more weight seeds of them in turn, the chosen first (`ensemble_members`).
4. distil (`--distil`): the student (the chosen config, or `--student FILE`) trained like a refit but
   against the ensemble's predictions on every augmented batch plus the labels where they exist; beside
   it the same architecture trained alone; `--seeds` seeds of each.
5. the test split, scored once per model made above and never used to choose; the model shipped is
   declared by the flags: the distilled student (seed 0) with `--distil`, the ensemble with `--ship-ensemble`
   (when its members together fit the budget: a short search's few small configs), else the refit. Flip test-time
   augmentation of the shipped model is measured beside it, never shipped: it doubles the MACs per face.
6. export to `--out`: what docs/best holds (model.keras, fp16/int8 LiteRT with their RMSE change, config,
   metrics, the command), written beside it and swapped in whole.

`--timeout` shares the stage's time among its steps by their compute (search/stage_budget.py), each step's
schedule fitted to its share.

Every trained model and its result is kept under `--work` as it finishes: the same command, killed and
run again, trains only what had not finished. Logged to MLflow as one run linked to its study and trials.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from train.errors import UserError, check_training_code, cli

@dataclasses.dataclass
class Candidate:
    run_id: str
    trial: str
    rmse: float
    config: dict
    cid: str = ""

    def __post_init__(self):
        self.cid = hashlib.sha1(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def study_trials(tracker, study: str) -> tuple[list[dict], dict]:
    """The study's finished trials, best validation RMSE first, and the tags that say how the study trained them."""
    from tracking.leaderboard import collect, one_key
    rows, _ = one_key(collect(tracker, study))
    if not rows:
        raise UserError(f"study {study!r} has no finished trial to finalize (in {tracker.uri})")
    rows = sorted(rows, key=lambda r: r["rmse"])
    return rows, tracker.client.get_run(rows[0]["run_id"]).data.tags


def study_candidates(tracker, rows: list[dict], study: str, top_k: int, fits=None) -> list[Candidate]:
    """The top-k of `rows` (study_trials) whose config passes `fits` (None: all)."""
    import os
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per config.json, on stderr
    if top_k > len(rows):
        raise UserError(f"--top-k {top_k} is larger than the {len(rows)} finished trial(s) of study {study!r}")
    chosen, refused = [], []
    for row in rows:
        local = tracker.client.download_artifacts(row["run_id"], "config.json")
        cand = Candidate(row["run_id"], str(row["trial"]), float(row["rmse"]), json.loads(Path(local).read_text()))
        why = fits(cand.config) if fits else None
        if why:
            refused.append(f"trial {cand.trial}: {why}")
            continue
        chosen.append(cand)
        if len(chosen) == top_k:
            return chosen
    raise UserError(f"--top-k {top_k}: only {len(chosen)} of the {len(rows)} finished trial(s) of study {study!r} "
                    f"fit --max-params/--max-mmacs (best refused, {refused[0]}): lower --top-k, or --distil into "
                    "a --student within the budget")


def study_settings(tags: dict, data):
    """The search's own TrialSettings, read back from the tags every trial run carries."""
    from train.trial import TRAINING_CODE, TrialSettings
    # its own scores would be averaged with seeds retrained by this code
    check_training_code(f"study {tags.get('fkp_study', '?')!r}", tags.get("training_code", 1), TRAINING_CODE,
                        "finalize a study searched by this code")
    if tags.get("data_sha") and tags["data_sha"] != data.sha:
        raise UserError(f"{data.path}: not the study's data (its sha {data.sha[:12]}, the study's "
                        f"{tags['data_sha'][:12]}): pass the --data the study was made on")
    split, _, fractions = tags.get("split", "group:val=0.15,test=0.15").partition(":")
    frac = dict(part.split("=") for part in fractions.split(",") if "=" in part)
    none = lambda v, t: None if v in (None, "", "none", "None") else t(v)  # noqa: E731
    return TrialSettings(epochs=int(tags.get("max_epochs", 30)), patience=int(tags.get("patience", 5)),
                         val_fraction=float(frac.get("val", 0.15)), test_fraction=float(frac.get("test", 0.15)),
                         split=split, seed=int(tags.get("seed", 0)), max_params=none(tags.get("max_params"), int),
                         max_mmacs=none(tags.get("max_mmacs"), float))


class Steps:
    """Each finished training kept on disk (model + result) under a name that says what it trained (config hash,
    seed, teacher); a rerun loads instead of training. Stages of one study with other --top-k, --ensemble,
    --student or budgets share the work folder and its steps; other data or training settings are refused."""

    def __init__(self, work: Path, plan: dict):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        state = work / "state.json"
        self.state = json.loads(state.read_text()) if state.exists() else {"plan": plan, "steps": {}}
        self.used: list[str] = []  # this stage's steps, trained now or kept: what the stage costs
        self.stage = None  # the key of the stage training steps now (finalize's _stage_key)
        kept = {"data_sha": self.state["plan"].get("data_sha"),
                "settings": _training(self.state["plan"].get("settings", {})),
                "training_code": self.state["plan"].get("training_code", 1)}
        check_training_code(str(work), kept["training_code"], plan["training_code"],
                            "pass another --work, or delete it to start over")
        if kept != plan:
            diff = sorted(k for k in {*plan, *kept} if plan.get(k) != kept.get(k))
            raise UserError(f"{work}: a final stage of other settings ({', '.join(diff)}) is kept here: pass another "
                            "--work, or delete it to start over")
        self._save()

    def _save(self):
        """Merge with what is on disk under a lock: two stages of one study may run at once on one folder, and
        each must keep the other's finished steps."""
        import fcntl
        with open(self.work / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._reload()
            tmp = self.work / "state.json.tmp"
            tmp.write_text(json.dumps(self.state, indent=2, default=float))
            tmp.replace(self.work / "state.json")  # a kill never leaves half a state file

    def _reload(self):
        path = self.work / "state.json"
        if path.exists():
            self.state["steps"] = {**json.loads(path.read_text())["steps"], **self.state["steps"]}

    def done(self, name: str) -> dict | None:
        return self.state["steps"].get(name)

    def run(self, name: str, train, epochs: int, seconds_left=None) -> dict:
        """`train(folder, on_epoch, seconds_left, on_replan)` trains one model of `epochs` epochs into `folder`;
        `seconds_left` (a --timeout's slot, or None) may fit its schedule into fewer."""
        self._reload()  # another stage on this folder may have trained it meanwhile
        self.used += [name] if name not in self.used else []
        kept = self.state["steps"].get(name)
        # a step trained in a --timeout's slot may be short, and a student distilled from short teachers: kept
        # for stages with a time budget, trained again in full by a stage without one
        if kept and (seconds_left is not None or not kept.get("timed")):
            print(f"[finalize] {name}: done before, kept", flush=True)
            return kept
        folder = self.work / name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        print(f"[finalize] {name}: training" + (f" in {seconds_left():.0f} s" if seconds_left else ""), flush=True)
        tick = _Ticker(name, epochs)
        result = train(folder, tick, seconds_left, tick.replan)
        (folder / "config.json").write_text(json.dumps(result.config, indent=2, sort_keys=True, default=str))
        entry = {"metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
                 "best_epoch": int(np.nanargmin(result.history["val_rmse"])) + 1 if result.history.get("val_rmse")
                 else result.metrics["epochs"], "model": str(folder / "model.keras"),
                 "train_images": result.metrics["train_images"], "timed": seconds_left is not None,
                 "fitted_to": tick.end if tick.end < epochs else None, "stage": self.stage}
        self.state["steps"][name] = entry
        self._save()
        m = entry["metrics"]
        scores = [f"{label} {m[k]:.3f} px" for label, k in (("val", "rmse"), ("test", "test_rmse")) if m[k] == m[k]]
        print(f"[finalize] {name}: {', '.join(scores)}, {m['epochs']} epochs, {m['train_s']:.0f} s", flush=True)
        return entry

    def model(self, name: str):
        from train.model_io import keras_model
        return keras_model(Path(self.state["steps"][name]["model"]).parent)


def finalize(args, tracker, data, log=print) -> dict:
    """The study's budget trains the candidates and the ensemble (teachers); --max-params/--max-mmacs bound what
    ships: the chosen config, or with --distil the student. So an edge-sized model can learn from big teachers."""
    from train.trial import run_trial
    if args.teacher_tta and not args.distil:
        raise UserError("--teacher-tta is the distillation teacher's: pass --distil and --ensemble 2 or more with it")
    if args.student and not args.distil:
        raise UserError("--student is the distilled model: pass --distil and --ensemble 2 or more with it")
    if args.ship_ensemble and (args.distil or args.ensemble < 2):
        raise UserError("--ship-ensemble ships the refits averaged: pass --ensemble 2 or more, without --distil")
    rows, tags = study_trials(tracker, args.study)  # read once: the tags set the budgets the candidates are read under
    base = study_settings(tags, data)  # the study's own budget: selection runs and teachers train under it
    ship = dataclasses.replace(base, **{k: (v or None) for k, v in (("max_params", args.max_params),
                                                                     ("max_mmacs", args.max_mmacs)) if v is not None})
    student_cfg = None
    if args.student:
        from train.fit import load_config
        student_cfg = load_config(args.student)
        _check_budget(student_cfg, ship, f"--student {args.student}")
    shipped_fits = None if args.distil else (lambda cfg: _over_budget(cfg, ship))
    candidates = study_candidates(tracker, rows, args.study, args.top_k, shipped_fits)
    if args.distil and student_cfg is None:  # the chosen config is the student: whichever is chosen must fit
        for c in candidates:
            _check_budget(c.config, ship, f"trial {c.trial} (pass a --student within the budget)")
    from train.trial import TRAINING_CODE
    plan = {"data_sha": data.sha, "settings": _training(dataclasses.asdict(base)), "training_code": TRAINING_CODE}
    steps = Steps(Path(args.work or Path("runs") / "finalize" / args.study), plan)  # beside ./mlruns
    stage_key = _stage_key(args)
    steps.stage = stage_key
    select = dataclasses.replace(base, score_test=False)

    from train.split import split3
    train_idx, val_idx, test_idx = split3(data, base.val_fraction, base.test_fraction, base.split, base.seed)
    n_train, n_val = len(train_idx), len(val_idx)
    budget = planner = None
    if args.timeout:  # planning builds every config to count its MACs: only a time budget needs it
        from search.stage_budget import StageBudget
        planner = _StepPlan(student_cfg, n_train, n_val, base.epochs)
        # before the choice, the plan assumes the study's best is chosen; planned again once the choice is made
        step_plan = planner.plan(candidates, candidates, args)
        names = {p.name for p in step_plan}  # a student's seed alone is also an ensemble member: trained once
        # what this same stage spent before a kill; steps kept from other stages cost it nothing
        used = sum(e["metrics"]["train_s"] for e in steps.state["steps"].values() if e.get("stage") == stage_key)
        budget = StageBudget(args.timeout, used=used)
        log(f"[finalize] --timeout {args.timeout:.0f} s: {len(names)} steps planned, {budget.left():.0f} s to "
            f"train them{f' ({used:.0f} s spent by the steps kept from an earlier run)' if used else ''}")

    def slot(name):
        return budget.slot(name, step_plan, steps.done) if budget else None

    # 1. select on more than one seed; the study's own trial is seed 0
    scores = {}
    if _selection_seeds(candidates, args) < args.seeds:
        log("[finalize] one candidate with a decaying schedule: nothing to choose, no refit epochs to read, so no "
            "selection runs")
    for c in candidates:
        vals, best_epochs, trained = [c.rmse], [], []
        for seed in range(1, _selection_seeds(candidates, args)):
            name = select_step(c.cid, seed)
            e = steps.run(name, lambda out, tick, left, replan, c=c, seed=seed: run_trial(
                c.config, data, dataclasses.replace(select, train_seed=seed), out_dir=out, on_epoch=tick,
                seconds_left=left, on_replan=replan), select.epochs, slot(name))
            vals.append(e["metrics"]["rmse"])
            best_epochs.append(e["best_epoch"])
            # a run fitted to its time ended its schedule; it did not stop early (refit_epochs reads that)
            trained.append(select.epochs if e.get("fitted_to") else int(e["metrics"]["epochs"]))
        scores[c.cid] = {"trial": c.trial, "run_id": c.run_id, "val_rmse": vals, "mean_val_rmse": float(np.mean(vals)),
                         "best_epochs": best_epochs, "epochs_trained": trained}
        log(f"[finalize] trial {c.trial} ({c.cid}): validation RMSE {', '.join(f'{v:.3f}' for v in vals)} "
            f"-> mean {np.mean(vals):.3f} px")
    ranked = sorted(candidates, key=lambda c: scores[c.cid]["mean_val_rmse"])
    chosen = ranked[0]
    log(f"[finalize] chosen: trial {chosen.trial} ({chosen.cid}), mean validation RMSE "
        f"{scores[chosen.cid]['mean_val_rmse']:.3f} px over {len(scores[chosen.cid]['val_rmse'])} seed(s)")

    # 2. refit with as many optimizer steps as the selection runs made
    from train.models import resolve
    epochs, why = refit_epochs(scores[chosen.cid]["best_epochs"], scores[chosen.cid]["epochs_trained"], base.epochs,
                               resolve(chosen.config).get("schedule", "constant"), n_train, n_val)
    refit = dataclasses.replace(base, refit=True, epochs=epochs)
    log(f"[finalize] refit: {epochs} epochs on {n_train + n_val} faces ({why})")
    planned = ensemble_members(ranked, args.ensemble)
    if planner:
        planner.refit_epochs = epochs
        step_plan = planner.plan(ranked, candidates, args)
    if args.ship_ensemble:  # the members are known only now; none of them has trained yet
        _check_budget([c.config for c, _ in planned], ship, f"--ship-ensemble: the {len(planned)} refits averaged "
                      "(the selection runs are kept, so a smaller --ensemble starts from them)")

    def refit_of(config, seed, name, teacher=lambda: None, settings=refit):
        """`teacher`: made only if this step trains (loading an ensemble is not free)."""
        return steps.run(name, lambda out, tick, left, replan: run_trial(
            config, data, dataclasses.replace(settings, train_seed=seed), out_dir=out, on_epoch=tick,
            teacher=teacher(), distil_alpha=args.alpha, seconds_left=left, on_replan=replan), settings.epochs,
            slot(name))

    members = []
    for c, seed in planned:  # the chosen config's seed 0 first: the refit
        members.append(refit_step(c.cid, seed))
        refit_of(c.config, seed, members[-1])
    images, truth = data.images[test_idx], data.keypoints[test_idx]
    from train import metrics
    # the mean face of the study's training split: the floor a trial reports, so readers can tell the split is its
    floor = metrics.mean_face_rmse(data.keypoints[train_idx], truth)
    report = {"study": args.study, "chosen": scores[chosen.cid], "selection": scores, "refit_epochs": epochs,
              "train_faces": n_train, "val_faces": n_val, "mean_face_test_rmse": floor, "models": {}}
    report["models"]["refit"] = _scored(steps.model(refit_step(chosen.cid, 0)), images, truth)
    if args.ensemble > 1:
        from train.ensemble import average
        ensemble = average([steps.model(m) for m in members])
        report["models"]["ensemble"] = _scored(ensemble, images, truth, members=len(members))
        if args.teacher_tta:
            report["models"]["ensemble_flip_tta"] = {**_flip_tta(ensemble, images, truth), "members": len(members)}
    shipped = ENSEMBLE if args.ship_ensemble else refit_step(chosen.cid, 0)

    # 4. distil the ensemble into the student, beside the same architecture trained alone
    if args.distil:
        if args.ensemble < 2:
            raise UserError("--distil needs an ensemble to learn from: --ensemble 2 or more")
        student = student_cfg or chosen.config
        sid = Candidate("", "", 0.0, student).cid
        # the teacher in the name: another ensemble or --alpha in the same --work is another model, never reused
        teacher_id = _teacher_id(members, args)

        def teacher():
            ensemble = average([steps.model(m) for m in members])
            if args.teacher_tta:
                from train.tta import flip_average
                return flip_average(ensemble)
            return ensemble
        small = dataclasses.replace(refit, max_params=ship.max_params, max_mmacs=ship.max_mmacs)
        for seed in range(args.seeds):
            alone = refit_step(sid, seed)
            refit_of(student, seed, alone, settings=small)
            report["models"][f"alone_seed{seed}"] = _scored(steps.model(alone), images, truth)
            name = distil_step(sid, teacher_id, seed)
            refit_of(student, seed, name, teacher=teacher, settings=small)
            report["models"][f"student_seed{seed}"] = _scored(steps.model(name), images, truth)
        gain = [report["models"][f"alone_seed{s}"]["test_rmse"] - report["models"][f"student_seed{s}"]["test_rmse"]
                for s in range(args.seeds)]
        report["distillation_gain_px"] = {"per_seed": gain, "mean": float(np.mean(gain))}
        shipped = distil_step(sid, teacher_id, 0)
    report["shipped"] = shipped
    report["training_s"] = {name: steps.state["steps"][name]["metrics"]["train_s"] for name in steps.used}
    report["epochs_trained"] = {name: int(steps.state["steps"][name]["metrics"]["epochs"]) for name in steps.used}
    if budget:
        report["timeout_s"] = args.timeout
    # loaded (or, for an ensemble, built) once: scored with flip TTA here, exported by main
    model = ensemble if shipped == ENSEMBLE else steps.model(shipped)
    report["flip_tta"] = _flip_tta(model, images, truth)
    for name, m in report["models"].items():
        log(f"[finalize] {name:>14}: test RMSE {m['test_rmse']:.3f} px | {m['params']:,} params | "
            f"{m['mmacs']:.1f}M MACs | {m['inference_s_per_100']:.3f} s/100")
    tta = report["flip_tta"]
    log(f"[finalize] flip TTA on {shipped}: test RMSE {tta['test_rmse']:.3f} px at {tta['mmacs']:.1f}M MACs "
        "(twice the compute per face: measured, not shipped)")
    return {"report": report, "steps": steps, "ship": shipped, "model": model, "members": members, "images": images,
            "truth": truth, "candidates": candidates, "chosen": chosen}


def _stage_key(args) -> str:
    """The stage a step was trained by: the same command resumed is the same stage, and its clock goes on."""
    keys = ("study", "top_k", "seeds", "ensemble", "distil", "student", "alpha", "teacher_tta", "ship_ensemble",
            "max_params", "max_mmacs", "timeout")
    return hashlib.sha1(json.dumps([getattr(args, k) for k in keys], default=str).encode()).hexdigest()[:8]


def select_step(cid: str, seed: int) -> str:
    return f"select/{cid}/seed{seed}"


def refit_step(cid: str, seed: int) -> str:
    return f"refit/{cid}/seed{seed}"


def distil_step(sid: str, teacher_id: str, seed: int) -> str:
    return f"distil/{sid}-{teacher_id}/seed{seed}"


def _selection_seeds(candidates: list, args) -> int:
    """Seeds per candidate, the study's own run included. One candidate has nothing to be chosen over; with a
    schedule that decays over the budget its seeds would not set the refit's epochs either (refit_epochs), so they
    would cost a run each and decide nothing. `--seeds` still sets the students' seeds."""
    from train.models import resolve
    if len(candidates) == 1 and resolve(candidates[0].config).get("schedule", "constant") != "constant":
        return 1
    return args.seeds


def _teacher_id(members: list[str], args) -> str:
    """The teacher in a student's name: another ensemble or --alpha in the same --work is another model, never
    reused."""
    return hashlib.sha1(json.dumps([members, args.alpha] + (["flip_tta"] if args.teacher_tta else []))
                        .encode()).hexdigest()[:8]


class _StepPlan:
    """The stage's steps in the order finalize trains them, with what each costs: what a --timeout shares out."""

    def __init__(self, student_cfg, n_train: int, n_val: int, epochs: int):
        self.student_cfg, self.n_train, self.n_val = student_cfg, n_train, n_val
        self.select_epochs = self.refit_epochs = epochs
        self._mmacs = {}

    def mmacs(self, config: dict) -> float:
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in self._mmacs:
            from train import metrics
            from train.models import build, resolve
            self._mmacs[key] = metrics.mmacs(build(resolve(config)))
        return self._mmacs[key]

    def plan(self, ranked: list, candidates: list, args) -> list:
        """`ranked`: the candidates best first (before the choice: the study's order)."""
        from search.stage_budget import Planned, train_cost
        faces = self.n_train + self.n_val
        steps = [Planned(select_step(c.cid, seed), train_cost(self.mmacs(c.config), self.n_train,
                                                                    self.select_epochs))
                 for c in candidates for seed in range(1, _selection_seeds(candidates, args))]
        members = ensemble_members(ranked, args.ensemble)
        names = [refit_step(c.cid, seed) for c, seed in members]
        steps += [Planned(n, train_cost(self.mmacs(c.config), faces, self.refit_epochs))
                  for n, (c, _) in zip(names, members)]
        if args.distil and args.ensemble > 1:
            student = self.student_cfg or ranked[0].config
            sid, own = Candidate("", "", 0.0, student).cid, self.mmacs(student)
            teacher = sum(self.mmacs(c.config) for c, _ in members) * (2 if args.teacher_tta else 1)
            for seed in range(args.seeds):
                steps += [Planned(refit_step(sid, seed), train_cost(own, faces, self.refit_epochs)),
                          Planned(distil_step(sid, _teacher_id(names, args), seed),
                                  train_cost(own, faces, self.refit_epochs, teacher))]
        return steps


ENSEMBLE = "ensemble"  # what --ship-ensemble ships: no one step, the refits averaged into one Keras model


def shipped_key(shipped: str) -> str:
    """The shipped model's entry in the report's "models"."""
    return "student_seed0" if shipped.startswith("distil") else ENSEMBLE if shipped == ENSEMBLE else "refit"


def ensemble_members(ranked: list, n: int) -> list[tuple]:
    """(candidate, seed) of each of the `n` refits averaged: the best configs at seed 0, then their next seeds in
    turn. A short search may finish one or two configs at the full budget; seeds still make it an ensemble."""
    return [(ranked[i % len(ranked)], i // len(ranked)) for i in range(n)]


def refit_epochs(best_epochs: list, trained: list, budget: int, schedule: str, n_train: int,
                 n_val: int) -> tuple[int, str]:
    """Epochs for the refit on train + validation faces, and why. `trained`: the epochs each selection run trained.

    A schedule that decays over the budget (cosine, one-cycle) is at its best near its last epoch by design, and
    cutting it changes its shape, not just its length: such a refit keeps the budget. So does a constant rate when a
    selection run used its whole budget (early stopping never fired: it may still have been improving). Only when
    every run stopped early does the refit make as many optimizer steps as their best epoch did on fewer faces
    (Goodfellow et al., Deep Learning, 7.8)."""
    if not best_epochs:
        return budget, f"the study's {budget} epochs: no selection run to read a best epoch from"
    if schedule != "constant":
        return budget, f"the study's {budget} epochs: the {schedule} schedule is planned over them"
    if not trained or max(trained) >= budget:
        return budget, f"the study's {budget} epochs: a selection run used them all, so early stopping never fired"
    best = float(np.mean(best_epochs))
    return (max(1, round(best * n_train / (n_train + n_val))),
            f"best epoch {best:.1f} on {n_train} faces, the same optimizer steps")


class _Ticker:
    """A progress line every few epochs: a step trains for minutes, and a silent one looks hung."""

    def __init__(self, name: str, epochs: int, every: int = 5):
        import time
        self.name, self.end, self.every, self.start = name, epochs, every, time.perf_counter()

    def replan(self, end: int) -> None:
        """A --timeout's slot moved the step's end: later lines count to it."""
        if end != self.end:
            print(f"[finalize] {self.name}: schedule fitted to its time, {end} epochs", flush=True)
        self.end = end

    def __call__(self, epoch: int, logs: dict) -> None:
        import time

        from search.progress import clock
        done = epoch + 1
        if done % self.every and done != self.end:
            return
        took = time.perf_counter() - self.start
        seen = "".join(f", {label} RMSE {logs[k]:.3f} px" for label, k in (("train", "rmse"), ("val", "val_rmse"))
                       if k in logs)
        print(f"[finalize] {self.name}: epoch {done}/{self.end}{seen}, {clock(took)} used, "
              f"~{clock(took / done * max(0, self.end - done))} left", flush=True)


def _over_budget(config: dict | list, settings) -> str | None:
    """Why `config` (or a list of them, averaged as one ensemble) does not fit the budget of `settings`, or None:
    built, never trained."""
    from train.ensemble import average
    from train.errors import Rejected
    from train.models import build, resolve
    from train.trial import check_limits
    try:
        check_limits(average([build(resolve(c)) for c in (config if isinstance(config, list) else [config])]),
                     settings)
    except Rejected as exc:
        return str(exc)
    return None


def _check_budget(config: dict, settings, what: str) -> None:
    """A student or chosen config over --max-params/--max-mmacs: one line before any training."""
    why = _over_budget(config, settings)
    if why:
        raise UserError(f"{what}: {why} (--max-params/--max-mmacs)")


def _training(settings: dict) -> dict:
    """What makes two trainings the same: a step kept under one budget is reused under another (the budget
    only refuses a model, it never changes one)."""
    return {k: v for k, v in settings.items() if k not in ("max_params", "max_mmacs", "verbose")}


def _scored(model, images, truth, **extra) -> dict:
    from train import metrics
    pred = metrics.predict(model, images[..., None].astype(np.float32))
    return {"test_rmse": metrics.rmse(truth, pred), "params": int(model.count_params()),
            "mmacs": metrics.mmacs(model), **metrics.inference_time(model), **extra}


def _flip_tta(model, images, truth) -> dict:
    """The shipped model with flip test-time augmentation: the same weights, run twice per face."""
    from train import metrics
    from train.tta import flip_average
    return {**_scored(flip_average(model), images, truth), "mmacs": 2 * metrics.mmacs(model)}


def export(out: Path, model, config: dict, report: dict, images, truth, command: str) -> None:
    """Write beside `out`, then swap it in: a kill at any point leaves the old folder whole (or, between the
    two renames, whole under OUT.old, put back by the next run)."""
    import shutil

    from train import litert, metrics
    out = Path(out)
    old, new = out.with_name(out.name + ".old"), out.with_name(out.name + ".new")
    if old.exists() and not out.exists():
        old.rename(out)
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    metrics.save_model(model, new / "model.keras")
    lite = litert.export(model, new, ["fp16", "int8"], images, truth)
    (new / "litert.json").write_text(json.dumps(lite, indent=2))
    (new / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    key = shipped_key(report["shipped"])
    epochs = report.get("epochs_trained", {}).get(report["shipped"], report["refit_epochs"])  # a --timeout's fit
    shipped = {**report["models"][key], "epochs": epochs,
               "mean_face_test_rmse": report["mean_face_test_rmse"],
               "size_mb": (new / "model.keras").stat().st_size / 1e6}  # what a trial's metrics.json says too
    (new / "metrics.json").write_text(json.dumps(shipped, indent=2, sort_keys=True))
    (new / "finalize.json").write_text(json.dumps(report, indent=2, default=float))
    from tracking import plots
    plots.predictions(images, truth, metrics.predict(model, images[:6]), new / "predictions.png", faces="Test faces")
    models = {**report["models"], **({"flip TTA": report["flip_tta"]} if "flip_tta" in report else {})}
    plots.final_models(models, key, new / "models.png")
    (new / "COMMAND.md").write_text(f"# How this folder was made\n\n    {command}\n\n"
                                    "`finalize.json` holds every step: selection seeds, refit epochs, ensemble, "
                                    "distillation and what each model scored on the test split (`models.png` "
                                    "shows them; `predictions.png`: the shipped model on test faces).\n")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def log_run(tracker, result, out: Path | None) -> str:
    """One MLflow run for the stage, linked to its study and its source trials."""
    from mlflow.entities import Metric, RunTag
    report = result["report"]
    run = tracker.client.create_run(tracker.experiment_id, run_name=f"finalize-{report['study']}", tags={
        "fkp_role": "finalize", "fkp_study": report["study"], "fkp_space": tracker.experiment,
        "fkp_source_runs": ",".join(c.run_id for c in result["candidates"]),
        "fkp_chosen_run": result["chosen"].run_id, "fkp_shipped": report["shipped"]})
    metrics = [Metric(f"{name}_{k}", float(v), 0, 0) for name, m in report["models"].items()
               for k, v in m.items() if isinstance(v, (int, float))]
    metrics.append(Metric("refit_epochs", float(report["refit_epochs"]), 0, 0))
    tracker.client.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag("fkp_status", "finished")])
    if out is not None:
        tracker.client.log_artifacts(run.info.run_id, str(out), "final")
    tracker.client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m search.finalize", description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--space", default="cnn", help="the MLflow experiment the study's runs are in")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--cluster", metavar="FILE", default=None, help="a cluster's credentials file")
    ap.add_argument("--data", default="../shared/data/training.csv.gz", help="the data the study was made on")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2, help="weight seeds per config, the study's own run included")
    ap.add_argument("--ensemble", type=int, default=1,
                    help="refits averaged: the top-k configs, then more seeds of them (1: no ensemble)")
    ap.add_argument("--distil", action="store_true", help="distil the ensemble into one student")
    ap.add_argument("--student", default=None, help="the student's config file (default: the chosen config)")
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the labels against the teacher's targets")
    ap.add_argument("--teacher-tta", action="store_true",
                    help="the teacher averages each face with its mirror: better targets, and the student, which "
                         "ships, pays nothing for it")
    ap.add_argument("--ship-ensemble", action="store_true",
                    help="ship the ensemble itself (its refits averaged in one Keras model) if it fits "
                         "--max-params/--max-mmacs, checked before any refit trains")
    ap.add_argument("--max-params", type=int, default=None, help="the student's budget (default: the study's)")
    ap.add_argument("--max-mmacs", type=float, default=None)
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds for the stage's training, shared among its steps by their compute; each step's "
                         "schedule is fitted to its share (default: none, every step trains its full budget)")
    ap.add_argument("--work", default=None, help="kept models and results (default: runs/finalize/STUDY)")
    ap.add_argument("--out", default=None, help="export the shipped model here (e.g. docs/best)")
    args = ap.parse_args(argv)
    for flag in ("top_k", "seeds", "ensemble"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    from search.stage_budget import TAIL_S
    if args.timeout is not None and args.timeout <= TAIL_S:
        raise UserError(f"--timeout {args.timeout:g}: must be over the {TAIL_S:.0f} s kept for scoring and the export")
    if not 0 <= args.alpha <= 1:
        raise UserError(f"--alpha {args.alpha}: must be between 0 and 1")
    return args


@cli
def main(argv=None):
    args = parse(argv)
    from tracking.mlflow_tracker import Tracker
    from train import data as data_mod
    if args.cluster:
        from search.cluster import use_credentials
        args.tracking_uri = use_credentials(args.cluster)["tracking_uri"]
    tracker = Tracker(args.space, args.tracking_uri)
    candidates_only = tracker.trials(study=args.study)  # a study that does not exist: refused before the data loads
    if not candidates_only and not tracker.searches(args.study):
        raise UserError(f"study {args.study!r} does not exist in {tracker.uri} (experiment {args.space!r})")
    data = data_mod.load(args.data)
    result = finalize(args, tracker, data)
    out = Path(args.out) if args.out else None
    if out is not None:
        command = " ".join(["python -m search.finalize", *(sys.argv[1:] if argv is None else argv)])
        export(out, result["model"], _config_of(result), result["report"], result["images"], result["truth"],
               command)
        print(f"[finalize] exported {result['ship']} to {out}")
    run_id = log_run(tracker, result, out)
    gain = result["report"].get("distillation_gain_px")
    if gain:
        print(f"[finalize] distillation: {gain['mean']:+.3f} px test RMSE against the student trained alone "
              f"(mean over {len(gain['per_seed'])} seeds)")
    print(f"[finalize] MLflow run {run_id}")


def _config_of(result) -> dict:
    def config(step):
        return json.loads((Path(result["steps"].state["steps"][step]["model"]).parent / "config.json").read_text())
    if result["ship"] == ENSEMBLE:
        return {"model": ENSEMBLE, "members": [config(m) for m in result["members"]]}
    return config(result["ship"])


if __name__ == "__main__":
    main()
