"""Which flip convention matches the data: x -> 95 - x or x -> 96 - x?

A model trained without flip has only seen faces as they are. Mirror the validation faces and
their keypoints under each convention: the convention whose mirrored labels the model predicts
better is the one the labels were made in. `python -m bench.flip [--epochs 12]`
"""
import argparse

import numpy as np

from spaces.cnn import EDGE
from train import data as data_mod
from train.cli_args import DEFAULT_DATA
from train.keypoints import FLIP_PERMUTATION
from train.metrics import predict, rmse
from train.split import split3
from train.trial import TrialSettings, run_trial


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.flip", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args(argv)
    data = data_mod.load(args.data)
    settings = TrialSettings(epochs=args.epochs, patience=args.epochs)
    result = run_trial({"model": "cnn", **EDGE, "aug_flip": False}, data, settings)
    _, val, _ = split3(data, settings.val_fraction, settings.test_fraction, settings.split, settings.seed)
    plain = predict(result.model, data.images[val])
    images, truth = data.images[val][:, :, ::-1], data.keypoints[val][:, FLIP_PERMUTATION]
    pred = predict(result.model, images)
    bias = np.nanmean(plain[:, 0::2] - data.keypoints[val][:, 0::2])
    print(f"unmirrored validation faces: RMSE {result.metrics['rmse']:.3f} px, mean x error {bias:+.3f} px")
    for axis in (95, 96):
        mirrored = truth.copy()
        mirrored[:, 0::2] = axis - mirrored[:, 0::2]
        x_err = np.nanmean(pred[:, 0::2] - mirrored[:, 0::2])
        print(f"mirrored faces, x -> {axis} - x: RMSE {rmse(mirrored, pred):.3f} px, mean x error {x_err:+.3f} px")
    # The axis the model itself implies: its prediction on a mirrored face, mirrored back, meets its
    # prediction on the face as it is. No label enters this estimate.
    implied = np.nanmean(pred[:, FLIP_PERMUTATION][:, 0::2] + plain[:, 0::2])
    print(f"axis implied by the model's own predictions: x -> {implied:.2f} - x")


if __name__ == "__main__":
    main()
