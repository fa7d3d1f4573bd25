"""The paper's tables and charts, rendered from MLflow for the user's own data.

python -m tracking.report --space paper [--output DIR]   -> DIR/report.md, DIR/report.html, DIR/*.png
"""
from __future__ import annotations

import argparse
import html
import math
from pathlib import Path

from spaces.paper import COLUMNS, MASKED_COLUMNS, PAPER_COLUMNS, ROWS
from train.errors import UserError, cli

# Published figures we could confirm (the issue quotes them); other cells of the paper's tables
# were not available to us, and the report says so rather than guessing.
PAPER_PARAMS = {"baseline": 1_890_366, "manual": 235_834}
SMALL_PARAMS = 250_000  # the edge-device budget our users aim for


def cells(tracker, study: str) -> dict:
    """(model, column) -> metrics, curve run id and training budget of the finished cell (latest run wins)."""
    out, parents = {}, {}
    for run in sorted(tracker.trials(study=study), key=lambda r: r.info.start_time):
        p, tags = run.data.params, run.data.tags
        if run.info.status != "FINISHED" or "cell_model" not in p:
            continue
        max_epochs = tags.get("max_epochs")
        if max_epochs is None:  # runs logged before trials carried their budget: the search run has it
            parent = tags.get("mlflow.parentRunId")
            if parent not in parents:
                parents[parent] = tracker.client.get_run(parent).data.params.get("epochs") if parent else None
            max_epochs = parents[parent]
        out[(p["cell_model"], p["cell_column"])] = {**run.data.metrics, "run_id": run.info.run_id,
                                                    "max_epochs": max_epochs, "patience": tags.get("patience")}
    return out


def _columns(grid) -> list[str]:
    """The grid's columns that have at least one finished cell (a grid run before a column existed lacks it)."""
    return [c for c in COLUMNS if any(col == c for _, col in grid)]


def _models(grid) -> list[str]:
    """Rows in the paper's order, whatever order the cells ran in."""
    present = {model for model, _ in grid}
    return [m for m in ROWS if m in present] + sorted(present - set(ROWS))


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


def _fmt(v, spec) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _grid_value(grid, model, col, key):
    cell = grid.get((model, col))
    return cell.get(key) if cell else None


def plots(grid, tracker, out: Path) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    models, cols = _models(grid), _columns(grid)
    files = {}
    fig, ax = plt.subplots(figsize=(10, 4), dpi=90)
    width = 0.8 / len(cols)
    for i, col in enumerate(cols):
        vals = [_grid_value(grid, m, col, "rmse") or np.nan for m in models]
        ax.bar(np.arange(len(models)) + i * width, vals, width, label=col)
    ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models, rotation=20, ha="right")
    floor = _mean_face(grid)
    # a diverged cell would squash every bar worth comparing
    top = min(2.5 * floor, 1.15 * max(floor, *(c["rmse"] for c in grid.values()))) if floor is not None else None
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label=f"mean face {floor:.2f}")
        ax.set_ylim(0, top)
        for i, col in enumerate(cols):
            for j, m in enumerate(models):
                v = _grid_value(grid, m, col, "rmse")
                if v is not None and v > top:
                    ax.text(j + i * width, top * 0.98, f"{v:.0f}", ha="center", va="top", fontsize=6, rotation=90)
    ax.set_ylabel("validation RMSE (px)")
    ax.legend(ncol=len(cols) + 1, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "rmse_by_model.png")
    plt.close(fig)
    files["rmse"] = "rmse_by_model.png"

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=90)
    for m in models:
        pts = [(grid[(m, c)]["inference_s_per_100"], grid[(m, c)]["rmse"], grid[(m, c)]["params"])
               for c in cols if (m, c) in grid]
        if pts:
            x, y, p = zip(*pts)
            ax.scatter(x, y, s=[max(15, v / 2e4) for v in p], alpha=0.6, label=m)
    title = "Trade-off (marker area ~ parameters)"
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1)
        hidden = sum(c["rmse"] > top for c in grid.values())
        ax.set_ylim(0, top)
        title += "\ndashed: mean face" + (f"; {hidden} cells above {top:.0f} px not shown" if hidden else "")
    files["tradeoff"] = _finish(fig, ax, out / "tradeoff.png", "inference s / 100 images", title)

    curves = {}
    (out / "curves.png").unlink(missing_ok=True)  # never leave a previous report's curves beside this one
    for m in models:
        col = min((c for c in cols if (m, c) in grid), key=lambda c: grid[(m, c)]["rmse"])
        hist = tracker.client.get_metric_history(grid[(m, col)]["run_id"], "val_rmse")
        if len(hist) > 1:  # a one-epoch cell has a point, not a curve
            curves[f"{m} / {col}"] = sorted((h.step + 1, h.value) for h in hist)
    if curves:
        fig, ax = plt.subplots(figsize=(6.5, 4), dpi=90)
        for m, points in curves.items():
            ax.plot(*zip(*points), marker="o", label=m)
        files["curves"] = _finish(fig, ax, out / "curves.png", "epoch", "Training curves (each model's best cell)")
    return files


