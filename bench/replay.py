"""python -m bench.replay: search strategies replayed on real learning curves, on a simulated clock.

The strategy (an Optuna sampler and pruner from the platform's own registries) decides exactly as in a
real search; the backend, instead of training, looks the config up in a learning-curve table
(bench/curves.py, or a study's own runs with --study) and advances a simulated clock by the seconds
that training really took. So strategies are compared over many paired seeds in minutes of CPU.

    python -m bench.replay --seeds 20 --budget 7200
    python -m bench.replay --study NAME --strategies tpe+asha@0.25,random+none   # your own study's curves
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.errors import UserError, cli

HERE = Path(__file__).resolve().parent
# "sampler+pruner[@share]", each from search/samplers.py and search/pruners.py; a bare sampler means no pruning;
# @share: search.run's --max-trial-share (a config too slow for that share of the budget stops at its 2nd epoch)
DEFAULT_STRATEGIES = ("random", "tpe-plain+hyperband", "tpe+asha@0.25", "tpe+asha", "random+asha@0.25",
                      "prior+asha@0.25")
LABELS = {"random": "random search", "tpe-plain+hyperband": "old default", "tpe+asha@0.25": "new default"}
MARKS = (900, 1800, 3600, 7200)
ANSWERED = {False: "proposals answered by the nearest pool config, tried or not, each time at its full cost",
            True: "each new proposal answered by the nearest pool config not yet tried, and the sampler told that "
                  "config (`--untried`: a tabular replay, which ends when the pool is spent)"}


def parse_strategy(name: str) -> tuple[str, str, float]:
    from search.pruners import PRUNERS
    from search.samplers import SAMPLERS
    rest, _, share = name.partition("@")
    sampler, _, pruner = rest.partition("+")
    pruner = pruner or "none"
    try:
        share_value = float(share) if share else 0.0
    except ValueError:
        share_value = -1.0
    if sampler not in SAMPLERS or pruner not in PRUNERS or not 0 <= share_value <= 1:
        raise UserError(f"strategy {name!r}: expected SAMPLER[+PRUNER][@SHARE] with a sampler from "
                        f"{', '.join(SAMPLERS)}, a pruner from {', '.join(PRUNERS)} and a share from 0 to 1")
    return sampler, pruner, share_value


@dataclass
class Replay:
    strategy: str
    seed: int
    events: list = field(default_factory=list)  # (seconds, val, test, config_id) of each full-budget trial
    trials: int = 0
    configs: set = field(default_factory=set)
    spent_at: float | None = None  # simulated seconds at which the last pool config not yet tried started
    study: object = None  # the Optuna study: what the sampler was told


def simulate(bb, strategy: str, seed: int, budget_s: float, presets: bool = False, untried: bool = False) -> Replay:
    """`untried`: a new proposal is answered by the nearest pool config not yet tried, and the sampler is told
    that config's own values (the proposal itself is closed as failed, which no sampler learns from); the
    search ends when the pool is spent. Else by the nearest pool config, tried or not, each time at its full
    cost: on a small pool most of a model-based sampler's proposals land on configs it has already run, which
    a real search, drawing from the whole space, would not."""
    import optuna
    from optuna.trial import TrialState

    from search.adapters import OptunaSuggest
    from spaces.base import warm_starts
    from search.pruners import RUNG_PRUNERS, make_pruner, queue_endgame, queue_promotions
    from search.samplers import make_sampler
    from spaces.base import sample
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler_name, pruner_name, share = parse_strategy(strategy)
    full, rungs = bb.budgets[-1], bb.budgets[:-1]
    limit = budget_s * share / full if share else None  # s/epoch, as search/runner.py's max_epoch_s

    def too_slow(run, epochs: int) -> bool:
        """As search/runner.py: at the end of the third epoch of a run planned longer, on the faster of its second
        and third; the engine asks only in a config's first run over 3 epochs, never for a warm start."""
        return (limit is not None and run.status != "failed" and epochs > 3 and len(run.epoch_s) >= 3
                and min(run.epoch_s[1:3]) > limit)

    def cut(trial, run) -> float:
        trial.set_user_attr("too_slow", True)  # never promoted (search/pruners.py)
        return run.overhead_s + sum(run.epoch_s[:3])
    starts = warm_starts(bb.space) if presets else []
    # named, because Hyperband puts a trial in a bracket by a hash of the study's name: an unnamed study gets a
    # random one, and the same replay command gave another result each run
    study = optuna.create_study(study_name=f"replay-{strategy}-{seed}", sampler=make_sampler(sampler_name, bb.space, seed, starts),
                                pruner=make_pruner(pruner_name, full, rungs))
    taken: list[str] = []
    for preset in starts:  # under --untried, as its nearest pool config not yet taken (the pool may lack it)
        if untried and len(taken) < len(bb):
            taken.append(bb.nearest(preset, among=[c for c in bb.ids if c not in taken]))
            study.enqueue_trial(bb.params(taken[-1]), user_attrs={"warm_start": True, "pool": taken[-1]})
        elif not untried:
            study.enqueue_trial(preset, user_attrs={"warm_start": True})
    out, clock = Replay(strategy, seed), 0.0
    by_rung = pruner_name in RUNG_PRUNERS
    while clock < budget_s:
        trial = study.ask()
        proposal = sample(bb.space, OptunaSuggest(trial))
        # under --untried a new proposal is swapped for the nearest config not yet tried, and the sampler told that
        # config's own values; a promotion, a warm start and a swapped proposal name their pool config exactly.
        # Optuna runs waiting trials first, so a new proposal comes only when none waits: the swap's is next.
        if untried and "promoted_from" not in trial.user_attrs and "pool" not in trial.user_attrs:
            left = [c for c in bb.ids if c not in out.configs]
            study.tell(trial, state=TrialState.FAIL)
            if not left and by_rung and queue_promotions(study, last=True):
                continue  # as the engine once --trials is spent: the best at each rung goes on, rivals or not
            if not left:
                break
            cid = bb.nearest(proposal, among=left)
            study.enqueue_trial(bb.params(cid), user_attrs={**trial.user_attrs, "pool": cid})
            trial = study.ask()
            sample(bb.space, OptunaSuggest(trial))
        else:
            cid = bb.nearest(proposal)
        runs = bb.runs[cid]
        out.trials += 1
        out.configs.add(cid)
        if out.spent_at is None and len(out.configs) == len(bb):
            out.spent_at = clock  # the last untried config starts
        state, value = TrialState.COMPLETE, None
        warm = bool(trial.user_attrs.get("warm_start"))
        if by_rung and warm:  # as search/optuna_engine.py: straight to the full budget, its rung epochs as bars
            for rung in rungs:
                if rung <= len(runs[full].val_rmse) and math.isfinite(runs[full].val_rmse[rung - 1]):
                    trial.set_user_attr(f"bar_{rung}", float(runs[full].val_rmse[rung - 1]))
        elif by_rung:
            carried = trial.user_attrs.get("promoted_at", 0)  # a promotion goes on past the rung it stopped at
            judge = not carried  # as search/optuna_engine.py's climb: speed is judged once per config
            for rung in rungs:
                if rung <= carried:
                    trial.set_user_attr(f"rung_{rung}", runs[rung].final_val)
                    trial.report(runs[rung].final_val, rung)
                    continue
                if judge and too_slow(runs[rung], rung):
                    clock += cut(trial, runs[rung])
                    state = TrialState.PRUNED
                    break
                judge = judge and rung <= 3
                clock += runs[rung].wall_s
                if runs[rung].status == "failed":
                    state = TrialState.FAIL
                    break
                trial.set_user_attr(f"rung_{rung}", runs[rung].final_val)  # as search/optuna_engine.py's climb does
                trial.report(runs[rung].final_val, rung)
                if trial.should_prune():
                    state = TrialState.PRUNED
                    break
            if state == TrialState.COMPLETE and judge and too_slow(runs[full], full):
                clock += cut(trial, runs[full])
                state = TrialState.PRUNED
        run = runs[full]
        if state == TrialState.COMPLETE and run.status == "failed":
            clock, state = clock + run.wall_s, TrialState.FAIL
        elif state == TrialState.COMPLETE and by_rung:
            clock += run.wall_s
        elif state == TrialState.COMPLETE:
            slow = not warm and too_slow(run, full)
            for epoch, (val, seconds) in enumerate(zip(run.val_rmse, run.epoch_s)):
                clock += seconds
                trial.report(val, epoch)
                if pruner_name != "none" and epoch + 1 < len(run.val_rmse) and trial.should_prune():
                    state = TrialState.PRUNED
                    break
                if slow and epoch == 2:  # after the epoch's report, as the engine's epoch hook
                    trial.set_user_attr("too_slow", True)
                    state = TrialState.PRUNED
                    break
            clock += run.overhead_s  # build and data; a pruned run is not measured, so this slightly favours none
        if state == TrialState.COMPLETE:
            value = run.final_val
            study.tell(trial, value)
            if clock <= budget_s:  # a result that lands after the deadline is not the search's
                out.events.append((clock, run.final_val, run.test_rmse, cid))
        else:
            study.tell(trial, state=state)
        if by_rung and not queue_promotions(study) and limit:  # as search/optuna_engine.py's promote
            queue_endgame(study, budget_s - clock, budget_s * share)
    out.study = study
    return out


