"""Where a flipped label belongs: the mirror axis of each keypoint, measured, and what a flip costs under it.

A model trained without flip has only seen faces as they are. On a mirrored face it places each keypoint
as the labels of unmirrored faces taught it, so the mean of its x on the face and its mirrored x on the
mirrored face is the axis about which that keypoint's labels mirror: no label enters this estimate. The
axes, averaged over each left/right pair, are `train.keypoints.FLIP_AXES`. Then the mirrored validation
labels are scored against its predictions about 95, 96 and those axes.
`python -m bench.flip [--model FOLDER | --epochs 12]`
"""
import argparse

import numpy as np

from bench import sections
from spaces.cnn import EDGE
from train import data as data_mod
from train.cli_args import DEFAULT_DATA
from train.keypoints import FLIP_AXES, FLIP_PERMUTATION, NAMES
from train.metrics import predict, rmse
from train.split import split3
from train.trial import TrialSettings, run_trial


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.flip", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--model", help="folder with model.keras trained without flip on the default split's "
                                    "training faces (default: train the EDGE preset for --epochs)")
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args(argv)
    data = data_mod.load(args.data)
    settings = TrialSettings(epochs=args.epochs, patience=args.epochs)
    if args.model:
        from train.model_io import keras_model
        model = keras_model(args.model)
    else:
        model = run_trial({"model": "cnn", **EDGE, "aug_flip": False}, data, settings).model
    _, val, _ = split3(data, settings.val_fraction, settings.test_fraction, settings.split, settings.seed)
    plain = predict(model, data.images[val])
    pred = predict(model, data.images[val][:, :, ::-1])
    truth = data.keypoints[val][:, FLIP_PERMUTATION]
    base = rmse(data.keypoints[val], plain)
    print(f"unmirrored validation faces ({len(val)}): RMSE {base:.3f} px")
    implied = np.nanmean(pred[:, FLIP_PERMUTATION][:, 0::2] + plain[:, 0::2], axis=0)
    paired = (implied + implied[np.asarray(FLIP_PERMUTATION[0::2]) // 2]) / 2
    for name, axis, pair in zip(NAMES, implied, paired):
        print(f"  {name:26s} axis {axis:6.2f}  pair mean {pair:6.2f}")
    scores = {}
    for label, axes in (("95", np.full(15, 95.0)), ("96", np.full(15, 96.0)),
                        ("the pair means above", paired), ("`FLIP_AXES`", np.float32(FLIP_AXES))):
        mirrored = truth.copy()
        mirrored[:, 0::2] = axes - mirrored[:, 0::2]
        scores[label] = rmse(mirrored, pred)
        print(f"mirrored faces, labels mirrored about {label}: RMSE {scores[label]:.3f} px")
    print("FLIP_AXES =", [round(float(a), 2) for a in paired])
    sections.update("flip", _markdown(len(val), base, implied, paired, scores, args.model))


def _markdown(n, base, implied, paired, scores, model) -> str:
    lines = ["## Flip: each keypoint's label axis", "",
             f"A model trained without flip ({model or 'the EDGE preset'}) on {n} validation faces: "
             f"RMSE {base:.3f} px on the faces as they are. *Axis*: the mean of its x on a face and its mirrored x "
             "on the mirrored face (no label enters it); *pair mean*: averaged over each left/right pair.", "",
             "| keypoint | axis | pair mean |", "|---|---|---|"]
    lines += [f"| {name} | {a:.2f} | {p:.2f} |" for name, a, p in zip(NAMES, implied, paired)]
    lines += ["", "| mirrored labels about | RMSE px against its predictions on mirrored faces |", "|---|---|"]
    lines += [f"| {label} | {v:.3f} |" for label, v in scores.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
