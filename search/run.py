"""The main command: search a space with manual configs, Optuna and/or Keras Tuner.

python -m search.run --space cnn [--engine optuna|keras-tuner|manual|all] [--trials N] [--epochs E]
"""
from __future__ import annotations

import argparse
import dataclasses

from search.engines import ENGINES
from search.keras_tuner_engine import TUNERS
from search.pruners import PRUNERS
from search.samplers import SAMPLERS
from spaces import paper as paper_space
from train.cli_args import add_training_flags, settings_from
from train.errors import UserError, cli, how_stopped


def make_engines(args) -> list:
    names = ENGINES if args.engine == "all" else (args.engine,)
    return [ENGINES[name].from_args(args) for name in names]


def _grid_part(args, flag: str, choices: tuple):
    """--rows or --columns: a comma list of the paper grid's names, or None."""
    given = getattr(args, flag)
    if given is None:
        return None
    if args.space != "paper":
        raise UserError(f"--{flag} selects {flag} of the paper's grid: use it with --space paper")
    wanted = [r.strip() for r in given.split(",") if r.strip()]
    if not wanted or set(wanted) - set(choices):
        raise UserError(f"--{flag} {given!r}: choose from {', '.join(choices)}")
    return wanted


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="cnn",
                    help="cnn, mobilenetv2, nasnetmobile, or paper (the paper's grid) (default: cnn)")
    ap.add_argument("--engine", choices=(*ENGINES, "all"), default="optuna")
    ap.add_argument("--trials", type=int, default=None,
                    help="trials per engine, the study's total across workers (default: 6)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds for the whole search; a trial running then stops training and is measured "
                         "(default: none)")
    ap.add_argument("--max-trial-share", type=float, default=0.25,
                    help="with --timeout (Optuna): stop a sampled config whose full --epochs would take more than "
                         "this share of the time budget, judged once per config at the third epoch of its first "
                         "run of more than 3 epochs (on the faster of its 2nd and 3rd); warm starts are exempt; "
                         "0 = off (default: 0.25, so a search affords at least 4 full trials)")
    ap.add_argument("--study-name", default=None,
                    help="default: the space name and a digest of the data, split and budget")
    ap.add_argument("--max-params", type=int, default=None,
                    help="refuse configs with more parameters, before training (default: the space's "
                         "edge budget, 250,000 for cnn; 0 = none)")
    ap.add_argument("--max-mmacs", type=float, default=None,
                    help="refuse configs that need more millions of multiply-accumulates per image, before "
                         "training: a compute budget that holds on any device (default: none)")
    ap.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                    help="tpe (multivariate, grouped for the conditional space), tpe-plain (Optuna's defaults), "
                         "random, prior (near presets / near the incumbent / random), cmaes, nsga2, grid")
    ap.add_argument("--pruner", choices=PRUNERS, default="asha",
                    help="asha: train each config at rungs of a ninth and a third of --epochs, each with its own "
                         "schedule, the best third going on (default); hyperband/halving/median: stop one "
                         "full-schedule run midway; none")
    ap.add_argument("--rungs", default=None,
                    help="--pruner asha: epoch budgets below --epochs, e.g. 3,10 (default: a ninth and a third)")
    ap.add_argument("--tuner", choices=TUNERS, default="random")
    ap.add_argument("--objectives", default="rmse",
                    help="comma list of rmse,latency,params,size,inference; several = multi-objective (Optuna)")
    ap.add_argument("--config", action="append", help="manual engine: JSON/YAML config file (repeatable)")
    ap.add_argument("--no-presets", action="store_true", help="skip the space's presets (manual engine) and warm starts (Optuna)")
    ap.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under mlruns/)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under mlruns/)")
    ap.add_argument("--cluster", metavar="FILE", default=None,
                    help="a cluster's credentials file (search.cluster up writes it, mode 600): its --storage, "
                         "--tracking-uri and MLflow user, so no secret is typed on a command line")
    ap.add_argument("--kt-trials", type=int, default=3,
                    help="--space paper: trials of the Keras Tuner search behind the tuned-CNN row")
    ap.add_argument("--kt-epochs", type=int, default=None,
                    help="--space paper: epochs of each trial of that Keras Tuner search, which then also keeps the cnn "
                         "space's parameter budget (default: --epochs, and the grid's budget)")
    ap.add_argument("--rows", default=None,
                    help="--space paper: comma list of grid rows to run (default: all). Rows: "
                         + ", ".join(paper_space.ROWS))
    ap.add_argument("--columns", default=None,
                    help="--space paper: comma list of grid columns to run (default: all). Columns: "
                         + ", ".join(paper_space.COLUMNS))
    ap.add_argument("--seeds", type=int, default=1,
                    help="--space paper: runs of each small-CNN cell (baseline, manual, kt-tuned), each with other "
                         "weights on the same split, so a cell's seed spread shows (default: 1)")
    ap.add_argument("--transfer-epochs", type=int, default=None,
                    help="--space paper: a lower epoch cap for the MobileNetV2 and NASNetMobile rows, which train "
                         "about 10x slower than the small CNNs on a CPU (default: --epochs)")
    ap.add_argument("--finalize", metavar="DIR", default=None,
                    help="after the search, its final stage with the defaults (search.finalize: top 3 configs on 2 "
                         "seeds, refit on training + validation faces) and the shipped model exported to DIR")
    ap.add_argument("--register", metavar="NAME", default=None,
                    help="register the study's best model (lowest validation RMSE) in MLflow's registry as NAME, "
                         "alias 'best'")
    add_training_flags(ap, epochs=None)
    args = ap.parse_args(argv)
    import spaces
    # With no budget flag at all a space may bring its own (the quick start's); else 6 trials x 5 epochs.
    given = {k: v for k, v in (("trials", args.trials), ("epochs", args.epochs), ("timeout", args.timeout))
             if v is not None}
    budget = ({} if given or args.space not in spaces.names() else spaces.get(args.space).quick_budget) or {}
    for name, value in {"trials": 6, "epochs": 5, **budget, **given}.items():
        if name != "patience" or args.patience is None:  # a --patience given wins over the quick start's
            setattr(args, name, value)
    args.rows = _grid_part(args, "rows", paper_space.ROWS)
    args.columns = _grid_part(args, "columns", tuple(paper_space.COLUMNS))
    if args.seeds < 1 or any(v is not None and v < 1 for v in (args.transfer_epochs, args.kt_epochs)):
        raise UserError("--seeds, --transfer-epochs and --kt-epochs must be at least 1")
    if args.space != "paper" and (args.seeds != 1 or args.transfer_epochs is not None or args.kt_epochs is not None):
        raise UserError("--seeds, --transfer-epochs and --kt-epochs shape the paper's grid: use them with --space paper")
    if args.trials < 1:
        raise UserError("--trials must be at least 1")
    if args.cluster:
        from search.cluster import use_credentials
        creds = use_credentials(args.cluster)
        args.storage = args.storage or creds["storage"]
        args.tracking_uri = args.tracking_uri or creds["tracking_uri"]
    if args.timeout is not None and args.timeout <= 0:
        raise UserError("--timeout must be positive")
    return args


