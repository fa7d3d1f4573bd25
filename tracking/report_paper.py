"""The paper's study as Markdown: its conclusions answered, our grid beside its published tables, our rows."""
from __future__ import annotations

from collections import Counter

from spaces.paper import COLUMNS, MASKED_COLUMNS, PAPER_COLUMNS
from tracking import report_data as rd
from tracking.paper_conclusions import answers
from tracking.report_render import fmt, table

LABEL = {"test_rmse": "test RMSE", "rmse": "validation RMSE"}


def _title(key) -> str:
    return LABEL[key][0].upper() + LABEL[key][1:]


def _with_spread(cell, key) -> str:
    if cell is None:
        return "—"
    spread = rd.spread(cell, key)
    return fmt(cell.get(key), ".3f") + (f" ({spread:.3f})" if spread is not None else "")


def findings(grid, key) -> list[str]:
    models = rd.grid_models(grid)
    out = []

    def best(m, cols):
        vals = [(grid[(m, c)][key], c) for c in cols if (m, c) in grid]
        return min(vals) if vals else None

    pairs = [(m, masked, other) for m in models
             if (masked := best(m, MASKED_COLUMNS)) and (other := best(m, PAPER_COLUMNS))]
    wins = [m for m, masked, other in pairs if masked[0] < other[0]]
    out.append(f"**Does masking beat the paper's columns?** For {len(wins)} of {len(pairs)} models a masked-loss "
               "column beats every paper column" + (f" ({', '.join(wins)})" if wins else "")
               + ". Best masked vs best paper column: "
               + "; ".join(f"{m} {mk[0]:.3f} ({mk[1]}) vs {o[0]:.3f} px ({o[1]})" for m, mk, o in pairs) + ".")
    if grid:
        def describe(k):
            c = grid[k]
            return (f"{k[0]} / {k[1]} at {c[key]:.3f} px, {int(c['params']):,} params, {c['size_mb']:.2f} MB, "
                    f"{c['inference_s_per_100']:.4f} s/100 images")
        ranked = sorted(grid, key=lambda k: grid[k][key])
        small = [k for k in ranked if grid[k]["params"] < rd.SMALL_PARAMS]
        fastest = min(grid, key=lambda k: grid[k]["inference_s_per_100"])
        out.append(f"**Trade-off.** Lowest RMSE: {describe(ranked[0])}. "
                   + (f"Best under {rd.SMALL_PARAMS // 1000}K params: {describe(small[0])}. " if small else "")
                   + f"Fastest: {describe(fastest)}.")
    return out


def _budget(grid) -> str:
    def values(key):
        return sorted({int(float(s[key])) for c in grid.values() for s in c["seeds"] if s.get(key) is not None})
    most, run, patience = values("max_epochs"), values("epochs"), values("patience")
    if most == [1]:
        return "1 epoch per cell (too short for early stopping)"
    span = "?" if not run else str(run[0]) if len(run) == 1 else f"{run[0]}–{run[-1]}"
    seeds = sorted({c["n_seeds"] for c in grid.values()})
    return (f"at most {'/'.join(map(str, most)) or '?'} epochs per cell ({span} run"
            + (f"; early-stopping patience {'/'.join(map(str, patience))}" if patience else "") + "), "
            + f"{'/'.join(map(str, seeds))} seed{'s' if seeds != [1] else ''} per cell")


def _timing(runs: list[dict]) -> str:
    stamps, rounds = {r.get("retimed") for r in runs}, {r.get("retime_rounds") for r in runs}
    if None in stamps:
        return ("as each trial timed it right after training (anything else running then inflates it; "
                "`python -m tracking.retime` times them all again under one load)")
    if len(stamps) == 1:
        how = ("" if None in rounds else
               f": {'/'.join(sorted(rounds))} interleaved rounds, the median kept")
        return (f"timed again together on a quiet machine after the grid (`python -m tracking.retime`{how}), so "
                "every cell was timed under the same load")
    return (f"timed again after the grid in {len(stamps)} separate calls of `python -m tracking.retime`: cells timed "
            "in different calls may differ by the load of the moment")


def _sources(grid, study: str) -> str:
    names = rd.study_names(study)
    if len(names) == 1:
        return f"study `{names[0]}`"
    rows = {n: sorted({m for (m, _), c in grid.items() if c.get("study") == n}) for n in names}
    return ("studies " + ", ".join(f"`{n}` ({', '.join(rows[n]) or 'no cell kept'})" for n in names)
            + ", a later study's cells replacing the same cells of an earlier one")


