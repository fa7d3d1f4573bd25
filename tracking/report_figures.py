"""The reports' PNG figures. Every figure has a title and labelled axes with units."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tracking import report_data as rd  # noqa: E402

ENGINE_COLORS = {"optuna": "tab:blue", "keras-tuner": "tab:orange", "manual": "tab:green"}


def _color(engine: str, i: int = 0):
    return ENGINE_COLORS.get(engine, f"C{(i + 3) % 10}")


def _save(fig, path: Path) -> str:
    fig.savefig(path)
    plt.close(fig)
    return path.name


# ---- the paper's grid ------------------------------------------------------------------------
def paper(grid, curves: dict, out: Path) -> dict[str, str]:
    """`curves`: report_data.curves, each cell's validation curve per seed (read once for the whole report)."""
    models, cols = rd.grid_models(grid), rd.grid_columns(grid)
    key = rd.score_key(grid)  # the report's own score: test RMSE where every cell has one
    label = "test RMSE (px)" if key == "test_rmse" else "validation RMSE (px)"
    files = {}
    fig, ax = plt.subplots(figsize=(10, 4.6), dpi=90)
    width = 0.8 / len(cols)
    for i, col in enumerate(cols):
        vals = [rd.grid_value(grid, m, col, key) or np.nan for m in models]
        ax.bar(np.arange(len(models)) + i * width, vals, width, label=col)
    ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models, rotation=20, ha="right")
    floor = rd.mean_face([{"mean_face_rmse": c.get("mean_face_test_rmse" if key == "test_rmse" else "mean_face_rmse")}
                          for c in grid.values()])
    # a diverged cell would squash every bar worth comparing
    top = min(2.5 * floor, 1.15 * max(floor, *(c[key] for c in grid.values()))) if floor is not None else None
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label=f"mean face {floor:.2f}")
        ax.set_ylim(0, top)
        for i, col in enumerate(cols):
            for j, m in enumerate(models):
                v = rd.grid_value(grid, m, col, key)
                if v is not None and v > top:
                    ax.text(j + i * width, top * 0.98, f"{v:.0f}", ha="center", va="top", fontsize=6, rotation=90)
    ax.set_xlabel("model (grid row)")
    ax.set_ylabel(label + ", mean over seeds")
    ax.legend(ncol=len(cols) + 1, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.suptitle(f"{label[0].upper()}{label[1:-5]} by model and missing-label / augmentation column", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    files["rmse"] = _save(fig, out / "rmse_by_model.png")

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=90)
    for m in models:
        pts = [(grid[(m, c)]["inference_s_per_100"], grid[(m, c)][key], grid[(m, c)]["params"])
               for c in cols if (m, c) in grid]
        if pts:
            x, y, p = zip(*pts)
            ax.scatter(x, y, s=[max(15, v / 2e4) for v in p], alpha=0.6, label=m)
    title = "Trade-off (marker area ~ parameters)"
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1)
        hidden = sum(c[key] > top for c in grid.values())
        ax.set_ylim(0, top)
        title += "\ndashed: mean face" + (f"; {hidden} cells above {top:.0f} px not shown" if hidden else "")
    files["tradeoff"] = _finish(fig, ax, out / "tradeoff.png", "inference (s / 100 images)", title, label)

    shown = {}
    (out / "curves.png").unlink(missing_ok=True)  # never leave a previous report's curves beside this one
    for m in models:
        col = min((c for c in cols if (m, c) in grid), key=lambda c: grid[(m, c)][key])
        first_seed = curves[(m, col)][0]
        if len(first_seed) > 1:  # a one-epoch cell has a point, not a curve
            shown[f"{m} / {col}"] = list(enumerate(first_seed, start=1))
    if shown:
        fig, ax = plt.subplots(figsize=(6.5, 4), dpi=90)
        for m, points in shown.items():
            ax.plot(*zip(*points), marker="o", label=m)
        files["curves"] = _finish(fig, ax, out / "curves.png", "epoch",
                                  "Validation curves (each model's best cell, its first seed)")
    return files


