"""The main command: search a space with manual configs, Optuna and/or Keras Tuner.

python -m search.run --space cnn [--engine optuna|keras-tuner|manual|all] [--trials N] [--epochs E]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from search.keras_tuner_engine import TUNERS, KerasTunerEngine
from search.manual_engine import ManualEngine
from search.optuna_engine import PRUNERS, SAMPLERS, OptunaEngine
from spaces import paper as paper_space
from train.cli_args import add_training_flags, settings_from
from train.errors import UserError, cli

ENGINES = ("manual", "optuna", "keras-tuner")


@dataclass
class Budget:
    trials: int
    timeout: float | None
    seed: int
    study: str


def make_engines(args) -> list:
    names = ENGINES if args.engine == "all" else (args.engine,)
    engines = []
    for name in names:
        if name == "manual":
            configs = []
            for path in args.config or []:
                from train.fit import load_config
                loaded = load_config(path)
                configs += loaded if isinstance(loaded, list) else [loaded]
            engines.append(ManualEngine(configs, include_presets=not args.no_presets))
        elif name == "optuna":
            engines.append(OptunaEngine(args.sampler, args.pruner, args.storage, args.objectives.split(",")))
        else:
            engines.append(KerasTunerEngine(args.tuner))
    return engines


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="cnn",
                    help="cnn, mobilenetv2, nasnetmobile, or paper (the paper's grid) (default: cnn)")
    ap.add_argument("--engine", choices=(*ENGINES, "all"), default="optuna")
    ap.add_argument("--trials", type=int, default=6, help="trials per engine (default: 6)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per engine (Optuna)")
    ap.add_argument("--study-name", default=None, help="default: the space name")
    ap.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    ap.add_argument("--pruner", choices=PRUNERS, default="median")
    ap.add_argument("--tuner", choices=TUNERS, default="random")
    ap.add_argument("--objectives", default="rmse",
                    help="comma list of rmse,latency,params,size,inference; several = multi-objective (Optuna)")
    ap.add_argument("--config", action="append", help="manual engine: JSON/YAML config file (repeatable)")
    ap.add_argument("--no-presets", action="store_true", help="manual engine: skip the space's presets")
    ap.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under mlruns/)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under mlruns/)")
    ap.add_argument("--kt-trials", type=int, default=3,
                    help="--space paper: trials of the Keras Tuner search behind the tuned-CNN row")
    ap.add_argument("--rows", default=None,
                    help="--space paper: comma list of grid rows to run (default: all). Rows: "
                         + ", ".join(paper_space.ROWS))
    add_training_flags(ap, epochs=5)
    args = ap.parse_args(argv)
    if args.rows is not None:
        if args.space != "paper":
            raise UserError("--rows selects rows of the paper's grid: use it with --space paper")
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        if not wanted or set(wanted) - set(paper_space.ROWS):
            raise UserError(f"--rows {args.rows!r}: choose from {', '.join(paper_space.ROWS)}")
        args.rows = wanted
    if args.trials < 1:
        raise UserError("--trials must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError("--timeout must be positive")
    return args


def run_engine(engine, space, tracker, data, settings, budget, params: dict) -> bool:
    """One engine over one study: parent run, dead-trial cleanup, the search. False if interrupted."""
    from search.progress import Progress
    from search.runner import TrialRunner
    parent = tracker.open_search(budget.study, engine.name, {**params, "engine": engine.name, **engine.describe()})
    for run in tracker.fail_dead_trials(parent):
        print(f"[{engine.name}] MLflow run {run.info.run_name} was cut off by a killed process: marked failed")
    runner = TrialRunner(data, settings, tracker, Progress(budget.trials, settings.epochs), budget.study, parent)
    try:
        engine.run(space, runner, budget)
    except KeyboardInterrupt:
        tracker.close_search(parent, "KILLED")
        print("\ninterrupted: finished trials are saved; run the same command to resume", file=sys.stderr)
        return False
    tracker.close_search(parent, "FINISHED")
    return True


@cli
def main(argv=None):
    args = parse(argv)
    import spaces
    from search.summary import print_summary
    from tracking import stores
    from tracking.mlflow_tracker import Tracker
    from train import data as data_mod

    space = spaces.get(args.space)
    if not space.params and args.engine not in ("manual", "optuna"):
        raise UserError(f"space {args.space!r} is a fixed grid: it runs with --engine manual")
    if not space.params:
        args.engine = "manual"
    engines = make_engines(args)  # flag errors surface before any data is read
    settings = settings_from(args)
    study = args.study_name or args.space
    data = data_mod.load(args.data)
    print(f"data: {args.data} ({len(data)} faces, {data.fully_labelled} fully labelled)", flush=True)
    params = {"space": args.space, "trials": args.trials, "epochs": args.epochs, "seed": args.seed,
              "data": args.data, "data_sha": data.sha, "split": args.split, "val_fraction": args.val_fraction}
    if args.space == "paper":
        from search.paper import grid
        space = grid(args, data, settings, params, run_engine)
        args.trials = len(space.presets)
    tracker = Tracker(args.space, args.tracking_uri)
    budget = Budget(args.trials, args.timeout, args.seed, study)
    interrupted = False
    for engine in engines:
        if not run_engine(engine, space, tracker, data, settings, budget, params):
            interrupted = True
            break
    print_summary(tracker, study, engines)
    print("\nBrowse the results:")
    print(f"  {stores.mlflow_ui_command(tracker.uri)}")
    for engine in engines:
        if engine.name == "optuna":
            print(f"  {stores.dashboard_command(engine.storage_url)}")
    named = f" --study {study}" if study != args.space else ""
    print(f"  python -m tracking.leaderboard --space {args.space}{named}")
    if args.space == "paper":
        print(f"  python -m tracking.report --space paper{named} --output docs/{study}")
    if interrupted:
        raise SystemExit(130)


if __name__ == "__main__":
    main()
