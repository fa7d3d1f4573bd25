"""python -m bench.curves: a table of real learning curves of a space, for rung measurements and replay.

Each config of a seeded random pool (the space's presets may be added, flagged) is trained once per
budget in `--budgets`, each time with its learning-rate schedule sized to that budget, and every
epoch's validation RMSE and seconds are kept with the final validation and test RMSE. The largest
budget's curve also tells what a rung of one full-budget schedule would see (Optuna's Hyperband).

The table is JSON lines: a `meta` line (space, data, split, budgets, limits), then one row per
(config, budget). It is appended to row by row, so a killed run resumes where it stopped:

    python -m bench.curves --configs 30 --out bench/curves/cnn.jsonl
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from train.errors import UserError, cli

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "curves" / "cnn.jsonl"


def config_id(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def stream(space, seed: int):
    """The space's seeded random configs, endlessly: the same seed, the same pool."""
    from search.adapters import RandomSuggest
    from spaces.base import sample
    rng = np.random.default_rng(seed)
    while True:
        yield sample(space, RandomSuggest(rng))


def read(path) -> tuple[dict | None, list[dict]]:
    """The table's meta line and rows; a torn last line (a kill mid-write) is dropped."""
    path = Path(path)
    if not path.exists():
        return None, []
    meta, rows, torn = None, [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a kill mid-write; its run was not recorded and is trained again
            torn.append(number)
            continue
        if "meta" in record:
            meta = record["meta"]
        else:
            rows.append(record)
    if torn:
        print(f"[curves] {path}: skipped {len(torn)} torn line(s) ({', '.join(map(str, torn[:5]))}), left by a kill "
              "mid-write", flush=True)
    return meta, rows


def _end_torn_line(path: Path) -> None:
    """A kill mid-write leaves a line without its end: end it, so the next row is never glued onto it. Only
    appends (another shard may be appending now): read() skips the torn line."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                _append_bytes(path, b"\n")


def _append(path: Path, record: dict) -> None:
    _append_bytes(path, (json.dumps(record) + "\n").encode())


def _append_bytes(path: Path, data: bytes) -> None:
    # one write() of a whole line on an O_APPEND file: shards appending at once never interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def table_meta(space_name, data, settings, budgets, seed) -> dict:
    from train.trial import TRAINING_CODE  # a table never mixes curves of two training codes
    return {"training_code": TRAINING_CODE, "space": space_name, "data_sha": data.sha, "split": settings.split, "val_fraction": settings.val_fraction,
            "test_fraction": settings.test_fraction, "seed": settings.seed, "patience": settings.patience,
            "budgets": list(budgets), "pool_seed": seed, "max_params": settings.max_params,
            "max_mmacs": settings.max_mmacs}


def measure(config: dict, data, settings, budget: int) -> dict:
    from train.trial import Rejected, TrialFailed, run_trial
    t0 = time.perf_counter()
    try:
        result = run_trial(config, data, dataclasses.replace(settings, epochs=budget))
    except Rejected as exc:
        return {"status": "rejected", "reason": str(exc)}
    except TrialFailed as exc:
        return {"status": "failed", "reason": str(exc), "wall_s": time.perf_counter() - t0}
    m, h = result.metrics, result.history
    return {"status": "complete", "val_rmse": h["val_rmse"], "epoch_s": h["epoch_s"], "final_val_rmse": m["rmse"],
            "test_rmse": m["test_rmse"], "params": m["params"], "mmacs": m["mmacs"], "epochs": m["epochs"],
            "measure_s": m["measure_s"], "wall_s": time.perf_counter() - t0}


def typed(space, params: dict) -> dict:
    """MLflow keeps params as text: give each back its type in the space."""
    from spaces.base import Categorical, Fixed, Float, Int
    out = {}
    for p in space.params:
        if p.name not in params or isinstance(p, Fixed):
            continue
        text = params[p.name]
        if isinstance(p, Int):
            out[p.name] = int(float(text))
        elif isinstance(p, Float):
            out[p.name] = float(text)
        elif isinstance(p, Categorical):
            out[p.name] = next((c for c in p.choices if str(c) == text), text)
    return {**space.fixed, **out}


def table_from_study(study: str, space_name: str, tracking_uri=None) -> tuple[dict, list[dict]]:
    """A study's own trial runs as a table: each run's per-epoch validation RMSE from MLflow's metric
    history, its epoch seconds from the history's timestamps."""
    import spaces
    from tracking.mlflow_tracker import Tracker
    space = spaces.get(space_name)
    tracker = Tracker(space_name, tracking_uri)
    runs = tracker.trials(study=study)
    if not runs:
        raise UserError(f"study {study!r}: no trial runs in the MLflow store at {tracker.uri}")
    rows, budgets, data_sha, codes = [], set(), None, set()
    for run in runs:
        tags, m = run.data.tags, run.data.metrics
        budget = int(tags.get("max_epochs", 0) or 0)
        status = {"finished": "complete", "failed": "failed", "rejected": "rejected"}.get(tags.get("fkp_status"),
                                                                                        tags.get("fkp_status"))
        config = typed(space, run.data.params)
        data_sha = data_sha or tags.get("data_sha")
        codes.add(int(tags.get("training_code", 1)))
        row = {"config_id": config_id(config), "budget": budget, "config": config, "status": status,
               "wall_s": ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000}
        if status == "complete":
            history = sorted(tracker.client.get_metric_history(run.info.run_id, "val_rmse"), key=lambda h: h.step)
            stamps = [run.info.start_time] + [h.timestamp for h in history]
            row.update(val_rmse=[h.value for h in history], epochs=int(m.get("epochs", len(history))),
                       epoch_s=[(b - a) / 1000 for a, b in zip(stamps, stamps[1:])],
                       final_val_rmse=m["rmse"], test_rmse=m.get("test_rmse", float("nan")))
        budgets.add(budget)
        rows.append(row)
    if len(codes) > 1:  # a study refuses a resume by other code; this guards stores older than that check
        raise UserError(f"study {study!r}: trials of training codes {sorted(codes)} mixed; their curves are not "
                        "comparable")
    meta = {"space": space_name, "data_sha": data_sha, "budgets": sorted(b for b in budgets if b), "study": study,
            "training_code": codes.pop() if codes else 1}
    return meta, rows


def _fits(space, config, settings) -> bool:
    """Whether a config is within the limits, without training it (what run_trial checks first)."""
    from train.errors import Rejected
    from train.models import build
    from train.trial import check_limits
    try:
        check_limits(build(config), settings)
    except Rejected:
        return False
    return True


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.curves", description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--configs", type=int, default=20, help="random configs in the pool (default: 20)")
    ap.add_argument("--budgets", default="3,10,30", help="epoch budgets, each with its own schedule (default: 3,10,30)")
    ap.add_argument("--presets", action="store_true", help="also the space's presets, after the random pool")
    ap.add_argument("--pool-seed", type=int, default=0)
    ap.add_argument("--max-params", type=int, default=250_000)
    ap.add_argument("--max-mmacs", type=float, default=40.0)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--shard", default="0/1", help="I/N: train only the pool's configs whose index is I mod N, so "
                                                   "N processes (one per core) fill one table (default: 0/1)")
    from train.cli_args import add_training_flags, settings_from
    add_training_flags(ap, epochs=30)
    args = ap.parse_args(argv)
    try:
        budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
    except ValueError:
        raise UserError(f"--budgets {args.budgets!r}: expected comma-separated epoch counts") from None
    if not budgets or budgets[0] < 1:
        raise UserError(f"--budgets {args.budgets!r}: every budget must be at least 1 epoch")
    import spaces
    from train import data as data_mod
    space = spaces.get(args.space)
    args.epochs = budgets[-1]
    settings = dataclasses.replace(settings_from(args), max_params=args.max_params or None,
                                   max_mmacs=args.max_mmacs or None)
    data = data_mod.load(args.data)
    meta = table_meta(args.space, data, settings, budgets, args.pool_seed)
    out = Path(args.out)
    old, rows = read(out)
    if old is not None and old != meta:
        diff = sorted(k for k in meta if old.get(k) != meta[k])
        raise UserError(f"{out}: a table of other settings ({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); "
                        f"this run has {', '.join(f'{k}={meta[k]!r}' for k in diff)}: choose another --out")
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
        assert 0 <= shard < shards
    except (ValueError, AssertionError):
        raise UserError(f"--shard {args.shard!r}: expected I/N with 0 <= I < N") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if old is None:
        _append(out, {"meta": meta})
    _end_torn_line(out)
    done = {(r["config_id"], r["budget"]) for r in rows}
    rejected = {r["config_id"] for r in rows if r["status"] == "rejected"}
    t_start, trained, accepted = time.perf_counter(), 0, 0

    def run(index, config, preset, label):
        nonlocal trained
        cid = config_id(config)
        for budget in sorted(budgets, reverse=True):  # the full budget first: a rejection shows at once
            if (cid, budget) in done:
                continue
            row = {"config_id": cid, "index": index, "preset": preset, "budget": budget, "config": config,
                   **measure(config, data, settings, budget)}
            _append(out, row)
            done.add((cid, budget))
            if row["status"] == "rejected":
                print(f"[curves] {label} ({cid}) rejected: {row['reason']}", flush=True)
                return False
            trained += 1
            print(f"[curves] {label} ({cid}) budget {budget}: {row['status']}"
                  + (f", val {row['final_val_rmse']:.3f} test {row['test_rmse']:.3f} px, {row['wall_s']:.0f} s"
                     if row["status"] == "complete" else f" ({row.get('reason')})")
                  + f" | {trained} runs in {(time.perf_counter() - t_start) / 60:.1f} min", flush=True)
        return True

    # --configs counts configs within the limits: those refused before training cost nothing
    for index, config in enumerate(stream(space, args.pool_seed)):
        if accepted >= args.configs:
            break
        if config_id(config) in rejected:
            continue
        if accepted % shards != shard:  # another shard's: counted, not trained here
            accepted += _fits(space, config, settings)
            continue
        accepted += run(index, config, None, f"config {accepted + 1}/{args.configs} (#{index})")
    if args.presets:
        for i, preset in enumerate(space.presets):
            if i % shards == shard and preset.get("model", space.fixed.get("model")) == space.fixed.get("model"):
                run(-1 - i, {**space.fixed, **preset}, f"preset-{i}", f"preset {i}")
    print(f"[curves] {out}: {len(read(out)[1])} rows")


if __name__ == "__main__":
    main()