def _finish(fig, ax, path: Path, xlabel: str, title: str) -> str:
    import matplotlib.pyplot as plt
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation RMSE (px)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def findings(grid) -> list[str]:
    models = _models(grid)
    out = []

    def best(m, cols):
        vals = [(grid[(m, c)]["rmse"], c) for c in cols if (m, c) in grid]
        return min(vals) if vals else None

    pairs = [(m, grid[(m, "augment")]["rmse"], imp) for m in models
             if (m, "augment") in grid and (imp := best(m, ("ffill", "knn")))]
    wins = [m for m, aug, imp in pairs if aug < imp[0]]
    out.append(f"**Does augmentation beat imputation?** For {len(wins)} of {len(pairs)} models the paper's "
               "augmentation column beats the better of forward fill and KNN"
               + (f" ({', '.join(wins)})" if wins else "") + ". Augmentation vs best imputation: "
               + "; ".join(f"{m} {aug:.2f} vs {imp[0]:.2f} px ({imp[1]})" for m, aug, imp in pairs) + ".")
    pairs = [(m, masked, other) for m in models
             if (masked := best(m, MASKED_COLUMNS)) and (other := best(m, PAPER_COLUMNS))]
    wins = [m for m, masked, other in pairs if masked[0] < other[0]]
    same_aug = [(m, grid[(m, "masked+augment")]["rmse"], grid[(m, "augment")]["rmse"]) for m in models
                if (m, "masked+augment") in grid and (m, "augment") in grid]
    out.append(f"**Does masking beat both?** For {len(wins)} of {len(pairs)} models a masked-loss column "
               "beats every paper column" + (f" ({', '.join(wins)})" if wins else "")
               + ". Best masked vs best paper column: "
               + "; ".join(f"{m} {mk[0]:.2f} ({mk[1]}) vs {o[0]:.2f} px ({o[1]})" for m, mk, o in pairs) + "."
               + (" Like for like (the same augmentation, with and without the incomplete rows): masked+augment "
                  "vs augment " + "; ".join(f"{m} {a:.2f} vs {b:.2f} px" for m, a, b in same_aug) + "."
                  if same_aug else ""))
    if grid:
        def describe(key):
            c = grid[key]
            return (f"{key[0]} / {key[1]} at {c['rmse']:.3f} px, {int(c['params']):,} params, {c['size_mb']:.2f} MB, "
                    f"{c['inference_s_per_100']:.4f} s/100 images")
        ranked = sorted(grid, key=lambda k: grid[k]["rmse"])
        small = [k for k in ranked if grid[k]["params"] < SMALL_PARAMS]
        fastest = min(grid, key=lambda k: grid[k]["inference_s_per_100"])
        out.append(f"**Trade-off.** Lowest RMSE: {describe(ranked[0])}. "
                   + (f"Best under {SMALL_PARAMS // 1000}K params: {describe(small[0])}. " if small else "")
                   + f"Fastest: {describe(fastest)}. Inference time is a property of the network: within a row "
                   "(same network, different labels or augmentation) the differences are measurement noise.")
    capped = [k for k, c in grid.items() if c.get("max_epochs") and int(c.get("epochs", 0)) >= int(c["max_epochs"])]
    if capped:
        out.append(f"**Budget.** {len(capped)} of {len(grid)} cells used their whole epoch budget without early "
                   "stopping, so they were probably still improving. Columns see different numbers of images per "
                   "epoch (table below), so at a small budget the comparison partly measures training length; "
                   "more epochs per cell (`--epochs`) make it a comparison of the strategies.")
    return out


def _budget(grid) -> str:
    def values(key):
        return sorted({int(float(c[key])) for c in grid.values() if c.get(key) is not None})
    most, run, patience = values("max_epochs"), values("epochs"), values("patience")
    if most == [1]:
        return "1 epoch per cell (too short for early stopping)"
    span = "?" if not run else str(run[0]) if len(run) == 1 else f"{run[0]}–{run[-1]}"
    return (f"at most {'/'.join(map(str, most)) or '?'} epochs per cell ({span} run"
            + (f"; early-stopping patience {'/'.join(map(str, patience))}" if patience else "") + ")")


def _mean_face(grid) -> float | None:
    values = [c["mean_face_rmse"] for c in grid.values() if "mean_face_rmse" in c]
    return values[0] if values else None  # one split for the whole grid, so one value