def _paper_params(pub: rd.Published, model: str) -> tuple[str, str]:
    found = pub.table1(model)
    if found is None:
        return "n/a", "n/a"
    if isinstance(found[0], tuple):  # the Keras-tuned CNN: one net per strategy in the paper
        (p_lo, s_lo), (p_hi, s_hi) = found
        return f"{p_lo:,}–{p_hi:,}", f"{s_lo:.2f}–{s_hi:.2f}"
    return f"{found[0]:,}", f"{found[1]:.2f}"


def convergence(grid, curves) -> list[str]:
    """How each cell's runs ended: the target is that every small-CNN run stopped early or reached a plateau."""
    models, cols = rd.grid_models(grid), rd.grid_columns(grid)
    ends = {k: [rd.ending(curve, s.get("max_epochs"), s.get("timed_out")) for curve, s in zip(curves[k], grid[k]["seeds"])]
            for k in grid}
    short = {"stopped early": "stop", "plateau": "plateau", "still improving": "IMPROVING", "unknown": "?",
             "cut by --timeout": "TIMEOUT"}

    def cell(m, c):
        if (m, c) not in grid:
            return "—"
        return " / ".join(f"{short[e]} {int(s['epochs'])}" for e, s in zip(ends[(m, c)], grid[(m, c)]["seeds"]))

    counts = Counter(e for (m, _), es in ends.items() if m in ("baseline", "manual", "kt-tuned") for e in es)
    total = sum(counts.values())
    return ["## Convergence", "",
            "How each run's training ended, with the epochs it ran (one entry per seed): **stop** = early stopping "
            "fired (no better validation RMSE for `patience` epochs; the best epoch's weights were kept); "
            "**plateau** = it used its whole budget, and its last 5 epochs gained under 1% on its best before them; "
            "**IMPROVING** = it used its whole budget and was still gaining; **TIMEOUT** = the search's `--timeout` "
            "cut it.", "",
            (f"Small CNN rows (baseline, manual, kt-tuned): {total} runs, " + ", ".join(
                f"{n} {e}" for e, n in counts.most_common()) + ".") if total else "No small-CNN runs.", "",
            table(["model", *cols], [[m, *(cell(m, c) for c in cols)] for m in models])]


def ours(grid, key, best: dict | None) -> list[str]:
    """Our methods (the masked loss, with augmentation) beside the paper's best column, and the model in docs/best."""
    rows, masked = [], [c for c in MASKED_COLUMNS if c in rd.grid_columns(grid)]
    for m in rd.grid_models(grid):
        paper_best = min(((grid[(m, c)][key], c) for c in PAPER_COLUMNS if (m, c) in grid), default=None)
        if paper_best is None:
            continue
        rows.append([m, f"{paper_best[0]:.3f} ({paper_best[1]})",
                     *(fmt(rd.grid_value(grid, m, c, key), ".3f") for c in masked)])
    md = ["## Our methods and our model beside the paper's", "",
          f"{_title(key)} (px, mean over seeds): each row's best paper column against the masked loss "
          "(incomplete faces kept, missing keypoints left out of the loss), alone and with augmentation (`flip`: "
          "mirrored copies; `augment`: the paper's).", "",
          table(["model", "best paper column", *masked], rows)]
    if best:
        md += [_exported(grid, key, best), ""]
    return md