def best_so_far(replay: Replay, grid: np.ndarray, empty: float) -> np.ndarray:
    """Test RMSE of the config chosen on validation so far, at each time of the grid."""
    values, best_val, best_test, i = np.full(len(grid), empty), math.inf, empty, 0
    events = sorted(replay.events)
    for k, t in enumerate(grid):
        while i < len(events) and events[i][0] <= t:
            if events[i][1] < best_val:
                best_val, best_test = events[i][1], events[i][2]
            i += 1
        values[k] = best_test
    return values


def iqm(x: np.ndarray, axis=0):
    from scipy.stats import trim_mean
    return trim_mean(x, 0.25, axis=axis)


def bootstrap(x: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile interval of the IQM over seeds, resampling seeds (rows) with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), size=(n, len(x)))
    stats = np.stack([iqm(x[p]) for p in picks])
    return np.percentile(stats, 2.5, axis=0), np.percentile(stats, 97.5, axis=0)


def summarise(curves: dict, grid: np.ndarray) -> dict:
    out = {}
    for name, x in curves.items():
        lo, hi = bootstrap(x)
        out[name] = {"iqm": iqm(x).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
    return out


def plot(stats: dict, grid: np.ndarray, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    minutes = grid / 60
    for name, s in stats.items():
        line, = ax.plot(minutes, s["iqm"], label=f"{name} ({LABELS[name]})" if name in LABELS else name)
        ax.fill_between(minutes, s["lo"], s["hi"], alpha=0.2, color=line.get_color())
    finite = [v for s in stats.values() for v in s["hi"] if math.isfinite(v)]
    lows = [v for s in stats.values() for v in s["lo"] if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(lows) - 0.05, min(max(finite), min(lows) + 3))
    ax.set_xlabel("simulated search time (minutes)")
    ax.set_ylabel("test RMSE px of the config chosen on validation")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(stats, grid, replays, bb, args, png: str) -> str:
    marks = [m for m in MARKS if m <= args.budget] or [args.budget]
    idx = [int(np.argmin(np.abs(grid - m))) for m in marks]
    head = "| strategy | " + " | ".join(f"{m / 60:g} min: IQM [95% CI]" for m in marks) + \
           " | trials (mean) | full-budget trials (mean) | pool configs tried (mean) | seeds that spent the pool |"
    lines = ["## Replay: strategies on real learning curves" + (", tabular (`--untried`)" if args.untried else ""), "",
             f"Pool: {len(bb)} configs of the `{bb.meta['space']}` space with whole curves at budgets "
             f"{', '.join(map(str, bb.budgets))} epochs (`{args.table_name}`), each at every budget with its own "
             f"schedule; {len(bb.dropped)} incomplete configs left out; trained by training code "
             f"{bb.meta.get('training_code', 1)} (`train.trial.TRAINING_CODE`; 1 mirrored flipped labels about "
             f"x = 96). Each strategy ran {args.seeds} paired seeds "
             f"on a simulated clock of {args.budget / 3600:g} h (one worker), {ANSWERED[args.untried]}. Figure: test RMSE px of the config chosen on validation so far; IQM over seeds with a "
             "bootstrap 95% interval. Before a strategy's first full-budget result its value is the pool's worst "
             "test RMSE.", "", f"![replay]({png})", "", head, "|---|" + "---|" * (len(marks) + 4)]
    for name, s in stats.items():
        rs = replays[name]
        cells = [f"{s['iqm'][i]:.3f} [{s['lo'][i]:.3f}, {s['hi'][i]:.3f}]" for i in idx]
        lines.append(f"| {name}{f' ({LABELS[name]})' if name in LABELS else ''} | " + " | ".join(cells)
                     + f" | {np.mean([r.trials for r in rs]):.1f} | {np.mean([len(r.events) for r in rs]):.1f}"
                     + f" | {np.mean([len(r.configs) for r in rs]):.1f} | {_spent(rs)} |")
    spent = [name for name in stats if 2 * sum(r.spent_at is not None for r in replays[name]) > args.seeds]
    if spent:
        lines += ["", f"In {len(spent)} of {len(stats)} strategies most seeds tried every pool config before the "
                  "budget ran out: on this pool they end where the pool's best config is, whatever they are, and "
                  "cannot be told apart. A pool too small for the budget shows here, not as a verdict."]
    return "\n".join(lines)


def _spent(replays) -> str:
    times = [r.spent_at for r in replays if r.spent_at is not None]
    return f"{len(times)} (mean at {np.mean(times) / 60:.0f} min)" if times else "0"


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(HERE / "curves" / "cnn.jsonl"), help="a bench.curves table")
    ap.add_argument("--study", default=None, help="replay this study's own logged curves instead of a table")
    ap.add_argument("--tracking-uri", default=None, help="with --study: its MLflow store (default: mlruns/)")
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--data", default=None, help="refuse a table made on other data than this CSV")
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=float, default=7200, help="simulated seconds per search (default: 2 h)")
    ap.add_argument("--presets", action="store_true", help="warm-start each strategy with the space's presets")
    ap.add_argument("--untried", action="store_true",
                    help="tabular: answer each new proposal by the nearest pool config not yet tried, and tell the "
                         "sampler that config (else by the nearest, tried or not, at its full cost again)")
    ap.add_argument("--complete-only", action="store_true",
                    help="leave out configs whose curves lack a budget or an epoch (else: refuse the table)")
    ap.add_argument("--out", default=None, help="folder for replay.png and replay.json (default: bench/replay, or "
                                                "bench/replay-untried with --untried)")
    ap.add_argument("--no-results", action="store_true", help="do not write the section of bench/results.md")
    args = ap.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in strategies:
        parse_strategy(s)
    if args.seeds < 1 or args.budget <= 0:
        raise UserError("--seeds and --budget must be positive")
    import spaces
    from bench.blackbox import Blackbox, check_table
    from bench.curves import read, table_from_study
    space = spaces.get(args.space)
    if args.study:
        meta, rows = table_from_study(args.study, args.space, args.tracking_uri)
        args.table_name = f"study {args.study}"
    else:
        if not Path(args.table).exists():
            raise UserError(f"{args.table}: no such table (python -m bench.curves makes one)")
        meta, rows = read(args.table)
        args.table_name = Path(args.table).name
    data_sha = None
    if args.data:
        from train import data as data_mod
        data_sha = data_mod.load(args.data).sha
    check_table(meta, args.study or args.table, args.space, data_sha)
    bb = Blackbox(space, meta, rows, args.study or args.table, complete_only=args.complete_only)
    for problem in bb.dropped:
        print(f"[replay] left out: {problem}", flush=True)
    grid = np.linspace(0, args.budget, 121)
    empty = max(r.test_rmse for runs in bb.runs.values() for r in runs.values() if r.status == "complete")
    replays, curves = {}, {}
    t0 = time.perf_counter()
    for name in strategies:
        replays[name] = []
        for seed in range(args.seeds):
            replays[name].append(simulate(bb, name, seed, args.budget, args.presets, args.untried))
        curves[name] = np.stack([best_so_far(r, grid, empty) for r in replays[name]])
        print(f"[replay] {name}: {args.seeds} seeds, mean {np.mean([r.trials for r in replays[name]]):.1f} trials, "
              f"IQM at {args.budget / 60:g} min {iqm(curves[name])[-1]:.3f} px "
              f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
    stats = summarise(curves, grid)
    folder = "replay-untried" if args.untried else "replay"
    out = Path(args.out) if args.out else HERE / folder
    out.mkdir(parents=True, exist_ok=True)
    plot(stats, grid, out / "replay.png", f"Replay on {len(bb)} real configs{', each tried once (--untried)' if args.untried else ''}, {args.seeds} seeds")
    (out / "replay.json").write_text(json.dumps({"grid_s": grid.tolist(), "stats": stats, "pool": len(bb),
                                                 "seeds": args.seeds, "budget_s": args.budget}, indent=1))
    md = markdown(stats, grid, replays, bb, args, f"{folder}/replay.png" if out == HERE / folder else str(out / "replay.png"))
    print(md)
    if not args.no_results and not args.study:
        from bench.sections import update
        update(folder, md)


if __name__ == "__main__":
    main()
