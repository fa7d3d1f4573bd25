"""python -m bench: measure the platform's own costs; writes bench/results.md and bench/results.json.

Run it on a quiet machine: every figure is a wall-clock time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from train.errors import UserError, cli

HERE = Path(__file__).resolve().parent
PRESETS = ("baseline", "manual", "edge", "edge-fast", "edge-separable", "mobilenetv2")
SECTIONS = ("data", "presets", "speed", "search", "pruning", "workers")
BEST = HERE.parent / "docs" / "best" / "config.json"  # the committed search winner: `--presets best`


def preset_config(name: str) -> dict:
    from spaces.cnn import EDGE, EDGE_FAST, EDGE_SEPARABLE
    named = {"edge": {"model": "cnn", **EDGE}, "edge-fast": {"model": "cnn", **EDGE_FAST},
             "edge-separable": {"model": "cnn", **EDGE_SEPARABLE}}
    if name == "best":
        if not BEST.exists():
            raise UserError(f"--presets best: {BEST} does not exist yet (export a search's best model there)")
        return json.loads(BEST.read_text())
    return named.get(name, {"model": name})
TARGETS = {"cached_load_s": 0.2, "tracking_share": 0.02, "manual_s_per_100": 0.08, "export_rmse_change": 0.02}


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "keras-tuner", "optuna", "mlflow", "numpy", "ai-edge-litert"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "date": time.strftime("%Y-%m-%d %H:%M")}


def bench_data(path) -> dict:
    from train import data
    t0 = time.perf_counter()
    data.load(path, cache=False)
    cold = time.perf_counter() - t0
    data.load(path)  # fills the cache
    cached = []
    for _ in range(5):
        t0 = time.perf_counter()
        data.load(path)
        cached.append(time.perf_counter() - t0)
    return {"cold_load_s": cold, "cached_load_s": float(np.median(cached))}


def keras_predict_s_per_100(model) -> float:
    from train.metrics import _median_seconds
    x = np.random.default_rng(0).uniform(0, 255, (100, 96, 96, 1)).astype(np.float32)
    model.predict(x, batch_size=100, verbose=0)
    return _median_seconds(lambda: model.predict(x, batch_size=100, verbose=0), 10)


def bench_preset(preset, data, epochs) -> dict:
    from train import litert
    from train.trial import TrialSettings, run_trial
    with tempfile.TemporaryDirectory() as out:
        result = run_trial(preset_config(preset), data, TrialSettings(epochs=epochs), out_dir=out)
        m = result.metrics
        edge = litert.export(result.model, out, litert.FORMATS, result.val_images, result.val_true)
    return {"params": m["params"], "mmacs": m["mmacs"], "size_mb": m["size_mb"], "rmse": m["rmse"], "epochs": m["epochs"],
            "train_images_per_s": m["train_images_per_s"],
            "keras_predict_s_per_100": keras_predict_s_per_100(result.model),
            "compiled_call_s_per_100": m["inference_s_per_100"], "latency_ms": m["latency_ms"],
            "litert": {fmt: {k: v for k, v in e.items() if k != "file"} for fmt, e in edge.items()}}


SPEED_VARIANTS = {"batch 64": {}, "batch 128": {"batch_size": 128}, "batch 64, XLA": {"jit_compile": True},
                  "batch 128, XLA": {"batch_size": 128, "jit_compile": True}}


def bench_speed(data, epochs) -> dict:
    """Training images/s of the EDGE preset under what might help on a CPU: batch size and XLA."""
    from spaces.cnn import EDGE
    from train.trial import TrialSettings, run_trial
    out = {}
    for name, change in SPEED_VARIANTS.items():
        print(f"bench: speed, {name}", flush=True)
        result = run_trial({"model": "cnn", **EDGE, **change}, data, TrialSettings(epochs=epochs, patience=epochs))
        out[name] = {"train_images_per_s": result.metrics["train_images_per_s"], "rmse": result.metrics["rmse"]}
    return out


def bench_search(data, trials, epochs, store) -> dict:
    """Per-trial time outside training, from the MLflow runs of a small real search per engine."""
    from search import run as search_run
    from tracking.mlflow_tracker import Tracker
    os.environ["FKP_STORE_DIR"] = str(store)
    out = {}
    for engine in ("optuna", "keras-tuner"):
        search_run.main(["--space", "cnn", "--engine", engine, "--trials", str(trials), "--epochs", str(epochs),
                         "--data", data, "--study-name", f"bench-{engine}", "--pruner", "none"])
        runs = [r for r in Tracker("cnn").trials(study=f"bench-{engine}") if r.info.status == "FINISHED"]
        rows = []
        for r in runs:
            m = r.data.metrics
            wall = (r.info.end_time - r.info.start_time) / 1000
            rows.append({"wall_s": wall, "train_s": m["train_s"], "measure_s": m["measure_s"],
                         "tracking_s": m["tracking_s"],
                         "other_s": wall - m["train_s"] - m["measure_s"] - m["tracking_s"]})
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        mean["tracking_share"] = mean["tracking_s"] / mean["train_s"]
        mean["outside_training_share"] = (mean["wall_s"] - mean["train_s"]) / mean["train_s"]
        out[engine] = mean
    return out


def bench_pruning(data, seconds, epochs, seeds, store) -> dict:
    """The same TPE search with and without Hyperband, each for the same wall clock: best test RMSE.

    Without the presets: they are trained first whatever the pruner, and would decide both columns.
    """
    from search import run as search_run
    from tracking.mlflow_tracker import Tracker
    os.environ["FKP_STORE_DIR"] = str(store)
    out = {}
    for pruner in ("hyperband", "none"):
        rows = []
        for seed in seeds:
            study = f"prune-{pruner}-{seed}"
            t0 = time.perf_counter()
            search_run.main(["--space", "cnn", "--engine", "optuna", "--trials", "1000", "--epochs", str(epochs),
                             "--timeout", str(seconds), "--data", data, "--study-name", study, "--pruner", pruner,
                             "--seed", str(seed), "--no-presets",
                             "--max-trial-share", "0"])  # the pruners alone, as these figures were measured
            runs = Tracker("cnn").trials(study=study)
            done = [r for r in runs if r.data.tags.get("fkp_status") == "finished"]
            best = min(done, key=lambda r: r.data.metrics["rmse"]) if done else None
            rows.append({"seed": seed, "wall_s": time.perf_counter() - t0, "finished": len(done),
                         "pruned": sum(r.data.tags.get("fkp_status") == "pruned" for r in runs),
                         "best_rmse": best.data.metrics["rmse"] if best else float("nan"),
                         "best_test_rmse": best.data.metrics.get("test_rmse", float("nan")) if best else float("nan")})
        out[pruner] = rows
    return out


def render(results: dict) -> str:
    m = results["machine"]
    lines = ["# Benchmark results", "",
             f"Produced by `{results['command']}`"
             + "".join(f"; {', '.join(u['sections'])} re-measured by `{u['command']}` on {u['date']}"
                       for u in results.get("updates", [])) + ".", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
             "## Data", "", "| load | seconds | target |", "|---|---|---|"]
    d = results["data"]
    lines += [f"| cold (parse + validate) | {d['cold_load_s']:.3f} | |",
              f"| cached (content-keyed) | {d['cached_load_s']:.3f} | ≤ {TARGETS['cached_load_s']} |", ""]
    lines += ["## Presets: training and inference", "",
              f"Each preset trained {results['preset_epochs']} epochs on the shared data (group split), then measured. "
              "Inference is seconds per 100 images (one batch of 100, median of repeats after warm-up); "
              "RMSE change is each LiteRT file's RMSE minus the Keras model's, on the held-back validation faces.", "",
              "| preset | measured | params | MMACs | size MB | train images/s | Keras predict s/100 | compiled call s/100 | latency ms "
              "| LiteRT fp32 s/100 | fp16 s/100 | int8 s/100 | fp16 MB | int8 MB | RMSE px | ΔRMSE fp16 | ΔRMSE int8 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in results["presets"].items():
        e = p["litert"]
        mmacs = f"{p['mmacs']:.1f}" if "mmacs" in p else ""
        lines.append(f"| {name} | {p['measured']} | {p['params']:,} | {mmacs} | "
                     f"{p['size_mb']:.2f} | {p['train_images_per_s']:.0f} | "
                     f"{p['keras_predict_s_per_100']:.4f} | {p['compiled_call_s_per_100']:.4f} | {p['latency_ms']:.2f} | "
                     f"{e['fp32']['s_per_100']:.4f} | {e['fp16']['s_per_100']:.4f} | {e['int8']['s_per_100']:.4f} | "
                     f"{e['fp16']['size_mb']:.3f} | {e['int8']['size_mb']:.3f} | {p['rmse']:.3f} | "
                     f"{e['fp16']['rmse_change']:+.4f} | {e['int8']['rmse_change']:+.4f} |")
    s = results["search"]
    lines += ["", "## Search overhead per trial",
              "", f"Mean over a real search of {results['search_trials']} trials × {results['search_epochs']} epochs "
              "per engine. *measure* = validation predictions, saving the model and timing inference; "
              "*tracking* = MLflow logging incl. plots and artifacts; *other* = suggest, build, data preparation.", "",
              "| engine | trial wall s | train s | measure s | tracking s | other s | tracking / train | outside training / train |",
              "|---|---|---|---|---|---|---|---|"]
    for engine, r in s.items():
        lines.append(f"| {engine} | {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['measure_s']:.2f} | "
                     f"{r['tracking_s']:.2f} | {r['other_s']:.2f} | {100 * r['tracking_share']:.2f}% | "
                     f"{100 * r['outside_training_share']:.1f}% |")
    if "speed" in results:
        lines += ["", "## Training speed", "",
                  f"The EDGE preset, {results['speed_epochs']} epochs each; steady-state images/s (the first epoch "
                  "also traces the graph).", "", "| variant | train images/s | val RMSE px |", "|---|---|---|"]
        lines += [f"| {name} | {r['train_images_per_s']:.0f} | {r['rmse']:.3f} |" for name, r in results["speed"].items()]
    pr = results["pruning"]
    lines += ["", "## Multi-fidelity at equal wall clock", ""]
    if isinstance(next(iter(pr.values()), None), list):
        lines += [f"The same TPE search of `cnn` (up to {results['pruning_epochs']} epochs per trial, the presets "
                  f"skipped: `--no-presets`) for {results['pruning_seconds']:.0f} s each, with Hyperband and without pruning. Best "
                  "trial chosen on validation; its test RMSE beside it.", "",
                  "| pruner | seed | wall s | finished | pruned | best val RMSE px | its test RMSE px |",
                  "|---|---|---|---|---|---|---|"]
        for name, rows in pr.items():
            lines += [f"| {name} | {r['seed']} | {r['wall_s']:.0f} | {r['finished']} | {r['pruned']} | "
                      f"{r['best_rmse']:.3f} | {r['best_test_rmse']:.3f} |" for r in rows]
    else:
        lines.append("Not re-measured since the equal-wall-clock comparison replaced the old one: "
                     "`python -m bench --sections pruning`.")
    if "workers" in results:
        from bench.workers import render as render_workers
        lines += render_workers(results["workers"])
    for section in results.get("sections_md", {}).values():  # written by bench.curves, bench.replay
        lines += ["", section["markdown"].rstrip(), "", f"Made by `{section['command']}` on {section['date']}."]
    lines += ["", "## Targets", ""] + [f"- {t}" for t in results["targets"]]
    return "\n".join(lines) + "\n"


def check_targets(results) -> list[str]:
    out = []
    cached = results["data"]["cached_load_s"]
    out.append(f"cached CSV load ≤ 0.2 s: {cached:.3f} s — {'met' if cached <= 0.2 else 'MISSED'}")
    share = max(r["tracking_share"] for r in results["search"].values())
    out.append(f"tracking ≤ 2% of training time: {100 * share:.2f}% — {'met' if share <= 0.02 else 'MISSED'}")
    if "manual" in results["presets"]:
        p = results["presets"]["manual"]
        s = p["compiled_call_s_per_100"]
        out.append(f"manual preset ≤ 0.08 s/100 images (platform measurement): {s:.4f} s — "
                   f"{'met' if s <= 0.08 else 'MISSED'}")
        for fmt in ("fp16", "int8"):
            e = p["litert"][fmt]
            faster = e["s_per_100"] < s
            small = abs(e["rmse_change"]) <= 0.02
            out.append(f"manual {fmt} export faster ({e['s_per_100']:.4f} s/100) and RMSE change ≤ 0.02 px "
                       f"({e['rmse_change']:+.4f}): {'met' if faster and small else 'MISSED'}")
    return out


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/training.csv.gz")
    ap.add_argument("--preset-epochs", type=int, default=2)
    ap.add_argument("--search-trials", type=int, default=2)
    ap.add_argument("--search-epochs", type=int, default=2)
    ap.add_argument("--pruning-seconds", type=float, default=1200, help="wall clock per search (default: 20 min)")
    ap.add_argument("--pruning-epochs", type=int, default=30)
    ap.add_argument("--pruning-seeds", default="0,1")
    ap.add_argument("--speed-epochs", type=int, default=3)
    ap.add_argument("--workers-trials", type=int, default=8, help="workers: trials of the 1- vs 2-worker search")
    ap.add_argument("--workers-epochs", type=int, default=2)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="re-measure only these; the others are kept from the existing results.json")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        raise UserError(f"--sections {args.sections!r}: choose from {', '.join(SECTIONS)}")
    from train import data as data_mod
    import sys
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)]).strip()
    out = Path(args.out)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    partial = sections != set(SECTIONS)
    if partial and not previous:
        raise UserError("--sections needs an existing results.json to keep the other sections from")
    # bench.curves and bench.replay write their own sections: a full run of this one keeps them
    results = previous if partial else {k: previous[k] for k in ("sections_md",) if k in previous}
    results["machine"] = machine()
    if not results.get("command"):
        results["command"] = command
    if partial:
        results.setdefault("updates", []).append({"sections": sorted(sections), "command": command,
                                                  "date": results["machine"]["date"]})
    else:
        results.update(preset_epochs=args.preset_epochs, search_trials=args.search_trials,
                       search_epochs=args.search_epochs, pruning_seconds=args.pruning_seconds,
                       pruning_epochs=args.pruning_epochs)
    if "data" in sections:
        print("bench: data", flush=True)
        results["data"] = bench_data(args.data)
    if "presets" in sections:
        faces = data_mod.load(args.data)
        results["preset_epochs"] = args.preset_epochs
        results["presets"] = results.get("presets", {}) if partial else {}  # presets not named keep their row
        for preset in args.presets.split(","):
            print(f"bench: preset {preset}", flush=True)
            results["presets"][preset] = {**bench_preset(preset, faces, args.preset_epochs),
                                          "measured": results["machine"]["date"]}
    if "speed" in sections:
        results["speed_epochs"] = args.speed_epochs
        results["speed"] = bench_speed(data_mod.load(args.data), args.speed_epochs)
    with tempfile.TemporaryDirectory() as store:
        if "search" in sections:
            print("bench: search overhead", flush=True)
            results["search"] = bench_search(args.data, args.search_trials, args.search_epochs, Path(store) / "s")
        if "pruning" in sections:
            print("bench: pruning", flush=True)
            results.update(pruning_seconds=args.pruning_seconds, pruning_epochs=args.pruning_epochs)
            seeds = [int(x) for x in args.pruning_seeds.split(",")]
            results["pruning"] = bench_pruning(args.data, args.pruning_seconds, args.pruning_epochs, seeds,
                                               Path(store) / "p")
    if "workers" in sections:
        from bench.workers import bench_workers
        print("bench: workers (1 vs 2 on PostgreSQL)", flush=True)
        results["workers"] = bench_workers(args.data, args.workers_trials, args.workers_epochs)
    results["targets"] = check_targets(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
