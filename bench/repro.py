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
import time
from pathlib import Path

from train.errors import UserError, cli

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


def markdown(steps: list[str], runs: list[dict], command: str) -> str:
    lines = ["## Reproducibility: the same final stage twice", "",
             "Each run trains the steps below again from a copy of the stage's work folder, in a fresh process. "
             f"Target: the same test RMSE within {TOLERANCE_PX} px.", "",
             f"    python -m search.finalize {command}", "",
             "| step | run 1 test RMSE px | run 2 test RMSE px | difference px | run 1 s | run 2 s |",
             "|---|---|---|---|---|---|"]
    for name in steps:
        a, b = (r["scores"][name] for r in runs)
        lines.append(f"| `{name}` | {a:.6f} | {b:.6f} | {abs(a - b):.6f} | {runs[0]['seconds']:.0f} | "
                     f"{runs[1]['seconds']:.0f} |")
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
    if not stage or "--study" not in stage:
        raise UserError("give the final stage's arguments after --, with its --study")
    if {"--work", "--out"} & set(stage):
        raise UserError("--work and --out belong to bench.repro: each run gets a copy of the work folder and "
                        "exports nothing")
    work = Path(args.work or Path("runs") / "finalize" / stage[stage.index("--study") + 1])
    steps = [s for s in args.steps.split(",") if s]
    state = work / "state.json"
    if not state.exists():
        raise UserError(f"{state}: no such file (run the final stage once first)")
    missing = [s for s in steps if s not in json.loads(state.read_text())["steps"]]
    if missing:
        raise UserError(f"{state}: no step {', '.join(missing)} (its steps are the lines '[finalize] NAME: ...')")
    runs = []
    with tempfile.TemporaryDirectory(prefix="fkp-repro-") as tmp:
        for i in (1, 2):
            copy = Path(tmp) / f"run{i}"
            forget(work, steps, copy)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "search.finalize", *stage, "--work", str(copy)], check=True)
            done = json.loads((copy / "state.json").read_text())["steps"]
            runs.append({"scores": {s: done[s]["metrics"]["test_rmse"] for s in steps},
                         "seconds": time.perf_counter() - t0})
    md = markdown(steps, runs, " ".join(stage))
    print(md)
    from bench import sections
    sections.update("repro", md, Path(args.results) if args.results else sections.HERE)
    worst = max(abs(runs[0]["scores"][s] - runs[1]["scores"][s]) for s in steps)
    if worst > TOLERANCE_PX:  # a failed measurement, not bad input: exit 1
        sys.exit(f"bench.repro: the two runs differ by {worst:.4f} px, over {TOLERANCE_PX} px")


if __name__ == "__main__":
    main()
