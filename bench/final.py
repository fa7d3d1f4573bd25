"""python -m bench.final FOLDER: the final stage's figures (search.finalize's finalize.json) as a section of
bench/results.md: what each model it made scored on the test split, at what size and speed.

    python -m bench.final docs/final-cnn-1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from train.errors import UserError, cli


def markdown(report: dict, folder: str) -> str:
    chosen = report["chosen"]
    lines = [f"## Final stage: `{folder}` (study `{report['study']}`)", "",
             f"Chosen: trial {chosen['trial']}, validation RMSE over seeds "
             f"{', '.join(f'{v:.3f}' for v in chosen['val_rmse'])} (mean {chosen['mean_val_rmse']:.3f} px); "
             f"refit {report['refit_epochs']} epochs{' planned' if report.get('timeout_s') else ''} on "
             f"{report['train_faces'] + report['val_faces']} faces; "
             f"shipped: `{report['shipped']}`.", "",
             "| candidate trial | validation RMSE per seed | mean |", "|---|---|---|"]
    for s in sorted(report["selection"].values(), key=lambda s: s["mean_val_rmse"]):
        lines.append(f"| {s['trial']} | {', '.join(f'{v:.3f}' for v in s['val_rmse'])} | {s['mean_val_rmse']:.3f} |")
    lines += ["", "| model | test RMSE px | params | MMACs | s/100 images |", "|---|---|---|---|---|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {m['test_rmse']:.3f} | {m['params']:,} | {m['mmacs']:.1f} | "
                     f"{m['inference_s_per_100']:.3f} |")
    tta = report.get("flip_tta")
    if tta:
        lines.append(f"| flip TTA of the shipped model (not shipped) | {tta['test_rmse']:.3f} | {tta['params']:,} | "
                     f"{tta['mmacs']:.1f} | {tta['inference_s_per_100']:.3f} |")
    cost = report.get("training_s")
    if cost:
        lines += ["", f"Cost: {sum(cost.values()) / 60:.1f} min of training on this machine over {len(cost)} models "
                      "(a step kept from an earlier stage counts at what it cost then; the study's own trials "
                      "not counted)."]
        if report.get("timeout_s"):
            trained = report.get("epochs_trained", {})
            lines += ["", f"Time budget: `--timeout {report['timeout_s']:.0f}` (seconds), shared among the steps by "
                          "their compute; epochs each step trained: "
                          + ", ".join(f"`{n}` {trained.get(n, '?')} epochs in {s:.0f} s"
                                      for n, s in cost.items()) + "."]
    gain = report.get("distillation_gain_px")
    if gain:
        lines += ["", f"Distillation: {gain['mean']:+.3f} px test RMSE against the student architecture trained "
                      f"alone (per seed {', '.join(f'{g:+.3f}' for g in gain['per_seed'])}; positive is better)."]
    return "\n".join(lines)


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.final", description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    args = ap.parse_args(argv)
    path = Path(args.folder) / "finalize.json"
    if not path.exists():
        raise UserError(f"{path}: no such file (search.finalize --out writes it)")
    md = markdown(json.loads(path.read_text()), args.folder)
    print(md)
    from bench.sections import update
    update(f"final:{args.folder}", md)


if __name__ == "__main__":
    main()
