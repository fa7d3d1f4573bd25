"""Score a saved model on any labelled Kaggle-format CSV: RMSE overall and per keypoint.

python -m train.evaluate MODEL --data PATH [--faces test]

MODEL is anything train.predict takes (train/model_io.py): a folder, a .keras or .tflite file, or a
runs:/ or models:/ URI, so the int8 file that will ship is scored as it is.

`--faces test` scores only the faces that train.fit and search.run held out of that file (the same split,
from the same --split, fractions and --seed), so a model trained on the rest gets an honest figure.
"""
import argparse
import json

import numpy as np

from train.errors import UserError, cli

PARTS = ("all", "train", "val", "test")


def faces_of(data, part: str = "all", val_fraction: float = 0.15, test_fraction: float = 0.15,
             method: str = "group", seed: int = 0):
    """The faces of one part of the trials' split (train/trial.py calls split3 the same way)."""
    if part == "all":
        return data
    if part == "test" and test_fraction == 0:
        raise UserError("--faces test with --test-fraction 0: there is no test split to score")
    from train.split import split3
    index = dict(zip(("train", "val", "test"), split3(data, val_fraction, test_fraction, method, seed)))[part]
    return data.subset(index)


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
    ap.add_argument("--faces", choices=PARTS, default="all",
                    help="all the file's faces (default), or one part of the split that train.fit and search.run "
                         "make of it: test is what they never trained or chose on")
    from train.cli_args import add_split_flags
    add_split_flags(ap)  # as given to train.fit or search.run
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    from train import data as data_mod
    faces = faces_of(data_mod.load(args.data), args.faces, args.val_fraction, args.test_fraction, args.split, args.seed)
    result = {**evaluate(args.model, faces, args.tracking_uri), "faces": args.faces}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    where = "" if args.faces == "all" else f" of the {args.faces} split"
    print(f"RMSE {result['rmse']:.3f} px ({result['model']} model) over {result['labelled_cells']} labelled cells "
          f"in {result['rows']} faces{where}")
    for name, value in result["per_keypoint"].items():
        print(f"  {name:<26} {'-' if np.isnan(value) else f'{value:.3f}'}")


if __name__ == "__main__":
    main()
