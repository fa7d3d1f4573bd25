"""python -m bench.rungs: do low rungs predict the top? Spearman rank correlations from a curve table.

For each lower budget r of the table, two forecasts of a config's final validation RMSE (at the full
budget, its own full schedule) are ranked against it:
- *own schedule*: the config trained for r epochs with its schedule sized to r (what `--pruner asha` sees);
- *cut schedule*: epoch r of the full-budget run (what Hyperband and the other epoch pruners see).
Failed runs and configs lacking a budget are left out and counted.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from train.errors import UserError, cli

HERE = Path(__file__).resolve().parent


def correlations(rows: list[dict], budgets: list[int]) -> list[dict]:
    from scipy.stats import spearmanr
    full = budgets[-1]
    by: dict[str, dict] = {}
    for r in rows:
        if r.get("status") == "complete":
            by.setdefault(r["config_id"], {})[int(r["budget"])] = r
    out = []
    for b in budgets[:-1]:
        own = [(c[b]["final_val_rmse"], c[full]["final_val_rmse"]) for c in by.values() if b in c and full in c]
        cut = [(c[full]["val_rmse"][b - 1], c[full]["final_val_rmse"]) for c in by.values()
               if full in c and len(c[full]["val_rmse"]) >= b]
        row = {"budget": b, "full": full}
        for name, pairs in (("own", own), ("cut", cut)):
            x = np.asarray(pairs)
            row[f"{name}_n"] = len(x)
            row[f"{name}_rho"] = float(spearmanr(x[:, 0], x[:, 1]).statistic) if len(x) >= 3 else float("nan")
            row[f"{name}_top"] = _top_kept(x) if len(x) >= 3 else float("nan")
        out.append(row)
    return out


def _top_kept(x: np.ndarray) -> float:
    """Share of the final best third that this rung's best third keeps (what successive halving promotes)."""
    k = max(len(x) // 3, 1)
    return len(set(np.argsort(x[:, 0])[:k]) & set(np.argsort(x[:, 1])[:k])) / k


def markdown(stats: list[dict], configs: int, table: str) -> str:
    lines = ["## Rungs: do low budgets predict the full one?", "",
             f"Spearman rank correlation between a config's validation RMSE at a low budget and at the full one, "
             f"over the {configs} configs of `{table}` (random draws of the `cnn` space within 250,000 params and "
             "40M MACs). *Own schedule*: trained r epochs with the schedule sized to r (`--pruner asha`). "
             "*Cut schedule*: epoch r of the full-budget run (Hyperband). *Top third kept*: the share of the final "
             "best third that the rung's best third contains.", "",
             "| rung / full epochs | own schedule: Spearman | top third kept | cut schedule: Spearman | top third kept | configs |",
             "|---|---|---|---|---|---|"]
    for s in stats:
        lines.append(f"| {s['budget']} / {s['full']} | {s['own_rho']:.3f} | {s['own_top']:.2f} | {s['cut_rho']:.3f} "
                     f"| {s['cut_top']:.2f} | {s['own_n']} |")
    return "\n".join(lines)


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.rungs", description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(HERE / "curves" / "cnn.jsonl"))
    ap.add_argument("--no-results", action="store_true", help="do not write the section of bench/results.md")
    args = ap.parse_args(argv)
    from bench.curves import read
    if not Path(args.table).exists():
        raise UserError(f"{args.table}: no such table (python -m bench.curves makes one)")
    meta, rows = read(args.table)
    if meta is None:
        raise UserError(f"{args.table}: no meta line: not a learning-curve table")
    budgets = sorted(meta["budgets"])
    stats = correlations(rows, budgets)
    configs = len({r["config_id"] for r in rows if r.get("status") == "complete" and r["budget"] == budgets[-1]})
    md = markdown(stats, configs, Path(args.table).name)
    print(md)
    if not args.no_results:
        from bench.sections import update
        update("rungs", md)


if __name__ == "__main__":
    main()