def _exported(grid, key, best: dict) -> str:
    """One paragraph on an exported model, saying only what its own files say (a stale folder is no error)."""
    m, cfg = best["metrics"], best["config"]
    how = [w for w, on in (("the masked loss", cfg.get("imputation") == "masked"),
                           (f"online augmentation of strength {cfg.get('aug_strength')}",
                            float(cfg.get("aug_strength") or 0) > 0),
                           ("mirrored faces", bool(cfg.get("aug_flip")))) if on]
    grid_floor = {round(c["mean_face_test_rmse"], 6) for c in grid.values() if rd.finite(c.get("mean_face_test_rmse"))}
    same_split = rd.finite(m.get("mean_face_test_rmse")) and grid_floor == {round(m["mean_face_test_rmse"], 6)}
    text = (f"**The model in `{best['folder']}`** ({cfg.get('model', '?')}"
            + (f", with {' and '.join([', '.join(how[:-1]), how[-1]] if len(how) > 1 else how)}" if how else "")
            + "): test RMSE "
            + f"**{fmt(m.get('test_rmse'), '.3f')} px**, {fmt(m.get('params'), ',.0f')} params, "
            + f"{fmt(m.get('mmacs'), '.1f')}M MACs, {fmt(m.get('size_mb'), '.2f')} MB, "
            + f"{fmt(m.get('inference_s_per_100'), '.4f')} s/100 images, {fmt(m.get('epochs'), '.0f')} epochs, "
            + ("on the grid's test faces (the same mean-face score, so the same split)" if same_split
               else "**on another split than the grid's** (its mean-face score differs), so not comparable cell by cell"))
    if same_split and key == "test_rmse" and rd.finite(m.get("test_rmse")):
        text += ". Against the paper's manual CNN in its best column here: " + _versus(grid, key, m)
    return text + "."
def _versus(grid, key, m) -> str:
    cells = [(grid[("manual", c)][key], c) for c in PAPER_COLUMNS if ("manual", c) in grid]
    if not cells:
        return "no manual row in this study"
    v, c = min(cells)
    ref = grid[("manual", c)]
    return (f"{v:.3f} px ({c}), so {v / m['test_rmse']:.1f}× the error, with {int(ref['params']):,} params and "
            f"{ref['inference_s_per_100']:.4f} s/100")


