"""The paper's four conclusions, each answered from the grid: holds, does not hold, or cannot be tested here.

The paper gives RMSE only as bar charts and grades, and times inference on a Colab CPU, so every answer
compares rankings and ratios within our grid, never our pixels against theirs. A gap counts only when it is
larger than the seed spread of the cells it compares (max − min over seeds, where a cell has several) and
than ALIKE.
"""
from __future__ import annotations

from statistics import mean

from tracking import report_data as rd

TIME_NOISE = 0.20  # within one network, columns whose inference times differ by less are timing noise
ALIKE = 0.05  # px: no smaller gap counts, whatever the seeds (a cell of one seed shows no spread)


def _noise(grid, key, *cells) -> float | None:
    """The widest seed spread of the cells compared; None when none of them has more than one seed."""
    spreads = [s for c in cells if c in grid and (s := rd.spread(grid[c], key)) is not None]
    return max(spreads) if spreads else None


def _bar(noise) -> float:
    """The gap a comparison must exceed: the seed spread, and at least ALIKE (one seed has no spread to show)."""
    return max(noise or 0.0, ALIKE)


def _spread_text(noise) -> str:
    return f"seed spread {noise:.3f}" if noise is not None else "one seed: no spread"


def augmentation_vs_imputation(grid, key) -> tuple[str, str]:
    """(a) augmentation gives lower RMSE than imputation."""
    rows = []
    for m in rd.grid_models(grid):
        imputed = [(grid[(m, c)][key], c) for c in ("ffill", "knn") if (m, c) in grid]
        if (m, "augment") not in grid or not imputed:
            continue
        best, col = min(imputed)
        aug = grid[(m, "augment")][key]
        rows.append((m, aug, best, col, _noise(grid, key, (m, "augment"), (m, col))))
    if not rows:
        return "cannot be tested here", "no model has both the augment column and an imputation column"
    clear = [r for r in rows if r[2] - r[1] > _bar(r[4])]
    worse = [r for r in rows if r[1] - r[2] > _bar(r[4])]
    n, rest = len(rows), len(rows) - len(clear) - len(worse)
    within = f"; {rest} within the seed spread" if rest else ""
    verdict = ("holds" if len(clear) == n else "does not hold: the reverse for every model" if len(worse) == n
               else "inconclusive: every gap is within the seed spread" if not clear and not worse
               else f"does not hold: the reverse for {len(worse)} of {n} models{within}" if not clear
               else f"holds for {len(clear)} of {n} models{within}" if not worse
               else f"mixed: holds for {len(clear)}, the reverse for {len(worse)} of {n} models{within}")
    detail = "; ".join(f"{m}: augment {a:.3f} vs {c} {b:.3f} px (margin {b - a:+.3f}, {_spread_text(s)})"
                       for m, a, b, c, s in rows)
    return verdict, detail


def inference_unchanged(grid) -> tuple[str, str]:
    """(b) augmentation and imputation do not change inference time.

    Within a row the network is the same (checked: one parameter count), so a difference between its columns can
    only be timing noise; its size is known from the cells' own seeds (one network, one column, timed twice)."""
    rows = []
    for m in rd.grid_models(grid):
        cells = rd.row_cells(grid, m)
        if len(cells) < 2:
            continue
        times = [c["inference_s_per_100"] for c in cells]
        between = (max(times) - min(times)) / mean(times)
        twice = [rd.spread(c, "inference_s_per_100") / c["inference_s_per_100"] for c in cells
                 if rd.spread(c, "inference_s_per_100") is not None]
        same_net = len({int(s["params"]) for c in cells for s in c["seeds"]}) == 1
        rows.append((m, between, max(twice) if twice else None, same_net, mean(times)))
    if not rows:
        return "cannot be tested here", "no model has more than one column"
    noisy = [r for r in rows if r[1] > max(TIME_NOISE, r[2] or 0.0)]
    verdict = "holds" if all(r[3] for r in rows) and not noisy else "does not hold"
    ratio = max(r[4] for r in rows) / min(r[4] for r in rows)
    detail = ("range of inference times across a row's columns (the same network: "
              + ("one parameter count per row" if all(r[3] for r in rows) else "NOT one parameter count per row")
              + "), beside the range between two seeds of one cell (the same network and column timed twice, so "
              "pure timing noise): " + ", ".join(f"{m} {b:.0%}" + (f" vs {t:.0%}" if t is not None else "")
                                                 for m, b, t, _, _ in rows)
              + f"; between the fastest and slowest rows {ratio:.1f}×")
    return verdict, detail