@cli
def main(argv=None):
    args = parse(argv)
    import spaces
    from search.engine import Budget, run_engine
    from search.identity import StudyKey
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
    max_params = space.max_params if args.max_params is None else (args.max_params or None)
    settings = dataclasses.replace(settings_from(args), max_params=max_params, max_mmacs=args.max_mmacs or None)
    budget = Budget(args.trials, args.timeout, args.seed, "")  # the clock starts before the data loads
    data = data_mod.load(args.data)
    print(f"data: {args.data} ({len(data)} faces, {data.fully_labelled} fully labelled)", flush=True)
    key = StudyKey.of(data, settings)
    study = budget.study = key.name(args.space, args.study_name)
    print(f"study: {study} ({key.describe()})", flush=True)
    params = {"space": args.space, "trials": args.trials, "epochs": args.epochs, "seed": args.seed,
              "data": args.data, "data_sha": data.sha, "split": args.split, "val_fraction": args.val_fraction,
              "test_fraction": args.test_fraction, "max_params": max_params,
              "max_mmacs": settings.max_mmacs}
    if args.space == "paper":
        from search.paper import grid
        space = grid(args, data, settings, params, key)
        budget.trials = args.trials = len(space.presets)
    tracker = Tracker(args.space, args.tracking_uri)
    interrupted = None
    for engine in engines:
        interrupted = run_engine(engine, space, tracker, data, settings, budget, params, key)
        if interrupted:
            break
    print_summary(tracker, study, engines)
    from search.progress import clock as _clock
    used = budget.used()
    print(f"\nStudy time: {_clock(used)} used (wall time while any worker ran, over every session)"
          + (f", {_clock(max(args.timeout - used, 0))} left of --timeout {_clock(args.timeout)}" if args.timeout else ""))
    if args.finalize and not interrupted:
        from search import finalize
        finalize.main(["--study", study, "--space", args.space, "--data", args.data, "--tracking-uri", tracker.uri,
                       "--out", args.finalize])
    if args.register:
        from tracking.registry import register_best
        register_best(tracker, study, args.register)
    print("\nBrowse the results:")
    print(f"  {stores.mlflow_ui_command(tracker.uri)}")
    from tracking.mlflow_view import runs_url
    served = tracker.uri.rstrip("/") if tracker.uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    print(f"    then open {runs_url(tracker.experiment_id, served)}")
    print(f"    and, to compare trials in charts, {runs_url(tracker.experiment_id, served, charts=True)}")
    for engine in engines:
        if engine.name == "optuna":
            print(f"  {stores.dashboard_command(engine.storage_url)}")
    named = f" --study {study}"
    python = stores.tool("python")
    print(f"  {python} -m tracking.leaderboard --space {args.space}{named}")
    if args.space == "paper":
        print(f"  {python} -m tracking.report --space paper{named} --output docs/{study}")
    if interrupted:
        raise SystemExit(how_stopped(interrupted)[1])


if __name__ == "__main__":
    main()