def paper(grid, files, command: str, study: str, pub: rd.Published, curves: dict, best: dict | None = None) -> str:
    models, cols = rd.grid_models(grid), rd.grid_columns(grid)
    key = rd.score_key(grid)
    first = {m: next(grid[(m, c)] for c in cols if (m, c) in grid) for m in models}
    images = {c: next((grid[(m, c)]["train_images"] for m in models if "train_images" in grid.get((m, c), {})), None)
              for c in cols}
    md = ["# The paper's study on our data", "",
          f"Made by `{command}` from the MLflow store: {_sources(grid, study)} of `python -m search.run --space "
          f"paper`, {_budget(grid)}. RMSE is in pixels over labelled keypoints on a person-aware split (no test or "
          f"validation face is a near-duplicate of a training face); the findings use **{LABEL[key]}**"
          + (" (faces that neither training nor early stopping saw)" if key == "test_rmse" else "")
          + ", the mean over a cell's seeds, with the spread (max − min over seeds) in brackets. The paper's "
          "published figures (its Tables 1–3 and the earlier results it cites) stand beside ours.", "",
          "## The paper's conclusions on our data", "",
          "The paper gives RMSE only as bar charts and grades and times inference on a Colab CPU, so each answer "
          "compares rankings and ratios inside our grid, never our pixels against theirs. A gap counts only when it "
          "is larger than the seed spread of the cells compared.", "",
          *(f"- **{claim}**: **{verdict}**. {detail}." for claim, verdict, detail in answers(grid, curves)), "",
          "## More findings", ""]
    floor = rd.mean_face(grid.values())
    if floor is not None:
        above = sum(c["rmse"] >= floor for c in grid.values())
        md += [f"Predicting the mean training face for every validation face scores **{floor:.3f} px**: "
               f"a cell above that has not yet learned anything useful ({above} of {len(grid)} here).", ""]
    md += [f"- {f}" for f in findings(grid, key)] + [""]
    md += convergence(grid, curves)
    md += ["## Table 1: parameters and size", "",
           table(["model", "params (ours)", "params (paper)", "size MB (ours, .keras)", "size MB (paper)"],
                 [[m, f"{int(first[m]['params']):,}", _paper_params(pub, m)[0], f"{first[m]['size_mb']:.2f}",
                   _paper_params(pub, m)[1]] for m in models]),
           "The paper's Keras-tuned CNN is a different network for each missing-label strategy (a range here); "
           "its MobileNetV2 and NASNetMobile figures are the same for the frozen and the fine-tuned rows.", "",
           f"## {_title(key)} (px): model × missing labels / augmentation", "",
           "Mean over seeds (spread in brackets).", "",
           table(["model", *cols], [[m, *(_with_spread(grid.get((m, c)), key) for c in cols)] for m in models]),
           f"![RMSE by model]({files['rmse']})", ""]
    if key == "test_rmse":
        md += ["Validation RMSE (what early stopping watched), for reference:", "",
               table(["model", *cols], [[m, *(_with_spread(grid.get((m, c)), "rmse") for c in cols)]
                                       for m in models])]
    if any(v is not None for v in images.values()):
        md += ["Training images per epoch (the same for every model; augmentation adds transformed copies, "
               "`none` keeps only fully labelled faces):", "",
               table(cols, [[fmt(images[c], ",.0f") for c in cols]])]
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        md += [f"Columns of the grid with no finished cell in this study: {', '.join(missing)}.", ""]
    graded = [m for m in models if any(pub.grade(m, s) for s in rd.PAPER_STRATEGIES)]
    if graded:
        strategies = [s for s in rd.PAPER_STRATEGIES if s in cols]
        md += ["## Table 2: the paper's RMSE grades beside our RMSE", "",
               "The paper gives RMSE only as bar charts; its Table 2 grades each strategy's effect on the transfer "
               "models (`similar`, `+`, `++`, `+++`; blank where it gives none). Each cell: our "
               f"{LABEL[key]} (px) · the paper's grade.", "",
               table(["model", *strategies],
                     [[m, *(f"{fmt(rd.grid_value(grid, m, s, key), '.3f')} · {pub.grade(m, s) or '—'}"
                            for s in strategies)] for m in graded])]
    md += ["## Table 3: inference seconds per 100 images", "",
           "Ours: one compiled batched call on this CPU after warm-up (median of 20), mean over seeds, "
           + _timing([s for c in grid.values() for s in c["seeds"]])
           + ". The paper's: its Colab CPU, per missing-label strategy. Compare ratios between rows, not seconds.", "",
           table(["model", *cols, "paper (none / ffill / knn / augment)"],
                 [[m, *(fmt(rd.grid_value(grid, m, c, "inference_s_per_100"), ".4f") for c in cols),
                   " / ".join(f"{pub.seconds(m)[s]:.2f}" for s in rd.PAPER_STRATEGIES if s in pub.seconds(m))
                   or "n/a"] for m in models])]
    md += ours(grid, key, best)
    if pub.prior:
        top = min(grid.values(), key=lambda c: c[key])
        md += ["## Earlier results the paper cites (Kaggle's full data)", "",
               table(["work", "architecture", "RMSE (px)"],
                     [[p["work"], p["architecture"], f"{p['rmse']:.2f}"] for p in pub.prior]
                     + [["this study's best cell", "see above", f"{top[key]:.2f}"]]
                     + ([[f"`{best['folder']}`", "searched CNN", fmt(best['metrics'].get('test_rmse'), '.2f')]]
                        if best else [])),
               "Not like for like: those are on Kaggle's 7,049 faces and its own split, ours on the shared data "
               "with a person-aware split.", ""]
    md += ["## Trade-off and training curves", "", f"![trade-off]({files['tradeoff']})", "",
           f"![curves]({files['curves']})" if "curves" in files else
           "No training curves: every cell trained a single epoch, so each has one validation point.", "",
           "## Where this setup differs from the paper", "",
           "- **No ImageNet weights.** They cannot be downloaded here, so MobileNetV2 and NASNetMobile start from "
           "random weights (`weights=None`); `weights=imagenet` or a local weights file restores the paper's "
           "transfer learning. A *frozen* random backbone is a fixed random feature extractor, so its row "
           "shows what the head alone can learn, not what a frozen ImageNet backbone would.",
           "- **Data.** The shared set (3,401 faces in Kaggle's layout, from YouTube-Faces frames) rather than "
           "Kaggle's 7,049; validation and test faces are kept apart from near-identical training frames.",
           "- **Budget.** A 2-core CPU, not a GPU: the small CNNs train up to the cap above with early stopping "
           "(how each run ended is under Convergence); capped rows get the few epochs stated there.",
           "- **Inference times** are measured on this CPU as one compiled batched call of 100 images after "
           "warm-up (median of 20), so they are not comparable in absolute terms to the paper's hardware.",
           "- **Paper figures** come from `tracking/paper_figures/` (the paper's Tables 1–3 and cited results, "
           "copied from the shared folder); its RMSE bar charts were not available as numbers.", ""]
    return "\n".join(md)
