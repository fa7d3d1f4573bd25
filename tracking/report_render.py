"""The reports as Markdown (tables by tabulate) and HTML (by the markdown package); the paper's report is in
report_paper.py."""
from __future__ import annotations

import math

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
