"""Reports from MLflow as Markdown + HTML with PNG plots.

python -m tracking.report --space paper [--study NAME[,NAME…]] [--output DIR]   the paper's grid beside its published tables
python -m tracking.report --space cnn [--study NAME[,NAME…]] [--output DIR]   engines compared on one space

Data: report_data.py; figures: report_figures.py; Markdown and HTML: report_render.py (the paper's: report_paper.py,
its conclusions: paper_conclusions.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tracking import report_data as rd
from train.errors import UserError, cli


def paper_report(tracker, study: str, out: Path, command: str, paper_dir=None, best=None) -> str:
    from tracking import report_figures, report_paper
    grid = rd.cells(tracker, study)
    if not grid:
        raise UserError(f"no finished grid cells of study {study!r} in {tracker.uri}; "
                        "run python -m search.run --space paper first")
    curves = rd.curves(tracker, grid)
    files = report_figures.paper(grid, curves, out)
    markdown = report_paper.paper(grid, files, command, study, rd.published(paper_dir or rd.PAPER_FIGURES),
                                  curves, rd.exported(best) if best else None)
    _write(out, markdown, "Paper study")
    return f"{len(files)} plots ({len(grid)} grid cells)"


def newest_study(tracker) -> str:
    """The grid study a plain `search.run --space paper` made last (its name carries a digest)."""
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.fkp_role = 'search'",
                                      order_by=["attributes.start_time DESC"], max_results=100)
    default = [r.data.tags["fkp_study"] for r in runs
               if r.data.tags.get("fkp_study", "").startswith("paper") and "paper-kt" not in r.data.tags["fkp_study"]]
    return default[0] if default else "paper"


def engines_report(tracker, space: str, studies: list[str] | None, out: Path, command: str) -> str:
    from tracking import report_figures, report_render
    found = rd.searches(tracker, studies)
    if not any(s.trials for s in found):
        which = f"studies {', '.join(studies)}" if studies else "any study"
        raise UserError(f"no trials of {which} in space {space!r} in {tracker.uri}; run python -m search.run first")
    for stale in ("best_so_far.png", "pareto.png", "importances.png", "worst_faces.png"):
        (out / stale).unlink(missing_ok=True)  # never leave a previous report's figure beside this one
    use_test = rd.has_test(found)
    metric = "test_rmse" if use_test else "rmse"
    finished = [t for s in found for t in s.finished]
    notes = {"floor": rd.mean_face([{"mean_face_rmse": t.get("mean_face_test_rmse" if use_test else "mean_face_rmse")}
                                    for t in finished])}
    files = {}
    if finished:
        files["best_so_far"] = report_figures.best_so_far(found, use_test, notes["floor"], out)
    rows = [t for t in finished if all(rd.finite(t.get(k)) for k in (metric, "inference_s_per_100", "params"))]
    flags = rd.pareto(rows, (metric, "inference_s_per_100", "params"))
    front = sorted((r for r, f in zip(rows, flags) if f), key=lambda r: r[metric])
    if rows:
        files["pareto"] = report_figures.pareto(rows, flags, metric, out)
    importance, notes["importance_reason"] = rd.importances(found)
    if importance:
        files["importances"] = report_figures.importances(importance, out)
    if finished:
        best = min(finished, key=lambda t: t["rmse"])
        try:
            faces, why = rd.worst_faces(tracker, best)
        except Exception as exc:  # a report never dies on its last figure
            faces, why = None, f"{type(exc).__name__}: {exc}"[:300]
        if faces is not None:
            files["faces"] = report_figures.faces(faces, out)
            notes["faces"] = faces.source
        else:
            notes["faces_reason"] = why
    markdown = report_render.engines(space, found, files, command, notes, importance, front)
    _write(out, markdown, f"Engines on {space}")
    return f"{len(files)} plots ({len(finished)} finished trials, {len(found)} searches)"


def _write(out: Path, markdown: str, title: str) -> None:
    from tracking import report_render
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(report_render.to_html(markdown, title))


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tracking.report", description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="paper", help="paper (the paper's grid) or a search space such as cnn")
    ap.add_argument("--study", default=None,
                    help="paper: the grid's study (default: the newest), or a comma list whose later studies' cells replace the same "
                         "cells of earlier ones (a row run again at another cap). Other spaces: a comma list of studies, each a "
                         "repeat (default: the newest study and every study on the same data and budget)")
    ap.add_argument("--output", default=None, help="default: docs/paper, or reports/<space>")
    ap.add_argument("--paper-figures", default=None, help="folder of the paper's published CSVs "
                                                          "(default: tracking/paper_figures)")
    ap.add_argument("--best", default=None,
                    help="paper: an exported model folder (search --export-best, search.finalize) shown beside the "
                         "grid (default: docs/best when it exists; 'none' leaves it out)")
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import spaces
    if args.space != "paper":
        spaces.get(args.space)  # an unknown space is a one-line error
    from tracking.mlflow_tracker import Tracker
    t0 = time.perf_counter()
    tracker = Tracker(args.space, args.tracking_uri)
    out = Path(args.output or ("docs/paper" if args.space == "paper" else f"reports/{args.space}"))
    out.mkdir(parents=True, exist_ok=True)
    command = ("python -m tracking.report " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    if args.space == "paper":
        best = args.best or ("docs/best" if Path("docs/best/metrics.json").exists() else None)
        made = paper_report(tracker, args.study or newest_study(tracker), out, command, args.paper_figures,
                            None if best == "none" else best)
    else:
        studies = rd.study_names(args.study) if args.study else None
        made = engines_report(tracker, args.space, studies, out, command)
    print(f"wrote {out / 'report.md'}, {out / 'report.html'} and {made} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