def _finish(fig, ax, path: Path, xlabel: str, title: str, ylabel: str = "validation RMSE (px)") -> str:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# ---- engines on one space --------------------------------------------------------------------
def _band(ax, engine, i, runs, use_time: bool, label: str):
    """One engine's best-so-far: a step line for one search, mean and min–max band over repeats."""
    color = _color(engine, i)
    if len(runs) == 1:
        pts = runs[0]
        x = [p[1] / 60 if use_time else p[0] for p in pts]
        ax.step(x, [p[2] for p in pts], where="post", color=color, marker="o", ms=3, label=label)
        return
    if use_time:
        grid = np.linspace(0, min(max(p[1] for p in pts) for pts in runs), 60)
        ys = np.array([[next((p[2] for p in reversed(pts) if p[1] <= t), np.nan) for t in grid] for pts in runs])
        x = grid / 60
    else:
        n = min(len(pts) for pts in runs)
        counts = sorted({p[0] for pts in runs for p in pts if p[0] <= max(q[0] for q in pts[:n])})
        ys = np.array([[next((p[2] for p in reversed(pts) if p[0] <= c), np.nan) for c in counts] for pts in runs])
        x = np.array(counts)
    keep = ~np.isnan(ys).any(axis=0)
    if not keep.any():
        return
    ax.step(x[keep], ys[:, keep].mean(axis=0), where="post", color=color, label=f"{label}: mean of {len(runs)}")
    ax.fill_between(x[keep], ys[:, keep].min(axis=0), ys[:, keep].max(axis=0), step="post", color=color, alpha=0.2)


def best_so_far(found, use_test: bool, floor: float | None, out: Path) -> str:
    by_engine: dict = {}
    for s in found:
        pts = rd.best_so_far(s, use_test)
        if pts:
            by_engine.setdefault(s.engine, []).append(pts)
    metric = "test RMSE (px)" if use_test else "validation RMSE (px)"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90, sharey=True)
    for i, (engine, runs) in enumerate(sorted(by_engine.items())):
        _band(axes[0], engine, i, runs, False, engine)
        _band(axes[1], engine, i, runs, True, engine)
    for ax, xlabel in zip(axes, ("trials spent (count)", "time spent in trials (min)")):
        if floor is not None:
            ax.axhline(floor, color="k", ls="--", lw=1, label=f"mean face {floor:.2f} px")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"best-so-far {metric}")
    axes[0].legend(fontsize=8)
    axes[0].set_title("vs trial count", fontsize=10)
    axes[1].set_title("vs wall time", fontsize=10)
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    what = "test RMSE of the best-by-validation trial" if use_test else "validation RMSE (no test split logged)"
    fig.suptitle(f"Best so far, each engine: {what}", fontsize=11)
    fig.tight_layout()
    return _save(fig, out / "best_so_far.png")


def pareto(rows: list[dict], flags: list[bool], metric: str, out: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90, sharey=True)
    engines = sorted({r["engine"] for r in rows})
    for i, engine in enumerate(engines):
        mine = [(r, f) for r, f in zip(rows, flags) if r["engine"] == engine]
        for ax, key in zip(axes, ("inference_s_per_100", "params")):
            for front, marker, size in ((False, "o", 25), (True, "*", 140)):
                pts = [(r[key], r[metric]) for r, f in mine if f == front]
                if pts:
                    ax.scatter(*zip(*pts), marker=marker, s=size, color=_color(engine, i), alpha=0.75,
                               edgecolors="k" if front else "none", linewidths=0.6,
                               label=f"{engine}" + (" (Pareto)" if front else ""))
    axes[0].set_xlabel("inference (s / 100 images)")
    axes[1].set_xlabel("parameters (count, log scale)")
    axes[1].set_xscale("log")
    label = "test RMSE (px)" if metric == "test_rmse" else "validation RMSE (px)"
    axes[0].set_ylabel(label)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Pareto front of {label.split(' (')[0]} × inference time × parameters, all engines "
                 "(stars: the front)", fontsize=11)
    fig.tight_layout()
    return _save(fig, out / "pareto.png")


def importances(values: dict, out: Path) -> str:
    names = list(values)[:15][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.4), dpi=90)
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance for validation RMSE (fraction, sums to 1)")
    ax.set_ylabel("hyperparameter")
    ax.set_title("Hyperparameter importances (Optuna)", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out / "importances.png")


def faces(f: rd.Faces, out: Path) -> str:
    n = len(f.images)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.4 * rows + 0.6), dpi=90, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t, p, err in zip(axes.ravel(), f.images, f.true, f.pred, f.rmse):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, extent=(0, 96, 96, 0))
        ax.scatter(t[0::2], t[1::2], s=16, c="lime", label="true")
        ax.scatter(p[0::2], p[1::2], s=16, c="red", marker="x", label="predicted")
        ax.set_title(f"RMSE {err:.2f} px", fontsize=9)
    axes[0][0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    fig.suptitle("Worst-predicted test faces (green: true, red: predicted; 96×96 px)", fontsize=11)
    fig.tight_layout()
    return _save(fig, out / "worst_faces.png")