def render(grid, files, command: str, study: str) -> str:
    models, cols = _models(grid), _columns(grid)
    first = {m: next(grid[(m, c)] for c in cols if (m, c) in grid) for m in models}
    images = {c: next((grid[(m, c)]["train_images"] for m in models if "train_images" in grid.get((m, c), {})), None)
              for c in cols}
    md = ["# The paper's study on our data", "",
          f"Made by `{command}` from the MLflow store: study `{study}` of `python -m search.run --space paper`, "
          f"{_budget(grid)}. Validation RMSE is in pixels over labelled cells on a person-aware split "
          "(validation faces are never near-duplicates of training faces).", "", "## Findings", ""]
    floor = _mean_face(grid)
    if floor is not None:
        above = sum(c["rmse"] >= floor for c in grid.values())
        md += [f"Predicting the mean training face for every validation face scores **{floor:.3f} px**: "
               f"a cell above that has not yet learned anything useful ({above} of {len(grid)} here).", ""]
    md += [f"- {f}" for f in findings(grid)]
    md += ["", "## Table 1: parameters and size", "",
           _table(["model", "params (ours)", "params (paper)", "size MB (ours, .keras)", "size MB (paper)"],
                  [[m, f"{int(first[m]['params']):,}", f"{PAPER_PARAMS[m]:,}" if m in PAPER_PARAMS else "n/a",
                    f"{first[m]['size_mb']:.2f}", "n/a"] for m in models]),
           "## RMSE (px): model × missing labels / augmentation", "",
           _table(["model", *cols], [[m, *(_fmt(_grid_value(grid, m, c, "rmse"), ".3f") for c in cols)]
                                    for m in models]),
           f"![RMSE by model]({files['rmse']})", ""]
    if any(v is not None for v in images.values()):
        md += ["Training images per epoch (the same for every model; augmentation adds transformed copies, "
               "`none` keeps only fully labelled faces):", "",
               _table(cols, [[_fmt(images[c], ",.0f") for c in cols]])]
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        md += [f"Columns of the grid with no finished cell in this study (not run yet, or added to the grid "
               f"after it ran): {', '.join(missing)}.", ""]
    md += ["## Table 3: inference seconds per 100 images", "",
           _table(["model", *cols, "paper"],
                  [[m, *(_fmt(_grid_value(grid, m, c, "inference_s_per_100"), ".4f") for c in cols), "n/a"]
                   for m in models]),
           "## Trade-off and training curves", "", f"![trade-off]({files['tradeoff']})", "",
           f"![curves]({files['curves']})" if "curves" in files else
           "No training curves: every cell trained a single epoch, so each has one validation point.", "",
           "## Where this setup differs from the paper", "",
           "- **No ImageNet weights.** They cannot be downloaded here, so MobileNetV2 and NASNetMobile start from "
           "random weights (`weights=None`); `weights=imagenet` or a local weights file restores the paper's "
           "transfer learning. A *frozen* random backbone is a fixed random feature extractor, so its row "
           "shows what the head alone can learn, not what a frozen ImageNet backbone would.",
           "- **Data.** The shared set (3,401 faces in Kaggle's layout, from YouTube-Faces frames) rather than "
           "Kaggle's 7,049; validation faces are kept apart from near-identical training frames.",
           "- **Budget.** A few epochs per cell on a 2-core CPU, not full training on a GPU: absolute RMSEs are "
           "higher than fully trained ones; the comparison between cells is what the grid shows.",
           "- **Inference times** are measured on this CPU as one compiled batched call of 100 images after "
           "warm-up (median of 20), so they are not comparable in absolute terms to the paper's hardware.",
           "- **Paper figures.** Only the two CNNs' parameter counts were available to us; other published "
           "cells are marked n/a rather than guessed.", ""]
    return "\n".join(md)


def to_html(markdown: str) -> str:
    """Enough Markdown for this report: headings, bullets, tables, images, bold and code."""
    import re
    out, in_table = [], False
    for line in markdown.splitlines():
        inline = lambda s: re.sub(r"`([^`]+)`", r"<code>\1</code>",  # noqa: E731
                                  re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", html.escape(s)))
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            out.append(f'<img src="{html.escape(src)}" style="max-width:100%">')
        elif line.startswith("- "):
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line:
            out.append(f"<p>{inline(line)}</p>")
    if in_table:
        out.append("</table>")
    return ("<!doctype html><meta charset=utf-8><title>Paper study</title><style>body{font:14px sans-serif;"
            "max-width:1000px;margin:auto}td{padding:2px 8px;border-bottom:1px solid #ddd}</style>\n"
            + "\n".join(out) + "\n")


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tracking.report", description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="paper")
    ap.add_argument("--study", default=None, help="the grid's study name (default: the space name)")
    ap.add_argument("--output", default="docs/paper")
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args(argv)
    if args.space != "paper":
        raise UserError("only the paper grid has a report so far: use --space paper")
    from tracking.mlflow_tracker import Tracker
    tracker = Tracker(args.space, args.tracking_uri)
    study = args.study or args.space
    grid = cells(tracker, study)
    if not grid:
        raise UserError(f"no finished grid cells of study {study!r} in {tracker.uri}; "
                        "run python -m search.run --space paper first")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    files = plots(grid, tracker, out)
    command = "python -m tracking.report " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    markdown = render(grid, files, command.strip(), study)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(to_html(markdown))
    print(f"wrote {out / 'report.md'}, {out / 'report.html'} and {len(files)} plots ({len(grid)} grid cells)")


if __name__ == "__main__":
    main()
