"""The reports as Markdown (tables by tabulate) and HTML (by the markdown package)."""
from __future__ import annotations

import math

from spaces.paper import COLUMNS, MASKED_COLUMNS, PAPER_COLUMNS
from tracking import report_data as rd


def table(header, rows) -> str:
    """A GitHub-style Markdown table; cells are shown as given (no number re-formatting)."""
    from tabulate import tabulate
    return tabulate([[str(c) for c in row] for row in rows], headers=list(header), tablefmt="github",
                    disable_numparse=True) + "\n"


def fmt(v, spec) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def to_html(markdown_text: str, title: str) -> str:
    import html

    import markdown
    body = markdown.markdown(markdown_text, extensions=["tables", "sane_lists"])
    return ("<!doctype html><meta charset=utf-8><title>" + html.escape(title) + "</title><style>"
            "body{font:14px sans-serif;max-width:1100px;margin:auto;padding:0 1em}table{border-collapse:collapse}"
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}img{max-width:100%}"
            "code{background:#f4f4f4}</style>\n" + body + "\n")


# ---- the paper's grid ------------------------------------------------------------------------
def findings(grid) -> list[str]:
    models = rd.grid_models(grid)
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
        small = [k for k in ranked if grid[k]["params"] < rd.SMALL_PARAMS]
        fastest = min(grid, key=lambda k: grid[k]["inference_s_per_100"])
        out.append(f"**Trade-off.** Lowest RMSE: {describe(ranked[0])}. "
                   + (f"Best under {rd.SMALL_PARAMS // 1000}K params: {describe(small[0])}. " if small else "")
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



def _paper_params(pub: rd.Published, model: str) -> tuple[str, str]:
    found = pub.table1(model)
    if found is None:
        return "n/a", "n/a"
    if isinstance(found[0], tuple):  # the Keras-tuned CNN: one net per strategy in the paper
        (p_lo, s_lo), (p_hi, s_hi) = found
        return f"{p_lo:,}–{p_hi:,}", f"{s_lo:.2f}–{s_hi:.2f}"
    return f"{found[0]:,}", f"{found[1]:.2f}"


def paper(grid, files, command: str, study: str, pub: rd.Published) -> str:
    models, cols = rd.grid_models(grid), rd.grid_columns(grid)
    first = {m: next(grid[(m, c)] for c in cols if (m, c) in grid) for m in models}
    images = {c: next((grid[(m, c)]["train_images"] for m in models if "train_images" in grid.get((m, c), {})), None)
              for c in cols}
    md = ["# The paper's study on our data", "",
          f"Made by `{command}` from the MLflow store: study `{study}` of `python -m search.run --space paper`, "
          f"{_budget(grid)}. Validation RMSE is in pixels over labelled cells on a person-aware split "
          "(validation faces are never near-duplicates of training faces). The paper's published figures "
          "(its Tables 1–3 and the earlier results it cites) stand beside ours.", "", "## Findings", ""]
    floor = rd.mean_face(grid.values())
    if floor is not None:
        above = sum(c["rmse"] >= floor for c in grid.values())
        md += [f"Predicting the mean training face for every validation face scores **{floor:.3f} px**: "
               f"a cell above that has not yet learned anything useful ({above} of {len(grid)} here).", ""]
    md += [f"- {f}" for f in findings(grid)]
    md += ["", "## Table 1: parameters and size", "",
           table(["model", "params (ours)", "params (paper)", "size MB (ours, .keras)", "size MB (paper)"],
                 [[m, f"{int(first[m]['params']):,}", _paper_params(pub, m)[0], f"{first[m]['size_mb']:.2f}",
                   _paper_params(pub, m)[1]] for m in models]),
           "The paper's Keras-tuned CNN is a different network for each missing-label strategy (a range here); "
           "its MobileNetV2 and NASNetMobile figures are the same for the frozen and the fine-tuned rows.", "",
           "## RMSE (px): model × missing labels / augmentation", "",
           table(["model", *cols], [[m, *(fmt(rd.grid_value(grid, m, c, "rmse"), ".3f") for c in cols)]
                                   for m in models]),
           f"![RMSE by model]({files['rmse']})", ""]
    if any(v is not None for v in images.values()):
        md += ["Training images per epoch (the same for every model; augmentation adds transformed copies, "
               "`none` keeps only fully labelled faces):", "",
               table(cols, [[fmt(images[c], ",.0f") for c in cols]])]
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        md += [f"Columns of the grid with no finished cell in this study (not run yet, or added to the grid "
               f"after it ran): {', '.join(missing)}.", ""]
    graded = [m for m in models if any(pub.grade(m, s) for s in rd.PAPER_STRATEGIES)]
    if graded:
        strategies = [s for s in rd.PAPER_STRATEGIES if s in cols]
        md += ["## Table 2: the paper's RMSE grades beside our RMSE", "",
               "The paper gives RMSE only as bar charts; its Table 2 grades each strategy's effect on the transfer "
               "models (`similar`, `+`, `++`, `+++`; blank where it gives none). Each cell: our RMSE (px) · the "
               "paper's grade.", "",
               table(["model", *strategies],
                     [[m, *(f"{fmt(rd.grid_value(grid, m, s, 'rmse'), '.3f')} · {pub.grade(m, s) or '—'}"
                            for s in strategies)] for m in graded])]
    md += ["## Table 3: inference seconds per 100 images", "",
           "Ours: one compiled batched call on this CPU after warm-up (median of 20). The paper's: its Colab CPU, "
           "per missing-label strategy.", "",
           table(["model", *cols, "paper (none / ffill / knn / augment)"],
                 [[m, *(fmt(rd.grid_value(grid, m, c, "inference_s_per_100"), ".4f") for c in cols),
                   " / ".join(f"{pub.seconds(m)[s]:.2f}" for s in rd.PAPER_STRATEGIES if s in pub.seconds(m))
                   or "n/a"] for m in models])]
    if pub.prior:
        best = min(grid.values(), key=lambda c: c["rmse"])
        md += ["## Earlier results the paper cites (Kaggle's full data)", "",
               table(["work", "architecture", "RMSE (px)"],
                     [[p["work"], p["architecture"], f"{p['rmse']:.2f}"] for p in pub.prior]
                     + [["this study's best cell", "see above", f"{best['rmse']:.2f}"]]),
               "Not like for like: those are on Kaggle's 7,049 faces and its own split, ours on the shared data "
               "with a person-aware split and a small budget.", ""]
    md += ["## Trade-off and training curves", "", f"![trade-off]({files['tradeoff']})", "",
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
           "- **Paper figures** come from `tracking/paper_figures/` (the paper's Tables 1–3 and cited results, "
           "copied from the shared folder); its RMSE bar charts were not available as numbers.", ""]
    return "\n".join(md)


# ---- engines on one space --------------------------------------------------------------------
def _budget_text(budget: dict) -> str:
    parts = [f"data {str(budget.get('data_sha') or '?')[:12]}", f"split {budget.get('split') or '?'}",
             f"{budget.get('trials') or '?'} trials of at most {budget.get('epochs') or '?'} epochs"]
    if budget.get("patience"):
        parts.append(f"patience {budget['patience']}")
    if budget.get("max_params") not in (None, "none"):
        cap = str(budget["max_params"])
        parts.append(f"≤{int(cap):,} params" if cap.isdigit() else f"≤{cap} params")
    return ", ".join(parts)


def engines(space: str, found, files: dict, command: str, notes: dict, importance: dict, pareto_rows) -> str:
    use_test = rd.has_test(found)
    studies = sorted({s.study for s in found})
    md = [f"# Engines compared on the `{space}` space", "",
          f"Made by `{command}` from the MLflow store: "
          + (f"study `{studies[0]}`" if len(studies) == 1 else f"studies {', '.join(f'`{s}`' for s in studies)} "
             "(repeats)") + ". Every engine is scored the same way: each search picks its best trial by "
          "validation RMSE; " + ("its **test RMSE** (faces no engine ever saw) is what is compared here." if use_test
                                  else "**no test split logged** in these runs, so validation RMSE stands in for "
                                       "test RMSE throughout (it flatters every engine alike)."), ""]
    groups = rd.budgets(found)
    if len(groups) > 1:
        md += ["**Budgets differ** between these searches, so the comparison is not like for like:", ""]
    md += [table(["engine", "study", "seed", "budget", "trials finished / pruned / failed / other",
                  "best val RMSE (px)", "its test RMSE (px)", "time in trials (min)"],
                 [[s.engine, s.study, s.seed, _budget_text(s.budget),
                   "/".join(str(sum(t["status"] == k for t in s.trials)) for k in ("finished", "pruned", "failed"))
                   + f"/{sum(t['status'] not in ('finished', 'pruned', 'failed') for t in s.trials)}",
                   fmt(min((t["rmse"] for t in s.finished), default=None), ".3f"),
                   fmt(_incumbent_test(s), ".3f"),
                   f"{sum(t['duration_s'] for t in s.trials) / 60:.1f}"] for s in found])]
    floor = notes.get("floor")
    if floor is not None:
        md += [f"Predicting the mean training face scores **{floor:.3f} px** on the "
               f"{'test' if use_test else 'validation'} split: the floor a model has to beat.", ""]
    md += ["## Best so far", "",
           "After each trial, the score of the trial the engine would pick at that point (lowest validation RMSE "
           "so far); with repeats over seeds, the line is their mean and the band their range. Time counts the "
           "trials' own durations, so pauses between resumed sessions do not count.", "",
           f"![best so far]({files['best_so_far']})" if "best_so_far" in files else "No finished trial.", "",
           "## Pareto front: RMSE × inference time × parameters", ""]
    metric = "test_rmse" if use_test else "rmse"
    if pareto_rows:
        md += [f"![pareto]({files['pareto']})", "",
               "Trials on the front (no other trial, of any engine, is at least as good on all three and better on one):",
               "",
               table(["engine", "trial", "model", "test RMSE (px)" if use_test else "val RMSE (px)",
                      "val RMSE (px)", "inference s/100", "params", "size MB"],
                     [[r["engine"], r["trial"], r["model"], f"{r[metric]:.3f}", f"{r['rmse']:.3f}",
                       f"{r['inference_s_per_100']:.4f}", f"{int(r['params']):,}", fmt(r.get("size_mb"), ".3f")]
                      for r in pareto_rows])]
    else:
        md += ["No finished trial with RMSE, inference time and parameters.", ""]
    md += ["## Hyperparameter importances", ""]
    if importance:
        md += [f"![importances]({files['importances']})", "",
               "From the Optuna study (Optuna's default evaluator, for validation RMSE"
               + ("; the mean over repeats" if sum(s.engine == "optuna" for s in found) > 1 else "") + "). "
               "With few trials these are rough.", ""]
    else:
        md += [f"None: {notes.get('importance_reason', 'no Optuna study')}.", ""]
    md += ["## Worst-predicted faces", ""]
    if "faces" in files:
        md += [f"![worst faces]({files['faces']})", "", notes["faces"] + ".", ""]
    else:
        md += [f"Not drawn: {notes.get('faces_reason', 'no finished trial')}.", ""]
    return "\n".join(md)


def _incumbent_test(search):
    done = search.finished
    if not done:
        return None
    best = min(done, key=lambda t: t["rmse"])
    return best.get("test_rmse")
