"""Time the inference of a study's logged models again, in interleaved rounds on a quiet machine.

python -m tracking.retime --space paper --study NAME[,NAME…] [--rounds 5] [--tracking-uri URI]

A trial times its model right after training, so anything else running then (another job, a test, a
browser) inflates that one figure: in the paper grid two cells of the same network came out 2x slower
than their neighbours. Comparing inference times across cells needs them measured under the same load.
Each finished trial's `model.keras` is loaded from MLflow and timed by the same function trials use
(train/metrics.py: inference_time); the new figures are logged as step 1 of the same metrics, so MLflow
and the reports show them while step 0 keeps what the trial measured, and the run is tagged `retimed_at`.

One pass, one model after another, still drifts: a grid's manual row timed alone spread 36% across its
columns, one network. So every model is loaded first, then timed once per round, each round in another
order, and the median over the rounds is kept. Studies compared in one report are retimed in one call.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from train.errors import UserError, cli

METRICS = ("inference_s_per_100", "latency_ms")


def retime(tracker, study: str, rounds: int = 5, log=print) -> int:
    """`study`: one name or a comma list, timed together."""
    import numpy as np
    from mlflow.entities import Metric

    from tracking.report_data import _load, study_names
    from train import metrics
    runs = []
    for name in study_names(study):
        found = [r for r in tracker.trials(study=name)
                 if r.info.status == "FINISHED" and "inference_s_per_100" in r.data.metrics]
        if not found:
            raise UserError(f"no finished trial with an inference time in study {name!r} of {tracker.uri}")
        runs += found
    models = []
    with tempfile.TemporaryDirectory(prefix="fkp-retime-") as tmp:
        for i, run in enumerate(runs):
            models.append(_load(tracker.client.download_artifacts(run.info.run_id, "model.keras", f"{tmp}/{i}")))
    timed = [[] for _ in runs]
    rng = np.random.default_rng(0)  # the same orders on every call
    for r in range(rounds):
        for i in rng.permutation(len(runs)):
            timed[i].append(metrics.inference_time(models[i]))
        log(f"[retime] round {r + 1}/{rounds}: {len(runs)} models timed")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for run, times in zip(runs, timed):
        median = {k: float(np.median([t[k] for t in times])) for k in METRICS}
        now = int(time.time() * 1000)
        tracker.client.log_batch(run.info.run_id, metrics=[Metric(k, median[k], now, 1) for k in METRICS])
        tracker.client.set_tag(run.info.run_id, "retimed_at", stamp)
        tracker.client.set_tag(run.info.run_id, "retime_rounds", str(rounds))
        log(f"[retime] {run.info.run_name}: {run.data.metrics['inference_s_per_100']:.4f} -> "
            f"{median['inference_s_per_100']:.4f} s/100 (median of {rounds})")
    return len(runs)


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tracking.retime", description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="paper", help="the MLflow experiment: paper, cnn, ...")
    ap.add_argument("--study", required=True, help="a study, or a comma list timed together")
    ap.add_argument("--rounds", type=int, default=5, help="timings per model, interleaved; the median is kept")
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from tracking.mlflow_tracker import Tracker
    if args.rounds < 1:
        raise UserError("--rounds must be at least 1")
    n = retime(Tracker(args.space, args.tracking_uri), args.study, args.rounds)
    print(f"retimed {n} trial(s) of study {args.study!r}")


if __name__ == "__main__":
    main()
