"""Score a saved model on any labelled Kaggle-format CSV: RMSE overall and per keypoint.

python -m train.evaluate MODEL --data PATH

MODEL is anything train.predict takes (train/model_io.py): a folder, a .keras or .tflite file, or a
runs:/ or models:/ URI, so the int8 file that will ship is scored as it is.
"""
import argparse
import json

import numpy as np

from train.errors import UserError, cli


def evaluate(spec, data, tracking_uri: str | None = None) -> dict:
    from train import metrics, model_io
    if not data.labelled:
        raise UserError(f"{data.path}: has no keypoint labels, so there is nothing to score against")
    model = model_io.load(str(spec), tracking_uri)
    pred = model_io.predict(model, data.images)
    return {"rmse": metrics.rmse(data.keypoints, pred), "rows": len(data), "model": model.kind,
            "per_keypoint": metrics.rmse_per_keypoint(data.keypoints, pred),
            "labelled_cells": int(np.isfinite(data.keypoints).sum())}


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a folder with model.keras or MLmodel, a .keras or .tflite file, or a runs:/ or "
                                  "models:/ URI")
    ap.add_argument("--tracking-uri", default=None, help="for runs:/ and models:/ (default: mlruns/)")
    ap.add_argument("--data", required=True, help="labelled Kaggle-format CSV")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    from train import data as data_mod
    result = evaluate(args.model, data_mod.load(args.data), args.tracking_uri)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"RMSE {result['rmse']:.3f} px ({result['model']} model) over {result['labelled_cells']} labelled cells in {result['rows']} faces")
    for name, value in result["per_keypoint"].items():
        print(f"  {name:<26} {'-' if np.isnan(value) else f'{value:.3f}'}")


if __name__ == "__main__":
    main()
