"""python -m bench.quickstart: the README's main job as a new user meets it, measured.

Clones this repository's HEAD into a temporary folder beside `../shared` (as CI does), runs the first command of
the README's quick start there (set-up and main job: one line), and writes what it cost and what it found as a
section of bench/results.md: wall time with the install, the study's own time, the best trial's validation and
test RMSE, its epochs and whether its schedule was re-planned to fit the time budget.

    python -m bench.quickstart            # about 10 minutes
    python -m bench.quickstart --cpus 0   # pinned to one core (taskset): a machine with half the speed
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from train.errors import UserError, cli

REPO = Path(__file__).resolve().parents[1]
LIMIT_S, TARGET_PX = 600, 1.45  # issue 18: the main job, with the install, in 10 minutes, at 1.45 px or better


def main_job_command(readme: Path) -> str:
    """The quick start's first command line: the one that sets up and runs the main job."""
    text = readme.read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S)
    lines = [ln for ln in (block.group(1).splitlines() if block else []) if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise UserError(f"{readme}: no command in its '## Quick start' bash block")
    return lines[0]


def best_trial(mlruns: Path) -> dict:
    """The finished full-budget trial with the lowest validation RMSE in the clone's MLflow store."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=1000)
            if r.data.tags.get("fkp_status") == "finished" and r.data.tags.get("fkp_budget") == "full"]
    if not runs:
        raise UserError(f"{mlruns}: the main job finished no full-budget trial")
    run = min(runs, key=lambda r: r.data.metrics["rmse"])
    return {"trials": len(runs), "val": run.data.metrics["rmse"], "test": run.data.metrics["test_rmse"],
            "params": int(run.data.metrics["params"]), "epochs": int(run.data.metrics["epochs"]),
            "max_epochs": run.data.tags.get("max_epochs"), "fit_to_time": run.data.tags.get("schedule_fit_to_time"),
            "name": run.info.run_name}


def markdown(command: str, cpus: str | None, wall_s: float, found: dict, study: str, head: str) -> str:
    where = f"pinned to CPU {cpus} (`taskset -c {cpus}`)" if cpus else "on both cores"
    ok = wall_s <= LIMIT_S and found["test"] <= TARGET_PX
    plan = (f"its schedule re-planned to end at epoch {found['fit_to_time']} of {found['max_epochs']}"
            if found["fit_to_time"] else f"its full schedule of {found['max_epochs']} epochs")
    return "\n".join([
        f"## Quick start (the README's main job), {where}", "",
        f"A fresh clone of {head} beside `../shared`, running the quick start's first command:", "",
        f"    {command}", "",
        "| wall time with the install | study time | best trial | val RMSE px | test RMSE px | params | epochs |",
        "|---|---|---|---|---|---|---|",
        f"| {wall_s:.0f} s | {study} | {found['name']} (of {found['trials']} full) | {found['val']:.3f} | "
        f"{found['test']:.3f} | {found['params']:,} | {found['epochs']}: {plan} |", "",
        f"Target (≤ {LIMIT_S} s with the install, test RMSE ≤ {TARGET_PX} px): {'met' if ok else 'MISSED'}."])


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.quickstart", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", default=None, help="run pinned to these CPUs (taskset -c), e.g. 0: a slower machine")
    ap.add_argument("--keep", action="store_true", help="keep the clone (its mlruns/ holds the study)")
    args = ap.parse_args(argv)
    shared = (REPO.parent / "shared").resolve()
    if not (shared / "data").is_dir():
        raise UserError(f"{shared}: no shared data beside the repository (the main job reads ../shared/data)")
    command = main_job_command(REPO / "README.md")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="fkp-quickstart-"))
    subprocess.run(["git", "clone", "-q", str(REPO), str(root / "repo")], check=True)
    (root / "shared").symlink_to(shared)
    log = root / "main-job.log"
    run = ["taskset", "-c", args.cpus, "bash", "-c", command] if args.cpus else ["bash", "-c", command]
    print(f"[quickstart] {head}: {command} (log: {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(run, cwd=root / "repo", stdout=out, stderr=subprocess.STDOUT).returncode
    wall_s = time.perf_counter() - t0
    said = log.read_text()
    if code:
        raise UserError(f"{log}: the main job exited with status {code}: {said.strip().splitlines()[-1:]}")
    study = re.search(r"Study time: (\S+) used", said)
    section = markdown(command, args.cpus, wall_s, best_trial(root / "repo" / "mlruns"),
                       study.group(1) if study else "?", head)
    from bench.sections import update
    update("quickstart" + (f"-cpus-{args.cpus}" if args.cpus else ""), section)
    print(section)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
