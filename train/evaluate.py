"""Score a saved model on any labelled Kaggle-format CSV: RMSE overall and per keypoint.

python -m train.evaluate DIR --data PATH
"""
import argparse
import json
from pathlib import Path

import numpy as np

from train.errors import UserError, cli


def load_model(folder):
    import keras

    import train.losses  # noqa: F401  (registers the custom loss/metric for loading)
    import train.models  # noqa: F401  (registers custom layers, e.g. the heatmap head)
    path = Path(folder) / "model.keras"
    if not path.exists():
        raise UserError(f"{folder}: no model.keras here (train.fit --out or leaderboard --export-best writes one)")
    return keras.models.load_model(path, compile=False)


def evaluate(folder, data) -> dict:
    from train import metrics
    if not data.labelled:
        raise UserError(f"{data.path}: has no keypoint labels, so there is nothing to score against")
    pred = metrics.predict(load_model(folder), data.images)
    return {"rmse": metrics.rmse(data.keypoints, pred), "rows": len(data),
            "per_keypoint": metrics.rmse_per_keypoint(data.keypoints, pred),
            "labelled_cells": int(np.isfinite(data.keypoints).sum())}


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="folder with model.keras (from train.fit or --export-best)")
    ap.add_argument("--data", required=True, help="labelled Kaggle-format CSV")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    from train import data as data_mod
    result = evaluate(args.folder, data_mod.load(args.data))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"RMSE {result['rmse']:.3f} px over {result['labelled_cells']} labelled cells in {result['rows']} faces")
    for name, value in result["per_keypoint"].items():
        print(f"  {name:<26} {'-' if np.isnan(value) else f'{value:.3f}'}")


if __name__ == "__main__":
    main()