def hand_vs_tuned(grid, key, curves) -> tuple[str, str]:
    """(c) the hand-tuned CNN performs like the tuned one, infers faster and trains more smoothly."""
    cols = [c for c in rd.grid_columns(grid) if ("manual", c) in grid and ("kt-tuned", c) in grid]
    if not cols:
        return "cannot be tested here", "the grid lacks the manual or the kt-tuned row"
    gaps = [(c, grid[("manual", c)][key] - grid[("kt-tuned", c)][key],
             _noise(grid, key, ("manual", c), ("kt-tuned", c))) for c in cols]
    alike = [g for g in gaps if abs(g[1]) <= _bar(g[2])]
    manual_s = mean(grid[("manual", c)]["inference_s_per_100"] for c in cols)
    tuned_s = mean(grid[("kt-tuned", c)]["inference_s_per_100"] for c in cols)
    rough = {m: [r for c in cols for curve in curves.get((m, c), []) if (r := rd.roughness(curve)) is not None]
             for m in ("manual", "kt-tuned")}
    smooth = {m: mean(v) for m, v in rough.items() if v}
    parts = {"performs like": len(alike) * 2 >= len(gaps), "infers faster": manual_s < tuned_s * (1 - TIME_NOISE),
             "trains more smoothly": len(smooth) == 2 and smooth["manual"] < smooth["kt-tuned"]}
    held = [k for k, ok in parts.items() if ok]
    verdict = ("holds" if len(held) == 3 else "does not hold" if not held
               else "partly holds (" + ", ".join(f"{k}: {'yes' if ok else 'no'}" for k, ok in parts.items()) + ")")
    p_manual, p_tuned = grid[("manual", cols[0])]["params"], grid[("kt-tuned", cols[0])]["params"]
    detail = (f"manual − kt-tuned RMSE per column: "
              + ", ".join(f"{c} {g:+.3f} px ({_spread_text(s)})" for c, g, s in gaps)
              + f"; alike (within the seed spread, and at least {ALIKE} px) in {len(alike)} of {len(gaps)}. Inference "
              f"{manual_s:.4f} vs {tuned_s:.4f} s/100 ({tuned_s / manual_s:.2f}×; faster means by more than "
              f"{TIME_NOISE:.0%}), params {int(p_manual):,} vs {int(p_tuned):,}. Roughness of the validation curves "
              "up to their best epoch (upticks over the descent, mean over runs; lower is smoother): "
              + (", ".join(f"{m} {v:.2f}" for m, v in smooth.items()) or "no curves"))
    return verdict, detail


def mobilenet(grid, key) -> tuple[str, str]:
    """(d) MobileNetV2: lowest RMSE and fastest inference; fine-tuned transfer models on augmented data 4–5×
    better than frozen ones."""
    rows = rd.grid_models(grid)
    mobile = [m for m in rows if m.startswith("mobilenetv2")]
    if not mobile:
        return "cannot be tested here", "the grid has no MobileNetV2 row"
    best_of = {m: min(c[key] for c in rd.row_cells(grid, m)) for m in rows}
    speed = {m: mean(c["inference_s_per_100"] for c in rd.row_cells(grid, m)) for m in rows}
    lowest, fastest = min(best_of, key=best_of.get), min(speed, key=speed.get)
    ratios = [(m.split("-")[0], grid[(f"{m.split('-')[0]}-frozen", "augment")][key] / grid[(m, "augment")][key])
              for m in rows if m.endswith("-all") and (m, "augment") in grid
              and (f"{m.split('-')[0]}-frozen", "augment") in grid]
    caps = sorted({int(float(s["max_epochs"])) for m in mobile for c in rd.row_cells(grid, m)
                   for s in c["seeds"] if s.get("max_epochs")})
    fast = "holds" if fastest in mobile else "does not hold"
    detail = (f"fastest inference: {fastest} ({speed[fastest]:.4f} s/100; MobileNetV2 "
              f"{min(speed[m] for m in mobile):.4f}), so that part {fast}. Lowest RMSE: {lowest} "
              f"({best_of[lowest]:.3f} px) against MobileNetV2's best {min(best_of[m] for m in mobile):.3f} px. "
              "Frozen / fine-tuned RMSE on the augment column: "
              + (", ".join(f"{m} {r:.2f}×" for m, r in ratios) or "not run")
              + f". Without ImageNet weights (not downloadable here) and at {'/'.join(map(str, caps)) or '?'} epochs, "
              "a frozen backbone is a random feature extractor and no transfer happens, so the RMSE parts test "
              "random initialisation, not the paper's transfer learning")
    return f"cannot be tested here for RMSE; fastest inference {fast}", detail


def answers(grid, curves) -> list[tuple[str, str, str]]:
    """[(claim, verdict, figures)] for the paper's conclusions (a)–(d), on test RMSE where every cell has one."""
    key = rd.score_key(grid)
    return [("(a) augmentation gives lower RMSE than imputation", *augmentation_vs_imputation(grid, key)),
            ("(b) augmentation and imputation do not change inference time", *inference_unchanged(grid)),
            ("(c) the hand-tuned CNN performs like the Keras-tuned one, infers faster and trains more smoothly",
             *hand_vs_tuned(grid, key, curves)),
            ("(d) MobileNetV2 gives the lowest RMSE and the fastest inference; fine-tuned transfer models on "
             "augmented data are 4–5× better than frozen ones", *mobilenet(grid, key))]
