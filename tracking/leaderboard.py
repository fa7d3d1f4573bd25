"""Rank finished trials of every engine from MLflow, and export the best model.

python -m tracking.leaderboard --space cnn [--metric rmse] [--top 10] [--format table|csv|md|html]
                               [--output PATH] [--export-best DIR [--tflite fp32,fp16,int8]]
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import shutil
import sys
from pathlib import Path

from train.errors import UserError, cli

# Ranking is on validation RMSE (what the engines selected on) or a cost; test RMSE is shown, never ranked on.
METRIC_COLUMNS = ("rmse", "params", "mmacs", "size_mb", "inference_s_per_100", "latency_ms")
SHOWN_METRICS = (*METRIC_COLUMNS, "test_rmse")
KEY_PARAMS = ("blocks", "filters_1", "filters_2", "filters_3", "filters_4", "filters_5", "conv", "kernel_size",
              "batch_norm", "head", "dense_units", "alpha", "input_size", "fine_tune", "dropout", "learning_rate",
              "schedule", "weight_decay", "batch_size", "imputation", "augment", "aug_strength", "aug_flip")


def collect(tracker, study: str | None = None) -> list[dict]:
    """Finished trials, oldest first; a config trained twice on one key is listed once (its first run)."""
    rows, seen = [], set()
    for run in sorted(tracker.trials(study=study), key=lambda r: r.info.start_time):
        if run.info.status != "FINISHED" or "rmse" not in run.data.metrics:
            continue
        m, p, t = run.data.metrics, run.data.params, run.data.tags
        if not math.isfinite(m["rmse"]) or t.get("fkp_rung"):  # a rung below the full budget is a forecast
            continue
        # the same config at the same fidelity by the same engine (Hyperband retrains it with more epochs)
        twin = (t.get("fkp_key", ""), t.get("fkp_engine"), t.get("max_epochs"), json.dumps(p, sort_keys=True))
        if twin in seen:
            continue
        seen.add(twin)
        rows.append({
            "engine": t.get("fkp_engine", "?"), "study": t.get("fkp_study", ""), "trial": t.get("fkp_trial", ""),
            "model": p.get("model", ""), "hyperparameters": _key_params(p),
            **{k: m.get(k, float("nan")) for k in SHOWN_METRICS}, "run_id": run.info.run_id,
            "key": t.get("fkp_key", "none"), "data_sha": t.get("data_sha", ""), "max_epochs": t.get("max_epochs", ""),
        })
    return rows


def one_key(rows: list[dict]) -> tuple[list[dict], int]:
    """Rows of the newest data+split+budget key only, and how many other keys were left out: results of
    other data or budgets are not comparable."""
    if not rows:
        return rows, 0
    newest = rows[-1]["key"]
    keys = {r["key"] for r in rows}
    return [r for r in rows if r["key"] == newest], len(keys) - 1


def _key_params(params: dict) -> str:
    out = []
    for k in KEY_PARAMS:
        if k in params:
            v = params[k]
            if k in ("learning_rate", "dropout", "weight_decay", "aug_strength"):
                v = f"{float(v):.3g}"
            out.append(f"{k.replace('filters_', 'f')}={v}")
    return " ".join(out)


def pareto_flags(rows, x="rmse", y="inference_s_per_100") -> list[bool]:
    """True where no other row is at least as good on both metrics and better on one."""
    flags = []
    for r in rows:
        dominated = any(o[x] <= r[x] and o[y] <= r[y] and (o[x] < r[x] or o[y] < r[y]) for o in rows)
        flags.append(not dominated)
    return flags


def rank(rows: list[dict], metric: str = "rmse", top: int | None = None) -> list[dict]:
    if rows and metric not in rows[0]:
        raise UserError(f"unknown metric {metric!r} (choose from {', '.join(METRIC_COLUMNS)})")
    rows = [dict(r) for r in rows]  # callers keep their rows as they were
    for row, flag in zip(rows, pareto_flags(rows)):
        row["pareto"] = flag
    ranked = sorted(rows, key=lambda r: (r[metric], r["rmse"]))
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
    return ranked[:top] if top else ranked


COLUMNS = ("rank", "engine", "trial", "model", "rmse", "test_rmse", "params", "mmacs", "size_mb", "inference_s_per_100",
           "pareto", "hyperparameters")
HEADERS = ("rank", "engine", "trial", "model", "val RMSE px (ranked)", "test RMSE px", "params", "MMACs", "size MB",
           "inference s/100", "Pareto", "key hyperparameters")


FORMATS = {"rmse": ".3f", "test_rmse": ".3f", "params": ",.0f", "mmacs": ".1f", "size_mb": ".2f",
           "inference_s_per_100": ".4f"}


def _cell(key, value) -> str:
    if key == "pareto":
        return "yes" if value else ""
    if value is None:  # e.g. MMACs of runs logged before they were measured
        return ""
    return format(value, FORMATS[key]) if key in FORMATS else str(value)


def render(rows: list[dict], fmt: str = "table") -> str:
    cells = [[_cell(k, r.get(k)) for k in COLUMNS] for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(COLUMNS + ("latency_ms", "run_id", "key"))
        for r in rows:
            writer.writerow([r.get(k, "") for k in COLUMNS] + [r["latency_ms"], r["run_id"], r["key"]])
        return buf.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines) + "\n"
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
        return (f"<!doctype html><meta charset=utf-8><title>Leaderboard</title>"
                f"<style>td,th{{padding:2px 8px;border-bottom:1px solid #ddd;font:13px sans-serif}}</style>"
                f"<table><tr>{head}</tr>{body}</table>\n")
    if fmt != "table":
        raise UserError(f"unknown format {fmt!r} (choose table, csv, md or html)")
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(HEADERS)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADERS), line(["-" * w for w in widths])] + [line(c) for c in cells]) + "\n"


def export_best(tracker, row: dict, out: Path, tflite: list[str] | None = None, data_path=None) -> Path:
    """Write the model, config and metrics of `row` so `train.evaluate DIR` works on it."""
    out.mkdir(parents=True, exist_ok=True)
    local = Path(tracker.client.download_artifacts(row["run_id"], "", str(out / ".download")))
    for name in ("model.keras", "config.json", "metrics.json", "learning_curve.png", "predictions.png"):
        if (local / name).exists():
            shutil.move(str(local / name), out / name)
    shutil.rmtree(out / ".download", ignore_errors=True)
    (out / "leaderboard_row.json").write_text(json.dumps(row, indent=2, default=str))
    if tflite:
        export_edge(tracker, row["run_id"], out, tflite, data_path)
    return out


def export_edge(tracker, run_id: str, out: Path, formats: list[str], data_path=None) -> dict:
    """LiteRT files beside the model; their size and latency are logged to the trial's MLflow run."""
    from mlflow.entities import Metric

    from train import litert
    from train.model_io import keras_model
    images = y_true = None
    if data_path:
        from train import data as data_mod
        faces = data_mod.load(data_path)
        images, y_true = faces.images, faces.keypoints
    report = litert.export(keras_model(out), out, formats, images, y_true)
    (out / "litert.json").write_text(json.dumps(report, indent=2))
    now = 0
    metrics = [Metric(f"tflite_{fmt}_{k}", float(v), now, 0) for fmt, entry in report.items()
               for k, v in entry.items() if k != "file"]
    tracker.client.log_batch(run_id, metrics=metrics)
    for entry in report.values():
        tracker.client.log_artifact(run_id, str(out / entry["file"]), "litert")
    for fmt, entry in report.items():
        change = f", RMSE change {entry['rmse_change']:+.4f} px" if "rmse_change" in entry else ""
        print(f"  {entry['file']}: {entry['size_mb']:.3f} MB, {entry['s_per_100']:.4f} s/100 images, "
              f"{entry['latency_ms']:.2f} ms/image{change}")
    return report


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tracking.leaderboard", description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--study", default=None, help="only this study (default: every study of the space)")
    ap.add_argument("--metric", default="rmse", choices=METRIC_COLUMNS)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--format", default="table", choices=("table", "csv", "md", "html"))
    ap.add_argument("--output", default=None, help="write here instead of printing")
    ap.add_argument("--export-best", default=None, metavar="DIR")
    ap.add_argument("--tflite", default=None, help="with --export-best: comma list of fp32,fp16,int8")
    ap.add_argument("--data", default=None, help="with --tflite: labelled CSV to measure each export's RMSE change")
    ap.add_argument("--all-keys", action="store_true",
                    help="rank trials of different data, splits or budgets together (default: the newest key only)")
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args(argv)
    from tracking.mlflow_tracker import Tracker
    tracker = Tracker(args.space, args.tracking_uri)
    rows, hidden = (collect(tracker, args.study), 0) if args.all_keys else one_key(collect(tracker, args.study))
    rows = rank(rows, args.metric, args.top)
    if not rows:
        raise UserError(f"no finished trials for space {args.space!r} in {tracker.uri}; run python -m search.run first")
    print(f"data {rows[0]['data_sha'][:12] or '?'}, key {rows[0]['key']}, up to {rows[0]['max_epochs'] or '?'} epochs: "
          "ranked on validation RMSE; test RMSE is on faces no engine saw"
          + (f" ({hidden} other data/budget keys left out: --all-keys)" if hidden else ""), file=sys.stderr)
    text = render(rows, args.format)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({len(rows)} trials)")
    else:
        print(text, end="")
    if args.export_best:
        formats = [f.strip() for f in args.tflite.split(",")] if args.tflite else None
        out = export_best(tracker, rows[0], Path(args.export_best), formats, args.data)
        print(f"exported best trial ({rows[0]['engine']} #{rows[0]['trial']}, RMSE {rows[0]['rmse']:.3f}) to {out}")


if __name__ == "__main__":
    main()
