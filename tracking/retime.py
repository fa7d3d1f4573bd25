"""Time the inference of a study's logged models again, one after another on a quiet machine.

python -m tracking.retime --space paper --study NAME [--tracking-uri URI]

A trial times its model right after training, so anything else running then (another job, a test, a
browser) inflates that one figure: in the paper grid two cells of the same network came out 2x slower
than their neighbours. Comparing inference times across cells needs them measured under the same load.
Each finished trial's `model.keras` is loaded from MLflow and timed by the same function trials use
(train/metrics.py: inference_time); the new figures are logged as step 1 of the same metrics, so MLflow
and the reports show them while step 0 keeps what the trial measured, and the run is tagged `retimed_at`.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from train.errors import UserError, cli

METRICS = ("inference_s_per_100", "latency_ms")


def retime(tracker, study: str, log=print) -> int:
    from mlflow.entities import Metric

    from tracking.report_data import _load
    from train import metrics
    runs = [r for r in tracker.trials(study=study) if r.info.status == "FINISHED" and "inference_s_per_100" in r.data.metrics]
    if not runs:
        raise UserError(f"no finished trial with an inference time in study {study!r} of {tracker.uri}")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for i, run in enumerate(runs, 1):
        with tempfile.TemporaryDirectory(prefix="fkp-retime-") as tmp:
            model = _load(tracker.client.download_artifacts(run.info.run_id, "model.keras", tmp))
            timed = metrics.inference_time(model)
        now = int(time.time() * 1000)
        tracker.client.log_batch(run.info.run_id, metrics=[Metric(k, timed[k], now, 1) for k in METRICS])
        tracker.client.set_tag(run.info.run_id, "retimed_at", stamp)
        log(f"[retime] {i}/{len(runs)} {run.info.run_name}: {run.data.metrics['inference_s_per_100']:.4f} -> "
            f"{timed['inference_s_per_100']:.4f} s/100")
    return len(runs)


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tracking.retime", description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="paper", help="the MLflow experiment: paper, cnn, ...")
    ap.add_argument("--study", required=True)
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from tracking.mlflow_tracker import Tracker
    n = retime(Tracker(args.space, args.tracking_uri), args.study)
    print(f"retimed {n} trial(s) of study {args.study!r}")


if __name__ == "__main__":
    main()
