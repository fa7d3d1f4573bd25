"""python -m bench.repro: the same final-stage command run twice gives the same model.

Each run copies the stage's work folder, forgets the named steps, and runs the command on the copy in a
fresh process, so exactly those steps train again, as after a kill. Then it compares what they scored.

    python -m bench.repro --steps distil/228b29d5-9f13b227/seed1 -- --study search-default --top-k 3 \\
        --seeds 2 --ensemble 3 --distil --student docs/search-default/trial-40-flip.json \\
        --max-params 60000 --max-mmacs 12
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from train.errors import UserError, check_training_code, cli

TOLERANCE_PX = 0.01  # issue 19: the same command twice, the same test RMSE within 0.01 px


def forget(work: Path, steps: list[str], into: Path) -> None:
    """A copy of `work` without `steps`, which the next stage on it trains again."""
    shutil.copytree(work, into)
    path = into / "state.json"
    state = json.loads(path.read_text())
    for name in steps:
        state["steps"].pop(name)
        shutil.rmtree(into / name.replace("/", "_"), ignore_errors=True)
    path.write_text(json.dumps(state, indent=1))


def score(metrics: dict) -> tuple[str, float]:
    """The step's test RMSE; a selection run never scores the test faces, so its validation RMSE."""
    test = metrics.get("test_rmse", float("nan"))
    return ("test", test) if test == test else ("val", metrics["rmse"])


def markdown(steps: list[str], runs: list[dict], command: str) -> str:
    lines = ["## Reproducibility: the same final stage twice", "",
             "Each run trains the steps below again from a copy of the stage's work folder, in a fresh process. "
             f"Target: the same RMSE within {TOLERANCE_PX} px (test; validation for a selection run).", "",
             f"    python -m search.finalize {command}", "",
             "| step | RMSE | run 1 px | run 2 px | difference px | run 1 training s | run 2 training s |",
             "|---|---|---|---|---|---|---|"]
    for name in steps:
        (kind, a), (_, b) = (r["scores"][name] for r in runs)
        lines.append(f"| `{name}` | {kind} | {a:.6f} | {b:.6f} | {abs(a - b):.6f} | {runs[0]['seconds'][name]:.0f} | "
                     f"{runs[1]['seconds'][name]:.0f} |")
    return "\n".join(lines)


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.repro", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", required=True, help="comma list of the stage's steps to train again, e.g. "
                                                   "distil/228b29d5-9f13b227/seed1")
    ap.add_argument("--work", default=None, help="the stage's work folder (default: runs/finalize/STUDY)")
    ap.add_argument("--results", default=None, help="folder of results.json/results.md (default: bench/)")
    ap.add_argument("stage", nargs=argparse.REMAINDER, help="-- then search.finalize's arguments, without --work "
                                                            "and --out")
    args = ap.parse_args(argv)
    stage = args.stage[1:] if args.stage[:1] == ["--"] else args.stage
    flags = [a.split("=")[0] for a in stage]
    study = next((a.partition("=")[2] or (stage[i + 1] if i + 1 < len(stage) else "")
                  for i, a in enumerate(stage) if flags[i] == "--study"), "")
    if not study:
        raise UserError("give the final stage's arguments after --, with its --study")
    if {"--work", "--out"} & set(flags):
        raise UserError("--work and --out belong to bench.repro: each run gets a copy of the work folder and "
                        "exports nothing")
    work = Path(args.work or Path("runs") / "finalize" / study)
    steps = [s for s in args.steps.split(",") if s]
    state = work / "state.json"
    if not state.exists():
        raise UserError(f"{state}: no such file (run the final stage once first)")
    kept = json.loads(state.read_text())
    missing = [s for s in steps if s not in kept["steps"]]
    if missing:
        raise UserError(f"{state}: no step {', '.join(missing)} (its steps are the lines '[finalize] NAME: ...')")
    from train.trial import TRAINING_CODE
    # before copying: its kept steps would be mixed with steps of this code
    check_training_code(str(work), kept["plan"].get("training_code", 1), TRAINING_CODE,
                        "run the final stage again on a fresh --work first")
    runs = []
    with tempfile.TemporaryDirectory(prefix="fkp-repro-") as tmp:
        for i in (1, 2):
            copy = Path(tmp) / f"run{i}"
            forget(work, steps, copy)
            ran = subprocess.run([sys.executable, "-m", "search.finalize", *stage, "--work", str(copy)])
            if ran.returncode:
                raise UserError(f"run {i} of the final stage on a copy of {work} ended with exit status "
                                f"{ran.returncode} (its message is above)")
            done = json.loads((copy / "state.json").read_text())["steps"]
            runs.append({"scores": {s: score(done[s]["metrics"]) for s in steps},
                         "seconds": {s: done[s]["metrics"]["train_s"] for s in steps}})
    md = markdown(steps, runs, " ".join(stage))
    print(md)
    from bench import sections
    sections.update("repro", md, Path(args.results) if args.results else sections.HERE)
    worst = max(abs(runs[0]["scores"][s][1] - runs[1]["scores"][s][1]) for s in steps)
    if worst > TOLERANCE_PX:  # a failed measurement, not bad input: exit 1
        sys.exit(f"bench.repro: the two runs differ by {worst:.4f} px, over {TOLERANCE_PX} px")


if __name__ == "__main__":
    main()
